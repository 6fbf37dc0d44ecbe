//! OTLP ⇄ model conversion with validation (spec: `opentelemetry/proto/trace/v1/trace.proto`).
//!
//! [`convert`] turns an `ExportTraceServiceRequest`'s `ResourceSpans` into validated [`Span`]s, rejecting spans
//! that cannot be stored (bad IDs, no name) and accepting with a recorded warning spans that can be repaired (end
//! before start, attributes over limits). [`to_otlp`] converts stored spans back into `ResourceSpans`, grouping
//! by resource and scope, so that OTLP → Skein → OTLP is lossless.

mod wire;

pub use wire::{DecodeError, Processes, decode_export};

use std::collections::BTreeMap;
use std::sync::Arc;

use skein_proto::otlp_common::{self as pc, any_value};
use skein_proto::otlp_resource as pr;
use skein_proto::otlp_trace as pt;

use crate::{
    CompactString, Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value,
};

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
    /// Resources and scopes [`decode_export`] took already decoded from its [`Processes`] cache.
    pub processes_reused: u64,
    /// Resources and scopes [`decode_export`] decoded.
    pub processes_decoded: u64,
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

/// Converts OTLP `ResourceSpans` into validated spans. [`decode_export`] gives the same result straight from the
/// protobuf bytes of an `ExportTraceServiceRequest`.
pub fn convert(resource_spans: Vec<pt::ResourceSpans>, limits: &Limits) -> Converted {
    let mut out = Converted::default();
    for rs in resource_spans {
        let mut warnings = Vec::new();
        let resource = Arc::new(match rs.resource {
            Some(r) => finish_resource(
                attrs_from_otlp(r.attributes),
                r.dropped_attributes_count,
                rs.schema_url,
                limits,
                &mut warnings,
            ),
            None => Resource { schema_url: rs.schema_url, ..Resource::default() },
        });
        for ss in rs.scope_spans {
            let mut scope_warnings = warnings.clone();
            let scope = Arc::new(match ss.scope {
                Some(s) => finish_scope(
                    Scope {
                        name: s.name,
                        version: s.version,
                        attributes: attrs_from_otlp(s.attributes),
                        dropped_attributes_count: s.dropped_attributes_count,
                        schema_url: ss.schema_url,
                    },
                    limits,
                    &mut scope_warnings,
                ),
                None => Scope { schema_url: ss.schema_url, ..Scope::default() },
            });
            for span in ss.spans {
                let pt::Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano,
                    end_time_unix_nano,
                    attributes,
                    dropped_attributes_count,
                    events,
                    dropped_events_count,
                    links,
                    dropped_links_count,
                    status,
                } = span;
                let (status_code, status_message) = status.map_or((0, String::new()), |s| (s.code, s.message));
                let parts = SpanParts {
                    trace_id: &trace_id,
                    span_id: &span_id,
                    parent_span_id,
                    trace_state,
                    flags,
                    name: name.into(),
                    kind,
                    start_unix_nanos: start_time_unix_nano,
                    end_unix_nanos: end_time_unix_nano,
                    attributes: attrs_from_otlp(attributes),
                    dropped_attributes_count,
                    events: events
                        .into_iter()
                        .map(|e| Event {
                            time_unix_nanos: e.time_unix_nano,
                            name: e.name.into(),
                            attributes: attrs_from_otlp(e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count,
                    links: links
                        .into_iter()
                        .map(|l| Link {
                            trace_id: l.trace_id,
                            span_id: l.span_id,
                            trace_state: l.trace_state,
                            attributes: attrs_from_otlp(l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                            flags: l.flags,
                        })
                        .collect(),
                    dropped_links_count,
                    status_code,
                    status_message,
                };
                out.push(parts.finish(&resource, &scope, limits, &scope_warnings));
            }
        }
    }
    out
}

impl Converted {
    fn push(&mut self, span: Result<Span, RejectReason>) {
        match span {
            Ok(s) => self.spans.push(s),
            Err(reason) => *self.rejected.entry(reason).or_default() += 1,
        }
    }
}

/// One span as received, before validation and limits: what both decoders ([`convert`] from prost's structs,
/// [`decode_export`] from the protobuf bytes) build, so that [`SpanParts::finish`] is the one definition of what
/// is accepted and how it is repaired. Attribute, event and link lists are as received (no limits applied yet).
#[derive(Default)]
pub(crate) struct SpanParts<'a> {
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) parent_span_id: Vec<u8>,
    pub(crate) trace_state: String,
    pub(crate) flags: u32,
    pub(crate) name: CompactString,
    pub(crate) kind: i32,
    pub(crate) start_unix_nanos: u64,
    pub(crate) end_unix_nanos: u64,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) dropped_attributes_count: u32,
    pub(crate) events: Vec<Event>,
    pub(crate) dropped_events_count: u32,
    pub(crate) links: Vec<Link>,
    pub(crate) dropped_links_count: u32,
    pub(crate) status_code: i32,
    pub(crate) status_message: String,
}

impl SpanParts<'_> {
    /// Validates the span (IDs, name) and applies `limits`, recording a warning for everything repaired (after the
    /// resource's and scope's `inherited_warnings`).
    ///
    /// # Errors
    /// The [`RejectReason`] of a span that cannot be stored.
    pub(crate) fn finish(
        self,
        resource: &Arc<Resource>,
        scope: &Arc<Scope>,
        limits: &Limits,
        inherited_warnings: &[String],
    ) -> Result<Span, RejectReason> {
        let trace_id: [u8; 16] = self.trace_id.try_into().map_err(|_| RejectReason::InvalidTraceId)?;
        if trace_id == [0; 16] {
            return Err(RejectReason::InvalidTraceId);
        }
        let span_id: [u8; 8] = self.span_id.try_into().map_err(|_| RejectReason::InvalidSpanId)?;
        if span_id == [0; 8] {
            return Err(RejectReason::InvalidSpanId);
        }
        if self.name.is_empty() {
            return Err(RejectReason::MissingName);
        }
        let mut warnings = inherited_warnings.to_vec();
        let mut end = self.end_unix_nanos;
        if end < self.start_unix_nanos {
            warnings.push(format!(
                "end time {} is before start time {}; duration clamped to 0",
                self.end_unix_nanos, self.start_unix_nanos
            ));
            end = self.start_unix_nanos;
        }
        let mut attributes = self.attributes;
        let dropped = limit_attrs(&mut attributes, limits, &mut warnings, "span");
        let mut events = self.events;
        let dropped_events_count = limit_list(
            &mut events,
            limits.max_events,
            self.dropped_events_count,
            limits,
            &mut warnings,
            "event",
            |e| (&mut e.attributes, &mut e.dropped_attributes_count),
        );
        let mut links = self.links;
        let dropped_links_count =
            limit_list(&mut links, limits.max_links, self.dropped_links_count, limits, &mut warnings, "link", |l| {
                (&mut l.attributes, &mut l.dropped_attributes_count)
            });
        Ok(Span {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            parent_span_id: self.parent_span_id,
            trace_state: self.trace_state,
            flags: self.flags,
            name: self.name,
            kind: SpanKind(self.kind),
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: end,
            attributes,
            dropped_attributes_count: self.dropped_attributes_count.saturating_add(dropped),
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status_code: StatusCode(self.status_code),
            status_message: self.status_message,
            resource: resource.clone(),
            scope: scope.clone(),
            warnings,
        })
    }
}

/// A resource with `limits` applied to its attributes (warnings recorded in `warnings`).
pub(crate) fn finish_resource(
    mut attributes: Vec<KeyValue>,
    dropped_attributes_count: u32,
    schema_url: String,
    limits: &Limits,
    warnings: &mut Vec<String>,
) -> Resource {
    let dropped = limit_attrs(&mut attributes, limits, warnings, "resource");
    Resource { attributes, dropped_attributes_count: dropped_attributes_count.saturating_add(dropped), schema_url }
}

/// A scope with `limits` applied to its attributes (warnings recorded in `warnings`).
pub(crate) fn finish_scope(mut scope: Scope, limits: &Limits, warnings: &mut Vec<String>) -> Scope {
    let dropped = limit_attrs(&mut scope.attributes, limits, warnings, "scope");
    scope.dropped_attributes_count = scope.dropped_attributes_count.saturating_add(dropped);
    scope
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

/// Caps `list` at `max` items ([`cap_list`]), then applies the attribute limits to each item kept (`attrs` gives
/// an item's attributes and dropped count); returns `dropped` plus the number of items cut.
fn limit_list<T>(
    list: &mut Vec<T>,
    max: usize,
    dropped: u32,
    limits: &Limits,
    warnings: &mut Vec<String>,
    what: &str,
    attrs: impl Fn(&mut T) -> (&mut Vec<KeyValue>, &mut u32),
) -> u32 {
    let dropped = cap_list(list, max, dropped, warnings, what);
    for item in list.iter_mut() {
        let (attributes, item_dropped) = attrs(item);
        let cut = limit_attrs(attributes, limits, warnings, what);
        *item_dropped = item_dropped.saturating_add(cut);
    }
    dropped
}

/// Applies the count and value-size limits to `attrs`, recording warnings; returns how many were dropped.
fn limit_attrs(attrs: &mut Vec<KeyValue>, limits: &Limits, warnings: &mut Vec<String>, what: &str) -> u32 {
    let mut dropped = 0u32;
    if attrs.len() > limits.max_attributes {
        dropped = u32::try_from(attrs.len() - limits.max_attributes).unwrap_or(u32::MAX);
        warnings.push(format!("{dropped} {what} attribute(s) over the limit of {} dropped", limits.max_attributes));
        attrs.truncate(limits.max_attributes);
    }
    for kv in attrs.iter_mut() {
        let mut cut = false;
        limit_value(&mut kv.value, limits.max_attribute_value_bytes, &mut cut);
        if cut {
            warnings.push(format!(
                "{what} attribute {:?} truncated to {} bytes",
                kv.key.as_str(),
                limits.max_attribute_value_bytes
            ));
        }
    }
    dropped
}

/// Cuts string values (at a UTF-8 boundary) and bytes values longer than `max` bytes, nested ones too.
fn limit_value(v: &mut Value, max: usize, cut: &mut bool) {
    match v {
        Value::Str(s) if s.len() > max => {
            let mut at = max;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            s.truncate(at);
            *cut = true;
        }
        Value::Bytes(b) if b.len() > max => {
            b.truncate(max);
            *cut = true;
        }
        Value::Array(items) => items.iter_mut().for_each(|v| limit_value(v, max, cut)),
        Value::KvList(kvs) => kvs.iter_mut().for_each(|kv| limit_value(&mut kv.value, max, cut)),
        _ => {}
    }
}

/// OTLP attributes as model attributes, as received (no limits).
fn attrs_from_otlp(attrs: Vec<pc::KeyValue>) -> Vec<KeyValue> {
    attrs.into_iter().map(|kv| KeyValue { key: kv.key.into(), value: value_from_otlp(kv.value) }).collect()
}

fn value_from_otlp(v: Option<pc::AnyValue>) -> Value {
    match v.and_then(|v| v.value) {
        None => Value::Empty,
        Some(any_value::Value::StringValue(s)) => Value::Str(s.into()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(b),
        Some(any_value::Value::IntValue(i)) => Value::Int(i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(d),
        Some(any_value::Value::BytesValue(b)) => Value::Bytes(b),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.into_iter().map(|v| value_from_otlp(Some(v))).collect())
        }
        // String-table references exist only for OTLP profiles; a trace has no string table to resolve them in.
        Some(any_value::Value::StringValueStrindex(_)) => Value::Empty,
        Some(any_value::Value::KvlistValue(kvs)) => Value::KvList(attrs_from_otlp(kvs.values)),
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
