//! Zipkin v2 JSON → OTLP (spec: <https://zipkin.io/zipkin-api/#/default/post_spans>), mapped as the
//! OpenTelemetry Collector's Zipkin receiver does: `kind` → span kind, `localEndpoint.serviceName` → service,
//! `remoteEndpoint` → `peer.service` / `net.peer.*`, `error` tag → ERROR status, annotations → events.

use serde_json::Value as Json;
use skein_proto::otlp_common::any_value;
use skein_proto::otlp_trace as pt;

use crate::build::{group, kv, span_id_bytes, str_kv, trace_id_bytes};

/// Converts one Zipkin v2 JSON document (an array of spans) to OTLP.
///
/// # Errors
/// A message naming the field that is missing or malformed.
pub fn to_otlp(v: &Json) -> Result<Vec<pt::ResourceSpans>, String> {
    let spans = v.as_array().ok_or("Zipkin v2 JSON must be an array of spans")?;
    let mut items = Vec::with_capacity(spans.len());
    for s in spans {
        let trace_id =
            trace_id_bytes(s.get("traceId").and_then(Json::as_str).ok_or("span without traceId")?, "traceId")?;
        let span_id = span_id_bytes(s.get("id").and_then(Json::as_str).ok_or("span without id")?, "id")?;
        let parent = match s.get("parentId").and_then(Json::as_str) {
            Some(p) if !p.is_empty() => span_id_bytes(p, "parentId")?,
            _ => Vec::new(),
        };
        let start_us = s.get("timestamp").and_then(Json::as_u64).unwrap_or(0);
        let duration_us = s.get("duration").and_then(Json::as_u64).unwrap_or(0);
        let kind = match s.get("kind").and_then(Json::as_str) {
            Some("SERVER") => 2,
            Some("CLIENT") => 3,
            Some("PRODUCER") => 4,
            Some("CONSUMER") => 5,
            _ => 1,
        };
        let local = s.get("localEndpoint");
        let service = local.and_then(|e| e.get("serviceName")).and_then(Json::as_str).unwrap_or("unknown");
        let mut resource = vec![str_kv("service.name", service)];
        if let Some(ip) = local.and_then(|e| e.get("ipv4").or_else(|| e.get("ipv6"))).and_then(Json::as_str) {
            resource.push(str_kv("host.ip", ip));
        }
        let mut attributes = Vec::new();
        let mut status = None;
        if let Some(tags) = s.get("tags").and_then(Json::as_object) {
            for (k, v) in tags {
                let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                if k == "error" {
                    status = Some(pt::Status { code: 2, message: text.clone() });
                }
                attributes.push(str_kv(k, &text));
            }
        }
        if let Some(remote) = s.get("remoteEndpoint") {
            if let Some(name) = remote.get("serviceName").and_then(Json::as_str) {
                attributes.push(str_kv("peer.service", name));
            }
            if let Some(ip) = remote.get("ipv4").or_else(|| remote.get("ipv6")).and_then(Json::as_str) {
                attributes.push(str_kv("net.peer.ip", ip));
            }
            if let Some(port) = remote.get("port").and_then(Json::as_i64) {
                attributes.push(kv("net.peer.port", any_value::Value::IntValue(port)));
            }
        }
        let events = s
            .get("annotations")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|a| pt::span::Event {
                time_unix_nano: a.get("timestamp").and_then(Json::as_u64).unwrap_or(start_us) * 1000,
                name: a.get("value").and_then(Json::as_str).unwrap_or("").to_string(),
                ..Default::default()
            })
            .collect();
        let span = pt::Span {
            trace_id,
            span_id,
            parent_span_id: parent,
            name: s.get("name").and_then(Json::as_str).unwrap_or("").to_string(),
            kind,
            start_time_unix_nano: start_us * 1000,
            end_time_unix_nano: (start_us + duration_us) * 1000,
            attributes,
            events,
            status,
            ..Default::default()
        };
        items.push((resource, None, span));
    }
    Ok(group(items))
}
