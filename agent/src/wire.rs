//! Wire-level processing of an encoded OTLP `ExportTraceServiceRequest`: Kubernetes enrichment, head sampling and
//! routing by trace ID without decoding spans into structs.
//!
//! Only the envelope is walked (request → `ResourceSpans` → `ScopeSpans` → `Span` fields as tag/length pairs);
//! spans are copied as byte ranges, never decoded, so the cost is a scan and one copy instead of an allocation
//! per attribute. Protobuf encoding: <https://protobuf.dev/programming-guides/encoding/>; message layout:
//! `opentelemetry/proto/trace/v1/trace.proto` and `collector/trace/v1/trace_service.proto` (field numbers below).
//! Appending `KeyValue` entries at the end of a `Resource` is valid protobuf: repeated fields may be interleaved.

use bytes::Bytes;
use skein_proto::wire::{Fields, WireValue as Value};

use crate::route::{choose, trace_hash};

/// The envelope is not valid protobuf.
pub use skein_proto::wire::WireError;

/// OTLP `STATUS_CODE_ERROR`.
pub const STATUS_ERROR: i32 = 2;

/// Whether a span has error status.
pub fn is_error(span: &skein_proto::otlp_trace::Span) -> bool {
    span.status.as_ref().is_some_and(|s| s.code == STATUS_ERROR)
}

fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Size of a length-delimited field with a one-byte tag (field numbers below 16).
fn len_field(n: usize) -> usize {
    1 + varint_len(n) + n
}

fn put_len_field(out: &mut Vec<u8>, field: u8, n: usize) {
    out.push((field << 3) | 2);
    put_varint(out, n);
}

/// One `ScopeSpans` of one `ResourceSpans`, as routed to one destination.
struct ScopeOut<'a> {
    /// Every field but the spans (`scope`, `schema_url`), raw.
    other: Vec<&'a [u8]>,
    spans: Vec<&'a [u8]>,
}

impl ScopeOut<'_> {
    fn size(&self) -> usize {
        self.other.iter().map(|f| f.len()).sum::<usize>() + self.spans.iter().map(|s| len_field(s.len())).sum::<usize>()
    }
}

/// One `ResourceSpans` as routed to one destination.
struct ResourceOut<'a> {
    rs: usize,
    scopes: Vec<(usize, ScopeOut<'a>)>,
}

/// The parts of one input `ResourceSpans` shared by every destination.
struct ResourceIn<'a> {
    /// Contents of the `resource` field(s), then the enrichment attributes to append.
    resource: Vec<&'a [u8]>,
    has_resource: bool,
    /// Fields other than `resource` and `scope_spans` (`schema_url`), raw.
    other: Vec<&'a [u8]>,
}

impl ResourceIn<'_> {
    fn resource_size(&self) -> usize {
        self.resource.iter().map(|r| r.len()).sum()
    }
}

/// One destination's share of a request.
#[derive(Debug, PartialEq, Eq)]
pub struct Routed {
    /// Index into the `keys` given to [`process`].
    pub dest: usize,
    /// The encoded `ExportTraceServiceRequest`.
    pub payload: Bytes,
    /// Spans in it.
    pub spans: u32,
    /// Of those, spans with error status.
    pub error_spans: u32,
}

/// What [`process`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// One request per destination that got spans.
    pub routed: Vec<Routed>,
    /// Spans in the input.
    pub received: u64,
    /// Spans removed by head sampling.
    pub sampled_out: u64,
}

/// A head-sampling test on a trace ID.
pub type KeepTrace<'a> = dyn Fn(&[u8]) -> bool + 'a;

/// What to do to each request: attributes to add to every resource (each `(key, encoded Resource.attributes
/// field)`; added when the key is absent) and a head-sampling test on trace IDs.
pub struct Plan<'p> {
    /// Enrichment attributes.
    pub enrich: &'p [(String, Vec<u8>)],
    /// Whether a trace ID is kept (`None`: keep all).
    pub keep: Option<&'p KeepTrace<'p>>,
}

fn span_facts(span: &[u8], base: usize) -> Result<(&[u8], bool), WireError> {
    let mut fields = Fields::new(span, base);
    let (mut trace_id, mut error): (&[u8], bool) = (&[], false);
    while let Some(f) = fields.next_field()? {
        match (f.number, f.value) {
            (1, Value::Len(id)) => trace_id = id,
            (15, Value::Len(status)) => {
                let mut s = Fields::new(status, base);
                while let Some(sf) = s.next_field()? {
                    if let (3, Value::Varint(code)) = (sf.number, sf.value) {
                        error = code == STATUS_ERROR as u64;
                    }
                }
            }
            _ => {}
        }
    }
    Ok((trace_id, error))
}

/// Enriches, samples and routes an encoded request: each span goes to the destination of highest rendezvous
/// weight among `keys` for its trace ID (one destination, index 0, when `keys` has at most one).
///
/// # Errors
/// The envelope is not valid protobuf (the caller answers `INVALID_ARGUMENT`).
pub fn process(raw: &Bytes, plan: &Plan<'_>, keys: &[u64]) -> Result<Outcome, WireError> {
    let mut out = Outcome::default();
    let mut resources: Vec<ResourceIn<'_>> = Vec::new();
    let mut dests: Vec<Vec<ResourceOut<'_>>> = (0..keys.len().max(1)).map(|_| Vec::new()).collect();
    let mut counts = vec![(0u32, 0u32); dests.len()];
    let mut changed = false;
    let mut top = Fields::new(raw, 0);
    while let Some(f) = top.next_field()? {
        let (1, Value::Len(rs_bytes)) = (f.number, f.value) else {
            changed = true; // unknown top-level fields are not forwarded
            continue;
        };
        let base = top.offset() - rs_bytes.len();
        let rs_index = resources.len();
        let mut res = ResourceIn { resource: Vec::new(), has_resource: false, other: Vec::new() };
        let mut scopes: Vec<&[u8]> = Vec::new();
        let mut rs_fields = Fields::new(rs_bytes, base);
        while let Some(rf) = rs_fields.next_field()? {
            match (rf.number, rf.value) {
                (1, Value::Len(r)) => {
                    res.resource.push(r);
                    res.has_resource = true;
                }
                (2, Value::Len(ss)) => scopes.push(ss),
                _ => res.other.push(rf.raw),
            }
        }
        let added_before = res.resource.len();
        for (key, field) in plan.enrich {
            if !has_attribute(&res.resource[..added_before], key.as_bytes(), base)? {
                res.resource.push(field);
                res.has_resource = true;
            }
        }
        changed |= res.resource.len() > added_before;
        for (ss_index, ss_bytes) in scopes.into_iter().enumerate() {
            let mut other = Vec::new();
            let mut spans = Vec::new();
            let mut ss_fields = Fields::new(ss_bytes, base);
            while let Some(sf) = ss_fields.next_field()? {
                match (sf.number, sf.value) {
                    (2, Value::Len(span)) => spans.push(span),
                    _ => other.push(sf.raw),
                }
            }
            for span in spans {
                out.received += 1;
                let (trace_id, error) = span_facts(span, base)?;
                if plan.keep.is_some_and(|keep| !keep(trace_id)) {
                    out.sampled_out += 1;
                    changed = true;
                    continue;
                }
                let d = if keys.len() <= 1 { 0 } else { choose(trace_hash(trace_id), keys, |_| true).unwrap_or(0) };
                let groups = &mut dests[d];
                if groups.last().is_none_or(|g| g.rs != rs_index) {
                    groups.push(ResourceOut { rs: rs_index, scopes: Vec::new() });
                }
                let Some(group) = groups.last_mut() else { continue };
                if group.scopes.last().is_none_or(|(s, _)| *s != ss_index) {
                    group.scopes.push((ss_index, ScopeOut { other: other.clone(), spans: Vec::new() }));
                }
                if let Some((_, scope)) = group.scopes.last_mut() {
                    scope.spans.push(span);
                }
                counts[d].0 += 1;
                counts[d].1 += u32::from(error);
            }
        }
        resources.push(res);
    }
    let used: Vec<usize> = (0..dests.len()).filter(|&d| counts[d].0 > 0).collect();
    if used.len() == 1 && !changed {
        let d = used[0];
        out.routed.push(Routed { dest: d, payload: raw.clone(), spans: counts[d].0, error_spans: counts[d].1 });
        return Ok(out);
    }
    for d in used {
        let payload = write(&resources, &dests[d]);
        out.routed.push(Routed {
            dest: d,
            payload: Bytes::from(payload),
            spans: counts[d].0,
            error_spans: counts[d].1,
        });
    }
    Ok(out)
}

/// Whether any `KeyValue` in the given `Resource` contents has key `key`.
fn has_attribute(resource: &[&[u8]], key: &[u8], base: usize) -> Result<bool, WireError> {
    for r in resource {
        let mut fields = Fields::new(r, base);
        while let Some(f) = fields.next_field()? {
            if let (1, Value::Len(kv)) = (f.number, f.value) {
                let mut kv_fields = Fields::new(kv, base);
                while let Some(kf) = kv_fields.next_field()? {
                    if let (1, Value::Len(k)) = (kf.number, kf.value)
                        && k == key
                    {
                        return Ok(true);
                    }
                }
            }
        }
    }
    Ok(false)
}

fn write(resources: &[ResourceIn<'_>], groups: &[ResourceOut<'_>]) -> Vec<u8> {
    let rs_size = |g: &ResourceOut<'_>| {
        let res = &resources[g.rs];
        let resource = if res.has_resource { len_field(res.resource_size()) } else { 0 };
        resource
            + g.scopes.iter().map(|(_, s)| len_field(s.size())).sum::<usize>()
            + res.other.iter().map(|o| o.len()).sum::<usize>()
    };
    let total: usize = groups.iter().map(|g| len_field(rs_size(g))).sum();
    let mut out = Vec::with_capacity(total);
    for g in groups {
        let res = &resources[g.rs];
        put_len_field(&mut out, 1, rs_size(g));
        if res.has_resource {
            put_len_field(&mut out, 1, res.resource_size());
            res.resource.iter().for_each(|r| out.extend_from_slice(r));
        }
        for (_, scope) in &g.scopes {
            put_len_field(&mut out, 2, scope.size());
            scope.other.iter().for_each(|o| out.extend_from_slice(o));
            for span in &scope.spans {
                put_len_field(&mut out, 2, span.len());
                out.extend_from_slice(span);
            }
        }
        res.other.iter().for_each(|o| out.extend_from_slice(o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
    use skein_proto::otlp_common::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use skein_proto::otlp_resource::Resource;
    use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    fn enrich_field(k: &str, v: &str) -> (String, Vec<u8>) {
        let kv = kv(k, v).encode_to_vec();
        let mut f = Vec::new();
        put_len_field(&mut f, 1, kv.len());
        f.extend_from_slice(&kv);
        (k.to_string(), f)
    }

    fn sample() -> ExportTraceServiceRequest {
        let span = |t: u8, err: bool| Span {
            trace_id: vec![t; 16],
            span_id: vec![t, 1, 2, 3, 4, 5, 6, 7],
            name: format!("op{t}"),
            attributes: vec![kv("http.route", "/x")],
            status: err.then(|| Status { code: 2, message: "boom".into() }),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", "a"), kv("k8s.pod.name", "sdk")],
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                            spans: (0..20).map(|t| span(t, t % 5 == 0)).collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                        },
                        ScopeSpans { spans: (20..30).map(|t| span(t, false)).collect(), ..Default::default() },
                    ],
                    schema_url: "s".into(),
                },
                ResourceSpans {
                    resource: None,
                    scope_spans: vec![ScopeSpans { spans: vec![span(40, true)], ..Default::default() }],
                    ..Default::default()
                },
            ],
        }
    }

    /// The request the struct path (decode, mutate, encode) gives, for comparison.
    fn expected(
        req: &ExportTraceServiceRequest,
        keys: &[u64],
        d: usize,
        enrich: &[(&str, &str)],
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> ExportTraceServiceRequest {
        let mut out = req.clone();
        for rs in &mut out.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|s| {
                    keep(&s.trace_id) && (keys.len() <= 1 || choose(trace_hash(&s.trace_id), keys, |_| true) == Some(d))
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            if !rs.scope_spans.is_empty() {
                let r = rs.resource.get_or_insert_with(Default::default);
                for (k, v) in enrich {
                    if !r.attributes.iter().any(|a| a.key == *k) {
                        r.attributes.push(kv(k, v));
                    }
                }
            }
        }
        out.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        out
    }

    #[test]
    fn unchanged_single_destination_requests_pass_through_without_a_copy() {
        let raw = Bytes::from(sample().encode_to_vec());
        let out = process(&raw, &Plan { enrich: &[], keep: None }, &[42]).expect("valid");
        assert_eq!(out.routed.len(), 1);
        assert_eq!(out.routed[0].payload.as_ptr(), raw.as_ptr(), "zero-copy");
        assert_eq!((out.routed[0].spans, out.routed[0].error_spans, out.received), (31, 5, 31));
    }

    #[test]
    fn wire_results_equal_the_decoded_path() {
        let req = sample();
        let raw = Bytes::from(req.encode_to_vec());
        let enrich = [enrich_field("k8s.pod.name", "agent"), enrich_field("k8s.node.name", "n1")];
        let keep = |id: &[u8]| !id[0].is_multiple_of(3);
        let keys = [11u64, 22, 33];
        let out = process(&raw, &Plan { enrich: &enrich, keep: Some(&keep) }, &keys).expect("valid");
        let kept: u32 = out.routed.iter().map(|r| r.spans).sum();
        assert_eq!(u64::from(kept) + out.sampled_out, 31);
        assert!(out.routed.len() >= 2, "spread over destinations");
        for r in &out.routed {
            let got = ExportTraceServiceRequest::decode(r.payload.clone()).expect("valid protobuf");
            let want = expected(&req, &keys, r.dest, &[("k8s.pod.name", "agent"), ("k8s.node.name", "n1")], &keep);
            assert_eq!(got, want, "destination {}", r.dest);
            let errors = got
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .filter(|s| is_error(s))
                .count();
            assert_eq!(r.error_spans as usize, errors);
        }
    }

    #[test]
    fn malformed_envelopes_are_errors_not_panics() {
        let raw = sample().encode_to_vec();
        for cut in [1, 7, raw.len() / 2, raw.len() - 1] {
            let r = process(&Bytes::copy_from_slice(&raw[..cut]), &Plan { enrich: &[], keep: None }, &[1]);
            assert!(r.is_err(), "cut at {cut}");
        }
        assert!(process(&Bytes::from_static(&[0x0b, 0x00]), &Plan { enrich: &[], keep: None }, &[1]).is_err(), "group");
        assert!(
            process(
                &Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
                &Plan { enrich: &[], keep: None },
                &[1]
            )
            .is_err()
        );
        assert_eq!(process(&Bytes::new(), &Plan { enrich: &[], keep: None }, &[1]).expect("empty").routed, vec![]);
    }

    #[test]
    fn varints_round_trip() {
        for v in [0usize, 1, 127, 128, 16_383, 16_384, usize::MAX >> 1] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(Fields::new(&out, 0).varint().expect("varint") as usize, v);
        }
    }

    #[test]
    fn unknown_groups_are_skipped_as_prost_skips_them() {
        // Found by the otlp_protobuf fuzz target: an unknown field as a (proto2) group, which prost skips, made
        // the agent refuse the request with INVALID_ARGUMENT while the collector would accept it.
        let mut raw = sample().encode_to_vec();
        // Field 4, a group holding a varint and a nested group (field 5), then its end tag.
        raw.extend_from_slice(&[0x23, 0x08, 0x01, 0x2b, 0x10, 0x02, 0x2c, 0x24]);
        let decoded = ExportTraceServiceRequest::decode(raw.as_slice()).expect("prost skips the group");
        let total: usize = decoded.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        let plan = Plan { enrich: &[], keep: None };
        let out = process(&Bytes::from(raw.clone()), &plan, &[]).expect("the wire path skips it too");
        assert_eq!(out.received as usize, total);
        // The fuzzer's input itself: a group at the top level with nothing else.
        let fuzzed = [0x23, 0xf9, 0x0b, 0x0a, 0xc5, 0x02, 0x3b, 0x3d, 0, 0, 0x3f, 0x20, 0x0a, 0x88, 0x0a, 0x4f, 0x24];
        assert_eq!(
            ExportTraceServiceRequest::decode(&fuzzed[..]).is_ok(),
            process(&Bytes::copy_from_slice(&fuzzed), &plan, &[]).is_ok(),
            "prost and the wire path agree"
        );
        // Malformed groups are errors, as in prost.
        for bad in [&[0x24][..], &[0x23, 0x08, 0x01][..], &[0x23, 0x2c][..]] {
            assert!(ExportTraceServiceRequest::decode(bad).is_err());
            assert!(process(&Bytes::copy_from_slice(bad), &plan, &[]).is_err(), "{bad:?}");
        }
    }
}
