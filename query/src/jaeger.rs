//! Model → Jaeger UI JSON (the classic `/api/traces` shape; REFERENCE §1, Jaeger `internal/uimodel/model.go`).
//!
//! OTLP fields without a Jaeger equivalent become tags exactly as Jaeger's OTLP translator writes them
//! (`span.kind`, `otel.status_code`, `otel.status_description`, `error=true`, `otel.scope.name`,
//! `otel.scope.version`, `w3c.tracestate`); events become logs with an `event` field; the parent becomes a
//! `CHILD_OF` reference and links `FOLLOWS_FROM` references. Processes are de-duplicated per trace and keyed
//! `p1`, `p2`, … in order of first appearance.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use skein_model::{KeyValue, Resource, Span, StatusCode, TraceId, Value};

/// Largest integer JavaScript represents exactly; larger int64 tag values are emitted as strings.
const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Jaeger's trace ID text: 16 hex characters when the high 64 bits are zero, else 32.
pub fn trace_id_text(id: &TraceId) -> String {
    let hex = id.to_hex();
    if id.0[..8] == [0; 8] { hex[16..].to_string() } else { hex }
}

/// Lower-case hex of up to 16 bytes, kept inline and written as a JSON string (no allocation per ID).
#[derive(Clone, Copy)]
struct Hex {
    buf: [u8; 32],
    len: u8,
}

impl Hex {
    fn of(bytes: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        let bytes = &bytes[..bytes.len().min(16)];
        for (i, b) in bytes.iter().enumerate() {
            buf[2 * i] = DIGITS[usize::from(b >> 4)];
            buf[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        Self { buf, len: (bytes.len() * 2) as u8 }
    }

    /// [`trace_id_text`] without the allocation.
    fn trace_id(id: &TraceId) -> Self {
        if id.0[..8] == [0; 8] { Self::of(&id.0[8..]) } else { Self::of(&id.0) }
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Only ASCII hex digits were written.
        s.serialize_str(std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default())
    }
}

/// A tag's value as Jaeger's JSON carries it.
#[derive(Serialize, PartialEq)]
#[serde(untagged)]
enum TagValue<'a> {
    Str(&'a str),
    Owned(String),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// One tag in Jaeger's `{key, type, value}` form.
#[derive(Serialize, PartialEq)]
struct Tag<'a> {
    key: &'a str,
    #[serde(rename = "type")]
    ty: &'static str,
    value: TagValue<'a>,
}

fn tag<'a>(key: &'a str, value: &'a Value) -> Tag<'a> {
    let (ty, value) = match value {
        Value::Str(s) => ("string", TagValue::Str(s)),
        Value::Bool(b) => ("bool", TagValue::Bool(*b)),
        Value::Int(i) if (-JS_MAX_SAFE_INTEGER..=JS_MAX_SAFE_INTEGER).contains(i) => ("int64", TagValue::Int(*i)),
        Value::Int(i) => ("int64", TagValue::Owned(i.to_string())),
        Value::Double(d) if d.is_finite() => ("float64", TagValue::Float(*d)),
        Value::Double(d) => ("float64", TagValue::Owned(d.to_string())),
        Value::Bytes(_) => ("binary", TagValue::Owned(value.to_tag_string())),
        Value::Empty => ("string", TagValue::Str("")),
        Value::Array(_) | Value::KvList(_) => ("string", TagValue::Owned(value.to_tag_string())),
    };
    Tag { key, ty, value }
}

fn tags(attrs: &[KeyValue]) -> impl Iterator<Item = Tag<'_>> {
    attrs.iter().map(|kv| tag(&kv.key, &kv.value))
}

fn str_tag<'a>(key: &'a str, value: &'a str) -> Tag<'a> {
    Tag { key, ty: "string", value: TagValue::Str(value) }
}

fn micros(nanos: u64) -> u64 {
    nanos / 1000
}

/// A Jaeger process: service name plus the other resource attributes as tags.
#[derive(Serialize, PartialEq)]
struct Process<'a> {
    #[serde(rename = "serviceName")]
    service_name: &'a str,
    tags: Vec<Tag<'a>>,
}

fn process(resource: &Resource) -> Process<'_> {
    Process {
        service_name: resource.service_name(),
        tags: resource
            .attributes
            .iter()
            .filter(|kv| kv.key != "service.name")
            .map(|kv| tag(&kv.key, &kv.value))
            .collect(),
    }
}

/// A process key, `p1`, `p2`, …
#[derive(Clone, Copy)]
struct ProcessId(usize);

impl Serialize for ProcessId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("p{}", self.0))
    }
}

/// The `processes` map, keyed by [`ProcessId`] in order of first appearance.
struct Processes<'a>(Vec<Process<'a>>);

impl Serialize for Processes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (i, p) in self.0.iter().enumerate() {
            m.serialize_entry(&ProcessId(i + 1), p)?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: Hex,
    #[serde(rename = "spanID")]
    span_id: Hex,
}

#[derive(Serialize)]
struct Log<'a> {
    timestamp: u64,
    fields: Vec<Tag<'a>>,
}

/// One span in Jaeger's UI JSON (`uimodel.Span`).
#[derive(Serialize)]
pub struct JaegerSpan<'a> {
    #[serde(rename = "traceID")]
    trace_id: Hex,
    #[serde(rename = "spanID")]
    span_id: Hex,
    flags: u32,
    #[serde(rename = "operationName")]
    operation_name: &'a str,
    references: Vec<Reference>,
    #[serde(rename = "startTime")]
    start_time: u64,
    duration: u64,
    tags: Vec<Tag<'a>>,
    logs: Vec<Log<'a>>,
    #[serde(rename = "processID")]
    process_id: ProcessId,
    warnings: Option<&'a [String]>,
}

fn span(s: &Span, process_id: ProcessId) -> JaegerSpan<'_> {
    let trace_id = Hex::trace_id(&s.trace_id);
    let mut references = Vec::with_capacity(usize::from(!s.parent_span_id.is_empty()) + s.links.len());
    if let Some(parent) = s.parent_id() {
        references.push(Reference { ref_type: "CHILD_OF", trace_id, span_id: Hex::of(&parent.0) });
    }
    for l in &s.links {
        let Ok(tid) = <[u8; 16]>::try_from(l.trace_id.as_slice()) else { continue };
        if l.span_id.len() != 8 {
            continue;
        }
        references.push(Reference {
            ref_type: "FOLLOWS_FROM",
            trace_id: Hex::trace_id(&TraceId(tid)),
            span_id: Hex::of(&l.span_id),
        });
    }
    let mut t: Vec<Tag<'_>> = Vec::with_capacity(s.attributes.len() + 4);
    t.extend(tags(&s.attributes));
    if !s.scope.name.is_empty() {
        t.push(str_tag("otel.scope.name", &s.scope.name));
    }
    if !s.scope.version.is_empty() {
        t.push(str_tag("otel.scope.version", &s.scope.version));
    }
    let kind = s.kind.jaeger_name();
    if !kind.is_empty() {
        t.push(str_tag("span.kind", kind));
    }
    match s.status_code {
        StatusCode::ERROR => {
            t.push(str_tag("otel.status_code", "ERROR"));
            t.push(Tag { key: "error", ty: "bool", value: TagValue::Bool(true) });
        }
        StatusCode::OK => t.push(str_tag("otel.status_code", "OK")),
        _ => {}
    }
    if !s.status_message.is_empty() {
        t.push(str_tag("otel.status_description", &s.status_message));
    }
    if !s.trace_state.is_empty() {
        t.push(str_tag("w3c.tracestate", &s.trace_state));
    }
    let logs = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() {
                fields.push(str_tag("event", &e.name));
            }
            fields.extend(tags(&e.attributes));
            Log { timestamp: micros(e.time_unix_nanos), fields }
        })
        .collect();
    JaegerSpan {
        trace_id,
        span_id: Hex::of(&s.span_id.0),
        flags: s.flags,
        operation_name: &s.name,
        references,
        start_time: micros(s.start_unix_nanos),
        duration: micros(s.duration_nanos()),
        tags: t,
        logs,
        process_id,
        warnings: (!s.warnings.is_empty()).then_some(s.warnings.as_slice()),
    }
}

/// A trace in Jaeger's UI JSON (`uimodel.Trace`), borrowing from the spans: serialize it straight into the
/// response body (building a `serde_json::Value` first cost most of a search's time).
#[derive(Serialize)]
pub struct JaegerTrace<'a> {
    #[serde(rename = "traceID")]
    trace_id: Hex,
    spans: Vec<JaegerSpan<'a>>,
    processes: Processes<'a>,
    warnings: Option<()>,
}

/// Converts a trace (spans of one trace ID) to Jaeger's trace JSON.
pub fn trace(spans: &[Span]) -> JaegerTrace<'_> {
    let mut processes: Vec<Process<'_>> = Vec::new();
    // Spans of one process share their resource (usually the same `Arc`): look the resource up first and build a
    // process once per distinct resource, not once per span.
    let mut by_resource: Vec<(&std::sync::Arc<Resource>, ProcessId)> = Vec::new();
    let mut out_spans = Vec::with_capacity(spans.len());
    for s in spans {
        let known = by_resource.iter().find(|(r, _)| std::sync::Arc::ptr_eq(r, &s.resource) || **r == s.resource);
        let id = match known {
            Some((_, id)) => *id,
            None => {
                let p = process(&s.resource);
                let id = match processes.iter().position(|existing| *existing == p) {
                    Some(i) => ProcessId(i + 1),
                    None => {
                        processes.push(p);
                        ProcessId(processes.len())
                    }
                };
                by_resource.push((&s.resource, id));
                id
            }
        };
        out_spans.push(span(s, id));
    }
    JaegerTrace {
        trace_id: spans.first().map_or(Hex { buf: [0; 32], len: 0 }, |s| Hex::trace_id(&s.trace_id)),
        spans: out_spans,
        processes: Processes(processes),
        warnings: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use serde_json::json;
    use skein_model::{Event, Scope, SpanId, SpanKind, service_resource};

    #[test]
    fn converts_like_jaegers_translator() {
        let t = TraceId([0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let mut s = Span::minimal(t, SpanId([2; 8]), "GET", service_resource("api"));
        s.parent_span_id = vec![1; 8];
        s.kind = SpanKind::SERVER;
        s.status_code = StatusCode::ERROR;
        s.status_message = "boom".into();
        s.start_unix_nanos = 1_500_000;
        s.end_unix_nanos = 3_500_999;
        s.scope = Arc::new(Scope { name: "lib".into(), version: "1.0".into(), ..Scope::default() });
        s.attributes.push(KeyValue::new("big", Value::Int(i64::MAX)));
        s.attributes.push(KeyValue::new("n", Value::Int(7)));
        s.attributes.push(KeyValue::new("b", Value::Bytes(vec![1, 2])));
        s.events.push(Event {
            time_unix_nanos: 2_000_000,
            name: "retry".into(),
            attributes: vec![KeyValue::new("attempt", Value::Int(2))],
            dropped_attributes_count: 0,
        });
        let j = serde_json::to_value(trace(&[s])).expect("json");
        assert_eq!(j["traceID"], "0102030405060708");
        let sp = &j["spans"][0];
        assert_eq!(sp["references"][0]["refType"], "CHILD_OF");
        assert_eq!(sp["startTime"], 1500);
        assert_eq!(sp["duration"], 2000);
        assert_eq!(sp["processID"], "p1");
        assert_eq!(j["processes"]["p1"]["serviceName"], "api");
        let tags = sp["tags"].as_array().expect("tags");
        let find = |k: &str| tags.iter().find(|t| t["key"] == k).cloned().expect(k);
        assert_eq!(find("big")["value"], json!(i64::MAX.to_string()));
        assert_eq!(find("n"), json!({"key":"n","type":"int64","value":7}));
        assert_eq!(find("b"), json!({"key":"b","type":"binary","value":"AQI="}));
        assert_eq!(find("error")["value"], json!(true));
        assert_eq!(find("span.kind")["value"], "server");
        assert_eq!(find("otel.status_description")["value"], "boom");
        assert_eq!(find("otel.scope.name")["value"], "lib");
        assert_eq!(sp["logs"][0]["fields"][0], json!({"key":"event","type":"string","value":"retry"}));
        assert_eq!(sp["logs"][0]["timestamp"], 2000);
    }

    #[test]
    fn processes_are_deduplicated_per_trace() {
        let t = TraceId([1; 16]);
        let a = Span::minimal(t, SpanId([1; 8]), "a", service_resource("x"));
        let b = Span::minimal(t, SpanId([2; 8]), "b", service_resource("x"));
        let c = Span::minimal(t, SpanId([3; 8]), "c", service_resource("y"));
        let j = serde_json::to_value(trace(&[a, b, c])).expect("json");
        assert_eq!(j["processes"].as_object().expect("map").len(), 2);
        assert_eq!(j["spans"][1]["processID"], "p1");
        assert_eq!(j["spans"][2]["processID"], "p2");
    }
}
