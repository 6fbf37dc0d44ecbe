//! What each fuzz target checks. The libFuzzer binaries in `fuzz/fuzz_targets/` call these functions, and so does
//! CI: `tests/regressions.rs` replays the seed corpora and every saved crash (`fuzz/regressions/<target>/`)
//! through them, so a fixed crash stays fixed.
//!
//! Every function takes arbitrary bytes, returns whether they were accepted as a valid input of their kind (the
//! seed test requires that of every seed, so seeds reach the deep paths), and panics only on a bug: a panic inside Skein's parsers (reachable from
//! the network), or a broken invariant checked here (an accepted request whose spans are not all accounted for, a
//! block that does not decode to what was encoded, a routed agent payload that is not valid OTLP).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message;
use skein_codec::SharedDict;
use skein_model::otlp::{Limits, convert, decode_export};
use skein_model::{SpanId, TraceId};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_trace as pt;
use skein_query::params;

/// Spans in a decoded request.
fn span_count(resource_spans: &[pt::ResourceSpans]) -> u64 {
    resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum()
}

/// Validation and storage of decoded OTLP: every span is either accepted or counted as rejected, and accepted
/// spans survive the trace-block codec unchanged (both block versions: plain, and with a shared dictionary).
fn validate_and_store(resource_spans: Vec<pt::ResourceSpans>) {
    let total = span_count(&resource_spans);
    let converted = convert(resource_spans, &Limits::default());
    assert_eq!(converted.spans.len() as u64 + converted.rejected_count(), total, "spans unaccounted for");
    // A block holds one trace (the writer's unit), so round-trip each trace's spans.
    let mut traces: std::collections::BTreeMap<TraceId, Vec<skein_model::Span>> = Default::default();
    for span in converted.spans {
        traces.entry(span.trace_id).or_default().push(span);
    }
    for spans in traces.values() {
        let block = skein_codec::encode(spans).expect("accepted spans encode");
        assert_eq!(&skein_codec::decode(&block).expect("own block decodes"), spans, "block round trip");
        let mut dict = SharedDict::with_id(7);
        let block = skein_codec::encode_with_dict(spans, &mut dict).expect("accepted spans encode with a dictionary");
        assert_eq!(&skein_codec::decode_with(&block, &dict).expect("own v2 block decodes"), spans, "v2 round trip");
    }
}

/// The agent's request processing: the decoded path (redaction, head sampling) and the wire path (enrichment,
/// head sampling, routing over three collectors) the agent takes without redaction rules.
fn agent(data: &[u8], decoded: Option<&ExportTraceServiceRequest>) {
    static PROCESSOR: OnceLock<skein_agent::process::Processor> = OnceLock::new();
    let processor = PROCESSOR.get_or_init(|| {
        let config = skein_agent::config::AgentConfig::parse(
            "redaction:\n- {key: '^(password|token)$', action: mask}\n- {key: card, action: hash}\n\
             - {key: '^secret', action: drop}\nhead_sampling: {sampling_percentage: 50}\n",
        )
        .expect("fixed agent config");
        let env = |var: &str| (var == "SKEIN_POD_NAME" || var == "POD_NAME").then(|| "web-7d4f9-abcde".to_string());
        skein_agent::process::Processor::new(&config, env).expect("fixed redaction rules")
    });
    let raw = Bytes::copy_from_slice(data);
    let wire = processor.process_wire(&raw, &[11, 22, 33]);
    if let Some(request) = decoded {
        let outcome = wire.expect("the wire path accepts what prost decodes");
        assert_eq!(outcome.received, span_count(&request.resource_spans), "wire span count");
        let mut routed = 0u64;
        for r in &outcome.routed {
            let payload = ExportTraceServiceRequest::decode(r.payload.clone()).expect("routed payload is OTLP");
            assert_eq!(span_count(&payload.resource_spans), u64::from(r.spans), "routed span count");
            routed += u64::from(r.spans);
        }
        assert_eq!(routed + outcome.sampled_out, outcome.received, "every span routed or sampled out");
        let mut copy = request.clone();
        let processed = processor.process(&mut copy);
        assert_eq!(span_count(&copy.resource_spans) + processed.sampled_out, outcome.received, "decoded path count");
    }
}

/// OTLP protobuf (`ExportTraceServiceRequest`, the gRPC and `application/x-protobuf` body): the collector's decode
/// (prost's, and the direct [`decode_export`], which must agree) and validation, and the agent's wire and decoded
/// paths.
pub fn otlp_protobuf(data: &[u8]) -> bool {
    let decoded = ExportTraceServiceRequest::decode(data).ok();
    // The collector's gRPC receiver decodes straight from the bytes: it must accept exactly what prost accepts
    // and make the same spans of it.
    let direct = decode_export(data, &Limits::default(), &skein_model::otlp::Processes::new(1 << 20));
    match (&decoded, direct) {
        (Some(request), Ok(direct)) => {
            let reference = convert(request.resource_spans.clone(), &Limits::default());
            assert_eq!(direct.spans, reference.spans, "decode_export spans");
            assert_eq!(direct.rejected, reference.rejected, "decode_export rejections");
        }
        (None, Err(_)) => {}
        (decoded, direct) => panic!("prost accepted: {}, decode_export: {direct:?}", decoded.is_some()),
    }
    agent(data, decoded.as_ref());
    decoded.map(|request| validate_and_store(request.resource_spans)).is_some()
}

/// OTLP/HTTP request bodies as the receiver reads them: the first byte picks the content type and encoding
/// (JSON or protobuf; identity, gzip, deflate or zstd), the rest is the body.
pub fn otlp_json(data: &[u8]) -> bool {
    let Some((&selector, body)) = data.split_first() else { return false };
    let content_type = if selector & 0x10 == 0 { "application/json" } else { "application/x-protobuf" };
    let encoding = ["identity", "gzip", "deflate", "zstd"][usize::from(selector & 3)];
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(content_type));
    headers.insert(axum::http::header::CONTENT_ENCODING, axum::http::HeaderValue::from_static(encoding));
    let decoded = skein_proto::otlp_http::decode_request(&headers, body);
    decoded.map(|(_, request, _)| validate_and_store(request.resource_spans)).is_ok()
}

/// Zipkin v2 JSON (`POST /api/v2/spans`), then validation; also the dataset readers' format detection (Jaeger
/// JSON, Elasticsearch documents, OTLP JSON files, Nezha CSV) that `skein-replay` runs on files.
pub fn zipkin_json(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let zipkin = skein_datasets::formats::read_str(text, Some(skein_datasets::formats::Format::Zipkin));
    let accepted = zipkin.map(validate_and_store).is_ok();
    if let Ok(resource_spans) = skein_datasets::formats::read_str(text, None) {
        validate_and_store(resource_spans);
    }
    accepted
}

/// Stored trace blocks (versions 1, 2 and 3, with and without a shared dictionary; packs also opened and read
/// one trace at a time, as outlines, kept rows and whole traces) and dictionary entries: corrupt bytes decode to
/// an error, never a panic, overflow or runaway allocation.
pub fn decode_block(data: &[u8]) -> bool {
    let plain = skein_codec::decode(data).is_ok();
    // The same bytes as stored dictionary entries (split at 0xff), which readers rebuild before decoding blocks.
    let _ = skein_codec::decode_dictionary(data.split(|&b| b == 0xff));
    // A dictionary with a few entries under the ID the block names, so version-2 string references resolve.
    if let Ok(Some((id, _))) = skein_codec::dictionary_of(data) {
        let mut dict = SharedDict::with_id(id);
        let _ = skein_codec::encode_with_dict(std::slice::from_ref(&dictionary_span()), &mut dict);
        // A pack opened for reading one trace at a time parses the same bytes other ways: row outlines (read
        // first, so they locate each trace themselves), kept rows, whole traces.
        if let Ok(mut open) = skein_codec::OpenPack::open(data, &dict) {
            for ordinal in 0..open.traces().len() {
                let _ = open.outline(ordinal);
                let _ = open.spans_where(ordinal, true, &|_, start, end| end >= start);
                let _ = open.trace(ordinal, true);
            }
        }
        return skein_codec::decode_with(data, &dict).is_ok();
    }
    plain
}

/// The span whose strings fill the shared dictionary [`decode_block`] decodes version-2 blocks with.
fn dictionary_span() -> skein_model::Span {
    skein_model::Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "op", skein_model::service_resource("svc"))
}

/// Jaeger query parameters (`/api/traces?…`, `/api/dependencies?…`, api_v3 `query.*`) as the query service
/// parses them; accepted searches keep their documented bounds.
pub fn jaeger_query(data: &[u8]) -> bool {
    let Ok(raw) = std::str::from_utf8(data) else { return false };
    let p = params::pairs(Some(raw));
    let now = 1_700_000_000_000_000_000;
    let mut accepted = false;
    if let Ok(q) = params::trace_query(&p, now) {
        assert!(!q.service.is_empty(), "a search needs a service");
        assert!(q.limit >= 1 && q.limit <= params::limit(usize::MAX), "limit {} out of bounds", q.limit);
        accepted = true;
    }
    if let Ok(q) = params::v3_trace_query(&p) {
        assert!(q.limit >= 1 && q.limit <= params::limit(usize::MAX), "v3 limit {} out of bounds", q.limit);
        accepted = true;
    }
    if let Ok((end, lookback)) = params::dependencies(&p, now) {
        let _ = end.checked_sub(lookback);
        accepted = true;
    }
    for (key, value) in &p {
        let _ = skein_config::parse_go_duration(value);
        let _ = params::json_tags(value);
        let _ = params::parse_rfc3339(key, value);
    }
    accepted
}

/// W3C `traceparent` and B3 single-header values, and plain hex IDs, as trace-ID lookups parse them
/// ([`TraceId::from_lookup`]); a parsed ID prints as 32 hex digits that parse back to itself, and a well-formed
/// `traceparent` built from the input always parses to its trace ID.
pub fn trace_context(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(id) = TraceId::from_lookup(text)
    {
        assert_eq!(TraceId::from_lookup(&id.to_hex()), Ok(id), "hex round trip");
        accepted = true;
    }
    let _ = SpanId::from_hex(&String::from_utf8_lossy(data));
    if data.len() >= 25 {
        let (trace, span, flags) = (&data[..16], &data[16..24], data[24]);
        let header = format!("00-{}-{}-{flags:02x}", hex(trace), hex(span));
        let valid = trace.iter().any(|&b| b != 0) && span.iter().any(|&b| b != 0);
        let parsed = TraceId::from_lookup(&header);
        assert_eq!(parsed.is_ok(), valid, "traceparent {header}: {parsed:?}");
        if let Ok(id) = parsed {
            assert_eq!(&id.0[..], trace, "traceparent trace ID");
        }
        let b3 = format!("{}-{}-1", hex(trace), hex(span));
        assert_eq!(TraceId::from_lookup(&b3).is_ok(), valid, "b3 {b3}");
        accepted |= valid;
    }
    accepted
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operator's admission webhook over HTTP (`POST /mutate-pods`, `POST /validate-tracingpipelines`): the
/// first byte picks the path, the rest is the body. A body that is not an `AdmissionReview` gets 400; a review
/// always gets 200 with a response for the same UID.
pub fn admission_review(data: &[u8]) -> bool {
    use tower::ServiceExt as _;
    static HARNESS: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    let (runtime, router) = HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let router = runtime.block_on(async { skein_operator::webhook::router(webhook()) });
        (runtime, router)
    });
    let Some((&selector, body)) = data.split_first() else { return false };
    let path = if selector & 1 == 0 { "/mutate-pods" } else { "/validate-tracingpipelines" };
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    let response = runtime.block_on(router.clone().oneshot(request)).expect("infallible router");
    let status = response.status();
    assert!(status == 200 || status == 400, "{path}: unexpected status {status}");
    if status == 200 {
        let bytes = runtime.block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).expect("body");
        let review: serde_json::Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
        // serde skips unknown fields without checking their strings' UTF-8, so the server may accept bytes that
        // do not parse as a whole JSON value: read the request's UID from a lossy copy then.
        let sent: serde_json::Value = serde_json::from_slice(body)
            .or_else(|_| serde_json::from_str(&String::from_utf8_lossy(body)))
            .expect("a 200 answered a JSON review");
        assert_eq!(review["response"]["uid"], sent["request"]["uid"], "answer for another request");
        // Accepted: a patch (injection) or an allowed pipeline.
        return review["response"]["patch"].is_string()
            || (path.ends_with("tracingpipelines") && review["response"]["allowed"] == true);
    }
    false
}

/// A webhook whose caches hold one accepted pipeline (`tracing/prod`) and an injection-enabled namespace.
fn webhook() -> Arc<skein_operator::webhook::Webhook> {
    use skein_operator::crd::TracingPipeline;
    let tp: TracingPipeline = serde_json::from_value(serde_json::json!({
        "apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline",
        "metadata": {"name": "prod", "namespace": "tracing", "uid": "uid-prod", "generation": 1},
        "spec": {"sampling": {"head": {"default_strategy": {"type": "probabilistic", "param": 0.5}}},
                 "redaction": [{"key": "^password$", "action": "mask"}]},
        "status": {"conditions": [{"type": "ConfigurationGenerated", "status": "True", "reason": "Generated",
                                   "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z",
                                   "observedGeneration": 1}]}
    }))
    .expect("fixed pipeline");
    let ns = serde_json::from_value(serde_json::json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "tracing", "labels": {"skein.dev/injection": "enabled"}}
    }))
    .expect("fixed namespace");
    let (pipelines, namespaces) = skein_operator::webhook::fixed_caches(vec![tp], vec![ns]);
    // Nothing reads the Events here: each one is dropped and counted.
    let metrics = Arc::new(skein_operator::metrics::Metrics::default());
    let (tx, _) = tokio::sync::mpsc::channel(16);
    Arc::new(skein_operator::webhook::Webhook {
        pipelines,
        namespaces,
        defaults: skein_operator::resources::Defaults::default(),
        native_sidecar: true,
        metrics: metrics.clone(),
        events: skein_operator::events::Queue::to_channel(tx, metrics),
    })
}

/// A fuzz target's check: arbitrary bytes in, whether they were a valid input of the target's kind out.
pub type Check = fn(&[u8]) -> bool;

/// The fuzz targets by name, for the regression test and the seed writer.
pub const TARGETS: &[(&str, Check)] = &[
    ("admission_review", admission_review),
    ("decode_block", decode_block),
    ("jaeger_query", jaeger_query),
    ("otlp_json", otlp_json),
    ("otlp_protobuf", otlp_protobuf),
    ("trace_context", trace_context),
    ("zipkin_json", zipkin_json),
];

/// Valid inputs for each target (`(target, input)`), the starting corpus for fuzzing and the inputs that prove
/// the checks hold on real requests: synthetic traces as OTLP protobuf and JSON (plain and gzip-encoded), Zipkin
/// v2 JSON, stored blocks, Jaeger searches, trace-context headers and admission reviews.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use skein_proto::otlp_http::{Format, encode};
    let mut generator = skein_datasets::synthetic::Generator::new(7, 1_700_000_000_000_000_000, 100);
    let spans: Vec<_> = (0..3).flat_map(|_| generator.next_trace()).collect();
    let request = ExportTraceServiceRequest { resource_spans: skein_model::otlp::to_otlp(&spans) };
    let protobuf = request.encode_to_vec();
    let json = encode(Format::Json, &request);
    let first: Vec<_> = spans.iter().filter(|s| s.trace_id == spans[0].trace_id).cloned().collect();
    let mut out =
        vec![("otlp_protobuf", protobuf.clone()), ("decode_block", skein_codec::encode(&first).expect("encode"))];
    // A version-2 block against the dictionary decode_block rebuilds: the same span encoded twice, so the second
    // block refers to the entries the first added.
    let mut dict = SharedDict::with_id(3);
    let _ = skein_codec::encode_with_dict(std::slice::from_ref(&dictionary_span()), &mut dict);
    out.push(("decode_block", skein_codec::encode_with_dict(&[dictionary_span()], &mut dict).expect("encode v2")));
    out.push(("otlp_json", [&[0u8][..], &json].concat()));
    out.push(("otlp_json", [&[0x10u8][..], &protobuf].concat()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &json).expect("gzip");
    out.push(("otlp_json", [vec![1u8], gz.finish().expect("gzip")].concat()));
    let zipkin = serde_json::json!([
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "00f067aa0ba902b7", "name": "get /api",
         "kind": "SERVER", "timestamp": 1_700_000_000_000_000u64, "duration": 1500,
         "localEndpoint": {"serviceName": "frontend", "ipv4": "10.0.0.1"},
         "tags": {"http.method": "GET", "error": "timeout"},
         "annotations": [{"timestamp": 1_700_000_000_000_100u64, "value": "ws"}]},
        {"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "id": "e457b5a2e4d86bd1", "parentId": "00f067aa0ba902b7",
         "name": "select", "kind": "CLIENT", "timestamp": 1_700_000_000_000_200u64, "duration": 700,
         "localEndpoint": {"serviceName": "frontend"}, "remoteEndpoint": {"serviceName": "mysql", "port": 3306}}
    ]);
    out.push(("zipkin_json", zipkin.to_string().into_bytes()));
    for q in [
        "service=frontend&operation=HTTP%20GET&tags=%7B%22error%22%3A%22true%22%7D&limit=20&lookback=2h",
        "service=driver&start=1700000000000000&end=1700000360000000&minDuration=1.5ms&maxDuration=2s",
        "query.service_name=redis&query.start_time_min=2026-01-01T00:00:00Z&query.start_time_max=2026-01-02T00:00:00.5Z&query.num_traces=5",
        "endTs=1700000000000&lookback=86400000",
    ] {
        out.push(("jaeger_query", q.as_bytes().to_vec()));
    }
    for h in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "4bf92f3577b34da6a3ce929d0e0e4736-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        "a3ce929d0e0e4736-e457b5a2e4d86bd1",
        "4376effce3c2d72d",
    ] {
        out.push(("trace_context", h.as_bytes().to_vec()));
    }
    let mut traceparent = vec![0x4b; 16];
    traceparent.extend([0xe4; 8]);
    traceparent.push(1);
    out.push(("trace_context", traceparent));
    for (selector, review) in admission_reviews() {
        out.push(("admission_review", [vec![selector], review.to_string().into_bytes()].concat()));
    }
    out
}

/// An `admission.k8s.io/v1` review as the API server sends it: a labelled pod to inject (selector 0) and a
/// pipeline to validate (selector 1).
fn admission_reviews() -> Vec<(u8, serde_json::Value)> {
    let review = |kind: (&str, &str, &str), resource: &str, object: serde_json::Value| {
        serde_json::json!({
            "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
                "resource": {"group": kind.0, "version": kind.1, "resource": resource},
                "namespace": "tracing", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object, "dryRun": false
            }
        })
    };
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-5f7d8c9b4-", "namespace": "tracing",
                     "annotations": {"skein.dev/inject": "true"}, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                                 "env": [{"name": "OTEL_SERVICE_NAME", "value": "web"}]}]}
    });
    let pipeline = serde_json::json!({
        "apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline",
        "metadata": {"name": "prod", "namespace": "tracing"},
        "spec": {"sampling": {"head": {"default_strategy": {"type": "probabilistic", "param": 0.25}}}}
    });
    vec![
        (0, review(("", "v1", "Pod"), "pods", pod)),
        (1, review(("skein.dev", "v1alpha1", "TracingPipeline"), "tracingpipelines", pipeline)),
    ]
}
