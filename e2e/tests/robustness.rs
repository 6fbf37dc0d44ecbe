//! Bad input and restarts: malformed protobuf and JSON get 400 / `INVALID_ARGUMENT` with messages, a request
//! mixing valid and zero-ID spans stores the valid ones and reports the rejected count in `partial_success`,
//! and SIGTERM right after a replay loses nothing across a restart on the same data directory.

use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};
use skein_e2e::{AllInOne, hotrod_es_dump, trace_data};
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use skein_proto::otlp_common::{AnyValue, KeyValue, any_value};
use skein_proto::otlp_resource::Resource;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use skein_proto::trace_service_client::TraceServiceClient;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use skein_testkit::now_nanos;

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("mixed".into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

fn span(trace: [u8; 16], id: u8, name: &str) -> Span {
    let t = now_nanos();
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: t,
        end_time_unix_nano: t + 1_000_000,
        ..Default::default()
    }
}

/// Sends raw bytes as the gRPC request message.
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[test]
fn bad_input_is_rejected_with_clear_errors_and_valid_spans_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 200);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let endpoint = format!("http://{}", s.otlp_grpc);

    // gRPC: a mixed request keeps the valid span and reports the rest in partial_success.
    let trace = [7u8; 16];
    let mixed = request(vec![
        span(trace, 1, "valid"),
        span([0; 16], 2, "zero trace id"),
        span(trace, 0, "zero span id"),
        span(trace, 3, ""),
    ]);
    let resp = rt
        .block_on(async {
            let mut client = TraceServiceClient::connect(endpoint.clone()).await.expect("connect");
            client.export(mixed).await
        })
        .expect("export")
        .into_inner();
    let partial = resp.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 3);
    assert!(partial.error_message.contains("trace ID must be 16 bytes"), "{}", partial.error_message);
    assert!(partial.error_message.contains("span name must not be empty"), "{}", partial.error_message);

    // gRPC: garbage bytes → INVALID_ARGUMENT with prost's reason.
    let status = rt
        .block_on(async {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone()).expect("uri").connect().await?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string())).expect("ready");
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            );
            Ok::<_, tonic::transport::Error>(
                grpc.unary(tonic::Request::new(vec![0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]), path, RawCodec).await,
            )
        })
        .expect("transport")
        .expect_err("malformed protobuf must fail");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed OTLP"), "{}", status.message());

    // HTTP protobuf: garbage → 400 with a google.rpc.Status body.
    let http = &s.http;
    let url = format!("http://{}/v1/traces", s.otlp_http);
    let r = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(vec![0x0a, 0xff, 0xff])
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let body = r.bytes().expect("body");
    let msg = String::from_utf8_lossy(&body);
    assert!(msg.contains("malformed OTLP ExportTraceServiceRequest protobuf"), "{msg}");

    // HTTP JSON: syntax error and a bad hex ID → 400 with messages.
    for (bad, expect) in [
        (r#"{"resourceSpans": ["#, "malformed OTLP JSON"),
        (
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"01","name":"x"}]}]}]}"#,
            "invalid character 'z'",
        ),
    ] {
        let r = http.post(&url).header("content-type", "application/json").body(bad).send().expect("post");
        assert_eq!(r.status().as_u16(), 400, "{bad}");
        let v: Value = r.json().expect("JSON error body");
        assert_eq!(v["code"], 3);
        assert!(v["message"].as_str().unwrap_or("").contains(expect), "{v}");
    }
    // Unsupported media type and encoding.
    let r = http.post(&url).header("content-type", "text/plain").body("hi").send().expect("post");
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);

    // HTTP JSON with gzip, int64 as strings, enum ints, and a zero span ID mixed in.
    let t = now_nanos();
    let json_req = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"scope": {"name": "s"}, "spans": [
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "ok",
             "kind": 2, "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 5_000_000).to_string(),
             "attributes": [{"key": "n", "value": {"intValue": "42"}}], "status": {"code": 2}},
            {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "0000000000000000", "name": "bad",
             "startTimeUnixNano": t, "endTimeUnixNano": t}]}]}]});
    let mut gz = flate2_gzip(json_req.to_string().as_bytes());
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(std::mem::take(&mut gz))
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().expect("json");
    assert_eq!(v["partialSuccess"]["rejectedSpans"], 1, "{v}");

    s.wait_until_written();
    let (status, body) = s.get(&format!("/api/traces/{}", hex(&trace)));
    assert_eq!(status, 200, "{body}");
    let names: Vec<&Value> =
        body["data"][0]["spans"].as_array().expect("spans").iter().map(|s| &s["operationName"]).collect();
    assert_eq!(names, ["valid"]);
    let (_, body) = s.get("/api/traces/0af7651916cd43dd8448eb211c80319c");
    let sp = &body["data"][0]["spans"][0];
    assert_eq!(sp["operationName"], "ok");
    assert!(sp["tags"].as_array().expect("tags").iter().any(|t| t == &json!({"key":"n","type":"int64","value":42})));
    assert!(sp["tags"].as_array().expect("tags").iter().any(|t| t["key"] == "error"));

    let metrics = s.metrics();
    assert!(metrics.contains(r#"skein_spans_rejected_total{reason="invalid_span_id"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"skein_requests_rejected_total{reason="malformed"}"#), "{metrics}");
    drop(s);
    drop(rt);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn flate2_gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn sigterm_after_replay_then_restart_keeps_every_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let es = hotrod_es_dump();
    let otlp = trace_data().join("jaeger-otlp-hotrod-oteldemo/n_plus_one_full_serial.json");
    // A long idle time: nothing is written before SIGTERM, so shutdown must write every held trace.
    let s = AllInOne::start(dir.path(), 600_000);
    let summary = s.replay(&[es, otlp]);
    assert_eq!(summary["accepted"], 419);
    let status = s.terminate();
    assert!(status.success(), "exit status {status:?}");

    let s = AllInOne::start(dir.path(), 200);
    let (_, services) = s.get("/api/services");
    assert_eq!(services["data"], json!(["customer", "driver", "frontend", "mysql", "redis", "redis-manual", "route"]),);
    let (_, found) = s.get("/api/traces?service=frontend&start=0&limit=100");
    let traces = found["data"].as_array().expect("traces");
    assert_eq!(traces.len(), 15, "14 ES HotROD traces + 1 OTLP trace");
    let spans: usize = traces.iter().map(|t| t["spans"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(spans, 419);
    for t in traces {
        let id = t["traceID"].as_str().expect("id");
        let (status, _) = s.get(&format!("/api/traces/{id}"));
        assert_eq!(status, 200, "trace {id} after restart");
    }
    s.wait_until("metrics served", Duration::from_secs(5), || s.metrics().contains("skein_live_traces"));
}

#[test]
fn written_traces_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 100);
    s.load_hotrod();
    drop(s); // SIGKILL: no shutdown path runs; only what the store made durable survives.

    let s = AllInOne::start(dir.path(), 100);
    let (_, found) = s.get("/api/traces?service=frontend&start=0&limit=100");
    let traces = found["data"].as_array().expect("traces");
    assert_eq!(traces.len(), 14);
    let spans: usize = traces.iter().map(|t| t["spans"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(spans, 379);
}
