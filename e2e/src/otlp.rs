//! OTLP test data: export requests with predictable trace IDs, and counting what a server stored.

use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_common::{AnyValue, KeyValue, any_value};
use skein_proto::otlp_resource::Resource;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span, Status};

pub use skein_testkit::now_nanos;

/// A string attribute.
pub fn kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        key_strindex: 0,
    }
}

/// One export request: `traces` traces of `spans_per_trace` spans each, trace IDs derived from `request_no`.
pub fn request(request_no: u32, traces: u32, spans_per_trace: u32, error_every: u32) -> ExportTraceServiceRequest {
    request_for("load", request_no, traces, spans_per_trace, error_every)
}

/// [`request`] for service `service`; the first span of every `error_every`-th trace has error status.
pub fn request_for(
    service: &str,
    request_no: u32,
    traces: u32,
    spans_per_trace: u32,
    error_every: u32,
) -> ExportTraceServiceRequest {
    let t = now_nanos();
    let mut spans = Vec::new();
    for tr in 0..traces {
        let trace_id = test_trace_id(request_no, tr);
        for s in 0..spans_per_trace {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(s + 1).to_be_bytes());
            span_id[7] = 1;
            let parent = if s == 0 {
                Vec::new()
            } else {
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&1u32.to_be_bytes());
                p[7] = 1;
                p.to_vec()
            };
            let error = error_every > 0 && tr % error_every == 0 && s == 0;
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent,
                name: format!("op-{}", s % 7),
                kind: if s == 0 { 2 } else { 3 },
                start_time_unix_nano: t + u64::from(s) * 1000,
                end_time_unix_nano: t + u64::from(s) * 1000 + 500_000,
                attributes: vec![kv("http.route", "/api/items"), kv("payload", &"x".repeat(64))],
                status: error.then(|| Status { code: 2, message: "boom".into() }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

/// The trace ID of trace `tr` in request `request_no`.
pub fn test_trace_id(request_no: u32, tr: u32) -> [u8; 16] {
    let mut trace_id = [0u8; 16];
    trace_id[..4].copy_from_slice(&request_no.to_be_bytes());
    trace_id[4..8].copy_from_slice(&tr.to_be_bytes());
    trace_id[15] = 1;
    trace_id
}

/// [`test_trace_id`] as lowercase hex.
pub fn trace_hex(request_no: u32, tr: u32) -> String {
    test_trace_id(request_no, tr).iter().map(|b| format!("{b:02x}")).collect()
}

/// Spans stored for a trace (hex ID), by `GET /api/traces/{id}`; 0 when not found.
pub fn span_count(s: &crate::AllInOne, trace: &str) -> usize {
    let (status, body) = s.get(&format!("/api/traces/{trace}"));
    if status != 200 {
        return 0;
    }
    body["data"][0]["spans"].as_array().map_or(0, Vec::len)
}
