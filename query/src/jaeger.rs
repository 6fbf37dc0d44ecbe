//! Model → Jaeger UI JSON (the classic `/api/traces` shape; REFERENCE §1, Jaeger `internal/uimodel/model.go`).
//!
//! OTLP fields without a Jaeger equivalent become tags exactly as Jaeger's OTLP translator writes them
//! (`span.kind`, `otel.status_code`, `otel.status_description`, `error=true`, `otel.scope.name`,
//! `otel.scope.version`, `w3c.tracestate`); events become logs with an `event` field; the parent becomes a
//! `CHILD_OF` reference and links `FOLLOWS_FROM` references. Processes are de-duplicated per trace and keyed
//! `p1`, `p2`, … in order of first appearance.

use serde_json::{Value as Json, json};

use skein_model::{KeyValue, Resource, Span, StatusCode, TraceId, Value};

/// Largest integer JavaScript represents exactly; larger int64 tag values are emitted as strings.
const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Jaeger's trace ID text: 16 hex characters when the high 64 bits are zero, else 32.
pub fn trace_id_text(id: &TraceId) -> String {
    let hex = id.to_hex();
    if id.0[..8] == [0; 8] { hex[16..].to_string() } else { hex }
}

/// One tag in Jaeger's `{key, type, value}` form.
pub fn tag(key: &str, value: &Value) -> Json {
    let (ty, v) = match value {
        Value::Str(s) => ("string", Json::String(s.clone())),
        Value::Bool(b) => ("bool", Json::Bool(*b)),
        Value::Int(i) if (-JS_MAX_SAFE_INTEGER..=JS_MAX_SAFE_INTEGER).contains(i) => ("int64", json!(i)),
        Value::Int(i) => ("int64", Json::String(i.to_string())),
        Value::Double(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => ("float64", Json::Number(n)),
            None => ("float64", Json::String(d.to_string())),
        },
        Value::Bytes(_) => ("binary", Json::String(value.to_tag_string())),
        Value::Empty => ("string", Json::String(String::new())),
        Value::Array(_) | Value::KvList(_) => ("string", Json::String(value.to_tag_string())),
    };
    json!({ "key": key, "type": ty, "value": v })
}

fn tags(attrs: &[KeyValue]) -> Vec<Json> {
    attrs.iter().map(|kv| tag(&kv.key, &kv.value)).collect()
}

fn str_tag(key: &str, value: &str) -> Json {
    json!({ "key": key, "type": "string", "value": value })
}

fn micros(nanos: u64) -> u64 {
    nanos / 1000
}

/// The Jaeger process of a resource: service name plus the other resource attributes as tags.
fn process(resource: &Resource) -> Json {
    let tags: Vec<Json> =
        resource.attributes.iter().filter(|kv| kv.key != "service.name").map(|kv| tag(&kv.key, &kv.value)).collect();
    json!({ "serviceName": resource.service_name(), "tags": tags })
}

/// Converts one span; `process_id` is its key in the trace's `processes` map.
pub fn span(s: &Span, process_id: &str) -> Json {
    let trace_id = trace_id_text(&s.trace_id);
    let mut references = Vec::new();
    if let Some(parent) = s.parent_id() {
        references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": parent.to_hex() }));
    }
    for l in &s.links {
        let Ok(tid) = <[u8; 16]>::try_from(l.trace_id.as_slice()) else { continue };
        if l.span_id.len() != 8 {
            continue;
        }
        references.push(json!({
            "refType": "FOLLOWS_FROM",
            "traceID": trace_id_text(&TraceId(tid)),
            "spanID": hex::encode(&l.span_id),
        }));
    }
    let mut t = tags(&s.attributes);
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
            t.push(json!({ "key": "error", "type": "bool", "value": true }));
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
    let logs: Vec<Json> = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() {
                fields.push(str_tag("event", &e.name));
            }
            fields.extend(tags(&e.attributes));
            json!({ "timestamp": micros(e.time_unix_nanos), "fields": fields })
        })
        .collect();
    json!({
        "traceID": trace_id,
        "spanID": s.span_id.to_hex(),
        "flags": s.flags,
        "operationName": s.name,
        "references": references,
        "startTime": micros(s.start_unix_nanos),
        "duration": micros(s.duration_nanos()),
        "tags": t,
        "logs": logs,
        "processID": process_id,
        "warnings": if s.warnings.is_empty() { Json::Null } else { json!(s.warnings) },
    })
}

/// Converts a trace (spans of one trace ID) to Jaeger's trace JSON.
pub fn trace(spans: &[Span]) -> Json {
    let mut processes: Vec<(Json, String)> = Vec::new();
    // Spans of one process share their resource (usually the same `Arc`): look the resource up first and build a
    // process's JSON once per distinct resource, not once per span.
    let mut by_resource: Vec<(&std::sync::Arc<Resource>, String)> = Vec::new();
    let mut out_spans = Vec::with_capacity(spans.len());
    for s in spans {
        let known = by_resource.iter().find(|(r, _)| std::sync::Arc::ptr_eq(r, &s.resource) || **r == s.resource);
        let id = match known {
            Some((_, id)) => id.clone(),
            None => {
                let p = process(&s.resource);
                let id = match processes.iter().find(|(existing, _)| *existing == p) {
                    Some((_, id)) => id.clone(),
                    None => {
                        let id = format!("p{}", processes.len() + 1);
                        processes.push((p, id.clone()));
                        id
                    }
                };
                by_resource.push((&s.resource, id.clone()));
                id
            }
        };
        out_spans.push(span(s, &id));
    }
    let trace_id = spans.first().map(|s| trace_id_text(&s.trace_id)).unwrap_or_default();
    let processes: serde_json::Map<String, Json> = processes.into_iter().map(|(p, id)| (id, p)).collect();
    json!({ "traceID": trace_id, "spans": out_spans, "processes": processes, "warnings": Json::Null })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
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
        let j = trace(&[s]);
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
        let j = trace(&[a, b, c]);
        assert_eq!(j["processes"].as_object().expect("map").len(), 2);
        assert_eq!(j["spans"][1]["processID"], "p1");
        assert_eq!(j["spans"][2]["processID"], "p2");
    }
}
