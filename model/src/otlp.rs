//! OTLP ⇄ model conversion with validation (spec: `opentelemetry/proto/trace/v1/trace.proto`).
//!
//! [`convert`] turns an `ExportTraceServiceRequest`'s `ResourceSpans` into validated [`Span`]s, rejecting spans
//! that cannot be stored (bad IDs, no name) and accepting with a recorded warning spans that can be repaired (end
//! before start, attributes over limits). [`to_otlp`] converts stored spans back into `ResourceSpans`, grouping
//! by resource and scope, so that OTLP → Skein → OTLP is lossless.

use std::collections::BTreeMap;
use std::sync::Arc;

use skein_proto::otlp_common::{self as pc, any_value};
use skein_proto::otlp_resource as pr;
use skein_proto::otlp_trace as pt;

use crate::{Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

/// Limits applied to accepted spans; anything over a limit is truncated and a warning recorded on the span.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum attributes kept per span, event, link, resource or scope; the rest are dropped and added to
    /// `dropped_attributes_count`.
    pub max_attributes: usize,
    /// Maximum bytes of one string or bytes attribute value; longer values are cut at a UTF-8 boundary.
    pub max_attribute_value_bytes: usize,
    /// Maximum events per span; the rest are dropped and added to `dropped_events_count`.
    pub max_events: usize,
    /// Maximum links per span; the rest are dropped and added to `dropped_links_count`.
    pub max_links: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_attributes: 256, max_attribute_value_bytes: 32 * 1024, max_events: 1024, max_links: 1024 }
    }
}

/// Why a span was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// Trace ID not 16 bytes or all zero.
    InvalidTraceId,
    /// Span ID not 8 bytes or all zero.
    InvalidSpanId,
    /// Empty span name.
    MissingName,
}

impl RejectReason {
    /// Label value for the `skein_spans_rejected_total{reason}` metric.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::MissingName => "missing_name",
        }
    }

    fn message(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "trace ID must be 16 bytes and not all zero",
            RejectReason::InvalidSpanId => "span ID must be 8 bytes and not all zero",
            RejectReason::MissingName => "span name must not be empty",
        }
    }
}

/// The result of converting one request.
#[derive(Debug, Default)]
pub struct Converted {
    /// Spans accepted for storage.
    pub spans: Vec<Span>,
    /// Rejected span counts by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
}

impl Converted {
    /// Total rejected spans.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// The OTLP `partial_success.error_message`: empty when nothing was rejected.
    pub fn rejection_message(&self) -> String {
        if self.rejected.is_empty() {
            return String::new();
        }
        let parts: Vec<String> =
            self.rejected.iter().map(|(reason, n)| format!("{n} span(s): {}", reason.message())).collect();
        format!("rejected {}", parts.join("; "))
    }
}

/// Converts OTLP `ResourceSpans` into validated spans.
pub fn convert(resource_spans: Vec<pt::ResourceSpans>, limits: &Limits) -> Converted {
    let mut out = Converted::default();
    for rs in resource_spans {
        let mut warnings = Vec::new();
        let resource = Arc::new(match rs.resource {
            Some(r) => {
                let (attributes, dropped) = convert_attrs(r.attributes, limits, &mut warnings, "resource");
                Resource {
                    attributes,
                    dropped_attributes_count: r.dropped_attributes_count.saturating_add(dropped),
                    schema_url: rs.schema_url,
                }
            }
            None => Resource { schema_url: rs.schema_url, ..Resource::default() },
        });
        for ss in rs.scope_spans {
            let mut scope_warnings = warnings.clone();
            let scope = Arc::new(match ss.scope {
                Some(s) => {
                    let (attributes, dropped) = convert_attrs(s.attributes, limits, &mut scope_warnings, "scope");
                    Scope {
                        name: s.name,
                        version: s.version,
                        attributes,
                        dropped_attributes_count: s.dropped_attributes_count.saturating_add(dropped),
                        schema_url: ss.schema_url,
                    }
                }
                None => Scope { schema_url: ss.schema_url, ..Scope::default() },
            });
            for span in ss.spans {
                match convert_span(span, &resource, &scope, limits, &scope_warnings) {
                    Ok(s) => out.spans.push(s),
                    Err(reason) => *out.rejected.entry(reason).or_default() += 1,
                }
            }
        }
    }
    out
}

fn convert_span(
    span: pt::Span,
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    limits: &Limits,
    inherited_warnings: &[String],
) -> Result<Span, RejectReason> {
    let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().map_err(|_| RejectReason::InvalidTraceId)?;
    if trace_id == [0; 16] {
        return Err(RejectReason::InvalidTraceId);
    }
    let span_id: [u8; 8] = span.span_id.as_slice().try_into().map_err(|_| RejectReason::InvalidSpanId)?;
    if span_id == [0; 8] {
        return Err(RejectReason::InvalidSpanId);
    }
    if span.name.is_empty() {
        return Err(RejectReason::MissingName);
    }
    let mut warnings = inherited_warnings.to_vec();
    let mut end = span.end_time_unix_nano;
    if end < span.start_time_unix_nano {
        warnings.push(format!(
            "end time {} is before start time {}; duration clamped to 0",
            span.end_time_unix_nano, span.start_time_unix_nano
        ));
        end = span.start_time_unix_nano;
    }
    let (attributes, dropped) = convert_attrs(span.attributes, limits, &mut warnings, "span");
    let mut events_in = span.events;
    let dropped_events_count =
        cap_list(&mut events_in, limits.max_events, span.dropped_events_count, &mut warnings, "event");
    let events = events_in
        .into_iter()
        .map(|e| {
            let (attributes, dropped) = convert_attrs(e.attributes, limits, &mut warnings, "event");
            Event {
                time_unix_nanos: e.time_unix_nano,
                name: e.name.into(),
                attributes,
                dropped_attributes_count: e.dropped_attributes_count.saturating_add(dropped),
            }
        })
        .collect();
    let mut links_in = span.links;
    let dropped_links_count =
        cap_list(&mut links_in, limits.max_links, span.dropped_links_count, &mut warnings, "link");
    let links = links_in
        .into_iter()
        .map(|l| {
            let (attributes, dropped) = convert_attrs(l.attributes, limits, &mut warnings, "link");
            Link {
                trace_id: l.trace_id,
                span_id: l.span_id,
                trace_state: l.trace_state,
                attributes,
                dropped_attributes_count: l.dropped_attributes_count.saturating_add(dropped),
                flags: l.flags,
            }
        })
        .collect();
    let (status_code, status_message) = match span.status {
        Some(s) => (StatusCode(s.code), s.message),
        None => (StatusCode::UNSET, String::new()),
    };
    Ok(Span {
        trace_id: TraceId(trace_id),
        span_id: SpanId(span_id),
        parent_span_id: span.parent_span_id,
        trace_state: span.trace_state,
        flags: span.flags,
        name: span.name.into(),
        kind: SpanKind(span.kind),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: end,
        attributes,
        dropped_attributes_count: span.dropped_attributes_count.saturating_add(dropped),
        events,
        dropped_events_count,
        links,
        dropped_links_count,
        status_code,
        status_message,
        resource: resource.clone(),
        scope: scope.clone(),
        warnings,
    })
}

/// Truncates `list` to `max` items, recording a warning; returns `dropped` plus the number cut.
fn cap_list<T>(list: &mut Vec<T>, max: usize, dropped: u32, warnings: &mut Vec<String>, what: &str) -> u32 {
    if list.len() <= max {
        return dropped;
    }
    let extra = list.len() - max;
    warnings.push(format!("{extra} {what}(s) over the limit of {max} dropped"));
    list.truncate(max);
    dropped.saturating_add(u32::try_from(extra).unwrap_or(u32::MAX))
}

/// Converts attributes, applying the count and value-size limits. Returns the attributes and how many were dropped.
fn convert_attrs(
    attrs: Vec<pc::KeyValue>,
    limits: &Limits,
    warnings: &mut Vec<String>,
    what: &str,
) -> (Vec<KeyValue>, u32) {
    let mut dropped = 0u32;
    let mut attrs = attrs;
    if attrs.len() > limits.max_attributes {
        dropped = (attrs.len() - limits.max_attributes) as u32;
        warnings.push(format!("{dropped} {what} attribute(s) over the limit of {} dropped", limits.max_attributes));
        attrs.truncate(limits.max_attributes);
    }
    let mut truncated = Vec::new();
    let out = attrs
        .into_iter()
        .map(|kv| {
            let mut cut = false;
            let value = convert_value(kv.value, limits.max_attribute_value_bytes, &mut cut);
            if cut {
                truncated.push(kv.key.clone());
            }
            KeyValue { key: kv.key.into(), value }
        })
        .collect();
    for key in truncated {
        warnings.push(format!("{what} attribute {key:?} truncated to {} bytes", limits.max_attribute_value_bytes));
    }
    (out, dropped)
}

fn truncate_utf8(mut s: String, max: usize, cut: &mut bool) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        *cut = true;
    }
    s
}

fn convert_value(v: Option<pc::AnyValue>, max: usize, cut: &mut bool) -> Value {
    match v.and_then(|v| v.value) {
        None => Value::Empty,
        Some(any_value::Value::StringValue(s)) => Value::Str(truncate_utf8(s, max, cut).into()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::Int(i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(d),
        Some(any_value::Value::BytesValue(mut b)) => {
            if b.len() > max {
                b.truncate(max);
                *cut = true;
            }
            Value::Bytes(b)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(|v| convert_value(Some(v), max, cut)).collect())
        }
        // String-table references exist only for OTLP profiles; a trace has no string table to resolve them in.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Empty,
        Some(any_value::Value::KvlistValue(kvs)) => Value::KvList(
            kvs.values
                .into_iter()
                .map(|kv| KeyValue { key: kv.key.into(), value: convert_value(kv.value, max, cut) })
                .collect(),
        ),
    }
}

/// Converts a model value back to OTLP `AnyValue`.
pub fn value_to_otlp(v: &Value) -> pc::AnyValue {
    let value = match v {
        Value::Empty => None,
        Value::Str(s) => Some(any_value::Value::StringValue(s.as_str().to_owned())),
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Int(i) => Some(any_value::Value::IntValue(*i)),
        Value::Double(d) => Some(any_value::Value::DoubleValue(*d)),
        Value::Bytes(b) => Some(any_value::Value::BytesValue(b.clone())),
        Value::Array(items) => {
            Some(any_value::Value::ArrayValue(pc::ArrayValue { values: items.iter().map(value_to_otlp).collect() }))
        }
        Value::KvList(kvs) => Some(any_value::Value::KvlistValue(pc::KeyValueList { values: attrs_to_otlp(kvs) })),
    };
    pc::AnyValue { value }
}

/// Converts model attributes back to OTLP.
pub fn attrs_to_otlp(attrs: &[KeyValue]) -> Vec<pc::KeyValue> {
    attrs
        .iter()
        .map(|kv| pc::KeyValue {
            key: kv.key.as_str().to_owned(),
            value: Some(value_to_otlp(&kv.value)),
            key_strindex: 0,
        })
        .collect()
}

/// Converts one span back to an OTLP span (resource and scope are grouped by [`to_otlp`]).
pub fn span_to_otlp(s: &Span) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.clone(),
        flags: s.flags,
        name: s.name.as_str().to_owned(),
        kind: s.kind.0,
        start_time_unix_nano: s.start_unix_nanos,
        end_time_unix_nano: s.end_unix_nanos,
        attributes: attrs_to_otlp(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| pt::span::Event {
                time_unix_nano: e.time_unix_nanos,
                name: e.name.as_str().to_owned(),
                attributes: attrs_to_otlp(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id.clone(),
                span_id: l.span_id.clone(),
                trace_state: l.trace_state.clone(),
                attributes: attrs_to_otlp(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: if s.status_code == StatusCode::UNSET && s.status_message.is_empty() {
            None
        } else {
            Some(pt::Status { message: s.status_message.clone(), code: s.status_code.0 })
        },
    }
}

/// Converts spans back into OTLP `ResourceSpans`, one per distinct resource and one `ScopeSpans` per distinct
/// scope within it, in order of first appearance.
pub fn to_otlp(spans: &[Span]) -> Vec<pt::ResourceSpans> {
    type ScopeGroup = (Arc<Scope>, Vec<pt::Span>);
    let mut out: Vec<(Arc<Resource>, Vec<ScopeGroup>)> = Vec::new();
    for s in spans {
        let ri = match out.iter().position(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == *s.resource) {
            Some(i) => i,
            None => {
                out.push((s.resource.clone(), Vec::new()));
                out.len() - 1
            }
        };
        let scopes = &mut out[ri].1;
        let si = match scopes.iter().position(|(sc, _)| Arc::ptr_eq(sc, &s.scope) || **sc == *s.scope) {
            Some(i) => i,
            None => {
                scopes.push((s.scope.clone(), Vec::new()));
                scopes.len() - 1
            }
        };
        scopes[si].1.push(span_to_otlp(s));
    }
    out.into_iter()
        .map(|(r, scopes)| pt::ResourceSpans {
            resource: Some(pr::Resource {
                attributes: attrs_to_otlp(&r.attributes),
                dropped_attributes_count: r.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            schema_url: r.schema_url.clone(),
            scope_spans: scopes
                .into_iter()
                .map(|(sc, spans)| pt::ScopeSpans {
                    scope: Some(pc::InstrumentationScope {
                        name: sc.name.clone(),
                        version: sc.version.clone(),
                        attributes: attrs_to_otlp(&sc.attributes),
                        dropped_attributes_count: sc.dropped_attributes_count,
                    }),
                    schema_url: sc.schema_url.clone(),
                    spans,
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp_span(trace: Vec<u8>, span: Vec<u8>, name: &str) -> pt::Span {
        pt::Span {
            trace_id: trace,
            span_id: span,
            name: name.into(),
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            ..Default::default()
        }
    }

    fn request(spans: Vec<pt::Span>) -> Vec<pt::ResourceSpans> {
        vec![pt::ResourceSpans {
            resource: Some(pr::Resource {
                attributes: vec![pc::KeyValue {
                    key: "service.name".into(),
                    value: Some(pc::AnyValue { value: Some(any_value::Value::StringValue("svc".into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![pt::ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }]
    }

    #[test]
    fn rejects_bad_ids_and_names_but_keeps_the_rest() {
        let spans = vec![
            otlp_span(vec![1; 16], vec![1; 8], "ok"),
            otlp_span(vec![0; 16], vec![1; 8], "zero trace"),
            otlp_span(vec![1; 15], vec![1; 8], "short trace"),
            otlp_span(vec![1; 16], vec![0; 8], "zero span"),
            otlp_span(vec![1; 16], vec![1; 9], "long span"),
            otlp_span(vec![1; 16], vec![2; 8], ""),
        ];
        let c = convert(request(spans), &Limits::default());
        assert_eq!(c.spans.len(), 1);
        assert_eq!(c.rejected_count(), 5);
        assert_eq!(c.rejected[&RejectReason::InvalidTraceId], 2);
        assert_eq!(c.rejected[&RejectReason::InvalidSpanId], 2);
        assert_eq!(c.rejected[&RejectReason::MissingName], 1);
        let msg = c.rejection_message();
        assert!(msg.contains("2 span(s): trace ID must be 16 bytes"), "{msg}");
        assert_eq!(c.spans[0].service_name(), "svc");
    }

    #[test]
    fn end_before_start_is_clamped_with_a_warning() {
        let mut s = otlp_span(vec![1; 16], vec![1; 8], "x");
        s.end_time_unix_nano = 5;
        let c = convert(request(vec![s]), &Limits::default());
        assert_eq!(c.spans[0].duration_nanos(), 0);
        assert_eq!(c.spans[0].end_unix_nanos, 10);
        assert!(c.spans[0].warnings[0].contains("before start"));
    }

    #[test]
    fn attributes_over_limits_are_truncated_with_warnings() {
        let mut s = otlp_span(vec![1; 16], vec![1; 8], "x");
        for i in 0..5 {
            s.attributes.push(pc::KeyValue {
                key: format!("k{i}"),
                value: Some(pc::AnyValue { value: Some(any_value::Value::StringValue("é".repeat(10))) }),
                key_strindex: 0,
            });
        }
        let limits = Limits { max_attributes: 3, max_attribute_value_bytes: 5, ..Limits::default() };
        let c = convert(request(vec![s]), &limits);
        let span = &c.spans[0];
        assert_eq!(span.attributes.len(), 3);
        assert_eq!(span.dropped_attributes_count, 2);
        assert_eq!(span.attributes[0].value, Value::Str("éé".into()));
        assert_eq!(span.warnings.len(), 4, "{:?}", span.warnings);
    }

    #[test]
    fn events_and_links_over_limits_are_dropped_and_counted() {
        let mut s = otlp_span(vec![1; 16], vec![1; 8], "x");
        s.dropped_events_count = 1;
        s.events = (0..4).map(|i| pt::span::Event { time_unix_nano: i, ..Default::default() }).collect();
        s.links = (0..3).map(|_| pt::span::Link::default()).collect();
        let limits = Limits { max_events: 2, max_links: 1, ..Limits::default() };
        let c = convert(request(vec![s]), &limits);
        let span = &c.spans[0];
        assert_eq!((span.events.len(), span.dropped_events_count), (2, 3));
        assert_eq!((span.links.len(), span.dropped_links_count), (1, 2));
        assert!(span.warnings.iter().any(|w| w == "2 event(s) over the limit of 2 dropped"), "{:?}", span.warnings);
    }

    #[test]
    fn round_trips_to_otlp() {
        let mut s = otlp_span(vec![1; 16], vec![1; 8], "x");
        s.status = Some(pt::Status { code: 2, message: "boom".into() });
        s.kind = 2;
        s.events.push(pt::span::Event { time_unix_nano: 15, name: "e".into(), ..Default::default() });
        let req = request(vec![s]);
        let c = convert(req.clone(), &Limits::default());
        assert_eq!(to_otlp(&c.spans)[0].scope_spans[0].spans, req[0].scope_spans[0].spans);
    }
}
