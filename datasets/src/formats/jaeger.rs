//! Jaeger span JSON (API responses and Elasticsearch documents) → OTLP, as Jaeger's own translator maps it.

use serde_json::Value as Json;
use skein_proto::otlp_common::{self as pc, any_value};
use skein_proto::otlp_trace as pt;

use skein_model::build::{group, kv, span_id_bytes, str_kv, trace_id_bytes};

fn jaeger_tag(t: &Json) -> Result<pc::KeyValue, String> {
    let key = t.get("key").and_then(Json::as_str).ok_or("tag without a key")?;
    let ty = t.get("type").and_then(Json::as_str).unwrap_or("string");
    let v = t.get("value").unwrap_or(&Json::Null);
    let value = match ty {
        "bool" => any_value::Value::BoolValue(v.as_bool().unwrap_or_else(|| v.as_str() == Some("true"))),
        "int64" => any_value::Value::IntValue(
            v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).ok_or(format!("tag {key}: bad int64"))?,
        ),
        "float64" => any_value::Value::DoubleValue(
            v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).ok_or(format!("tag {key}: bad float64"))?,
        ),
        "binary" => {
            use base64::Engine as _;
            let s = v.as_str().unwrap_or("");
            any_value::Value::BytesValue(
                base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("tag {key}: {e}"))?,
            )
        }
        _ => any_value::Value::StringValue(match v {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        }),
    };
    Ok(kv(key, value))
}

/// Elasticsearch `tag` maps: dots written as `@`, values as plain JSON.
fn es_tag_map(m: &Json) -> Vec<pc::KeyValue> {
    let Some(obj) = m.as_object() else { return Vec::new() };
    obj.iter()
        .map(|(k, v)| {
            let key = k.replace('@', ".");
            let value = match v {
                Json::Bool(b) => any_value::Value::BoolValue(*b),
                Json::Number(n) if n.is_i64() => any_value::Value::IntValue(n.as_i64().unwrap_or_default()),
                Json::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
                Json::String(s) => any_value::Value::StringValue(s.clone()),
                other => any_value::Value::StringValue(other.to_string()),
            };
            kv(&key, value)
        })
        .collect()
}

fn tags_of(span: &Json, list: &str, map: &str) -> Result<Vec<pc::KeyValue>, String> {
    let mut out = Vec::new();
    if let Some(tags) = span.get(list).and_then(Json::as_array) {
        for t in tags {
            out.push(jaeger_tag(t)?);
        }
    }
    if let Some(m) = span.get(map) {
        out.extend(es_tag_map(m));
    }
    Ok(out)
}

fn str_value(kv: &pc::KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn resource_attrs(process: &Json) -> Result<Vec<pc::KeyValue>, String> {
    let service = process.get("serviceName").and_then(Json::as_str).unwrap_or("");
    let mut attrs = vec![str_kv("service.name", service)];
    attrs.extend(tags_of(process, "tags", "tag")?);
    Ok(attrs)
}

/// Converts one Jaeger span (its process given separately).
fn span(s: &Json, process: &Json) -> Result<(Vec<pc::KeyValue>, Option<pc::InstrumentationScope>, pt::Span), String> {
    let trace_id_text = s.get("traceID").and_then(Json::as_str).ok_or("span without traceID")?;
    let trace_id = trace_id_bytes(trace_id_text, "traceID")?;
    let span_id = span_id_bytes(s.get("spanID").and_then(Json::as_str).ok_or("span without spanID")?, "spanID")?;
    let start_us = s.get("startTime").and_then(Json::as_u64).ok_or("span without startTime")?;
    let duration_us = s.get("duration").and_then(Json::as_u64).unwrap_or(0);
    let mut parent = Vec::new();
    let mut links = Vec::new();
    for r in s.get("references").and_then(Json::as_array).into_iter().flatten() {
        let rt = trace_id_bytes(r.get("traceID").and_then(Json::as_str).unwrap_or(trace_id_text), "reference traceID")?;
        let rs = span_id_bytes(r.get("spanID").and_then(Json::as_str).ok_or("reference without spanID")?, "reference")?;
        if parent.is_empty() && r.get("refType").and_then(Json::as_str) == Some("CHILD_OF") && rt == trace_id {
            parent = rs;
        } else {
            links.push(pt::span::Link { trace_id: rt, span_id: rs, ..Default::default() });
        }
    }
    if parent.is_empty()
        && let Some(p) = s.get("parentSpanID").and_then(Json::as_str).filter(|p| !p.is_empty() && *p != "0")
    {
        parent = span_id_bytes(p, "parentSpanID")?;
    }
    let mut kind = 0;
    let mut status = pt::Status::default();
    let mut trace_state = String::new();
    let mut scope: Option<pc::InstrumentationScope> = None;
    let mut attributes = Vec::new();
    for t in tags_of(s, "tags", "tag")? {
        match t.key.as_str() {
            "span.kind" => {
                kind = match str_value(&t).as_deref() {
                    Some("server") => 2,
                    Some("client") => 3,
                    Some("producer") => 4,
                    Some("consumer") => 5,
                    Some("internal") => 1,
                    _ => 0,
                }
            }
            "error" if str_value(&t).as_deref() == Some("true") => status.code = 2,
            "otel.status_code" => {
                status.code = match str_value(&t).as_deref() {
                    Some("ERROR") => 2,
                    Some("OK") => 1,
                    _ => status.code,
                }
            }
            "otel.status_description" => status.message = str_value(&t).unwrap_or_default(),
            "w3c.tracestate" => trace_state = str_value(&t).unwrap_or_default(),
            "otel.scope.name" | "otel.library.name" => {
                scope.get_or_insert_with(Default::default).name = str_value(&t).unwrap_or_default()
            }
            "otel.scope.version" | "otel.library.version" => {
                scope.get_or_insert_with(Default::default).version = str_value(&t).unwrap_or_default()
            }
            _ => attributes.push(t),
        }
    }
    let mut events = Vec::new();
    for l in s.get("logs").and_then(Json::as_array).into_iter().flatten() {
        let ts = l.get("timestamp").and_then(Json::as_u64).unwrap_or(start_us);
        let mut name = String::new();
        let mut attrs = Vec::new();
        for f in l.get("fields").and_then(Json::as_array).into_iter().flatten() {
            let f = jaeger_tag(f)?;
            if f.key == "event" && name.is_empty() {
                name = str_value(&f).unwrap_or_default();
            } else {
                attrs.push(f);
            }
        }
        events.push(pt::span::Event {
            time_unix_nano: ts * 1000,
            name,
            attributes: attrs,
            dropped_attributes_count: 0,
        });
    }
    let flags = s.get("flags").and_then(Json::as_u64).unwrap_or(0) as u32;
    let name = s.get("operationName").and_then(Json::as_str).unwrap_or("").to_string();
    let otlp = pt::Span {
        trace_id,
        span_id,
        trace_state,
        parent_span_id: parent,
        flags,
        name,
        kind,
        start_time_unix_nano: start_us * 1000,
        end_time_unix_nano: (start_us + duration_us) * 1000,
        attributes,
        dropped_attributes_count: 0,
        events,
        dropped_events_count: 0,
        links,
        dropped_links_count: 0,
        status: (status.code != 0 || !status.message.is_empty()).then_some(status),
    };
    Ok((resource_attrs(process)?, scope, otlp))
}

/// A Jaeger `/api/traces` (or `/api/traces/{id}`) response.
pub(super) fn api_response(v: &Json) -> Result<Vec<pt::ResourceSpans>, String> {
    let mut items = Vec::new();
    for trace in v.get("data").and_then(Json::as_array).into_iter().flatten() {
        let processes = trace.get("processes").cloned().unwrap_or(Json::Null);
        for s in trace.get("spans").and_then(Json::as_array).into_iter().flatten() {
            let pid = s.get("processID").and_then(Json::as_str).unwrap_or("");
            let process = s.get("process").or_else(|| processes.get(pid)).cloned().unwrap_or(Json::Null);
            items.push(span(s, &process)?);
        }
    }
    Ok(group(items))
}

/// One Elasticsearch span document (process embedded).
pub(super) fn es_document(v: &Json) -> Result<Vec<pt::ResourceSpans>, String> {
    let process = v.get("process").cloned().unwrap_or(Json::Null);
    Ok(group(vec![span(v, &process)?]))
}
