//! An OTLP `ExportTraceServiceRequest` decoded straight from its protobuf bytes into model spans, without prost's
//! intermediate structs: span names, attribute keys and short values go from the request buffer into inline
//! [`CompactString`]s, IDs are read in place, and a span's attributes take one allocation.
//!
//! Wire format: <https://protobuf.dev/programming-guides/encoding/>; messages and field numbers:
//! `opentelemetry/proto/{collector/trace,trace,common,resource}/v1/*.proto` (opentelemetry-proto 1.x). The
//! decoder accepts and rejects what prost's generated decoder does: unknown fields are skipped (groups too), a
//! known field with the wrong wire type, a truncated field, a length past its message, invalid UTF-8 in a string
//! and nesting deeper than prost's recursion limit (100) are errors, a repeated singular field keeps its last
//! value and a repeated message field is merged into the first. Fields are read by [`skein_proto::wire::Fields`],
//! the field reader the agent's routing uses too; the proptests below and the fuzz check `otlp_protobuf` hold the
//! decoder equal to prost + [`super::convert`].

use std::sync::Arc;

use skein_proto::wire::{Fields, RECURSION_LIMIT, WireValue};

use super::{Converted, Limits, SpanParts, finish_resource, finish_scope};
use crate::{CompactString, Event, KeyValue, Link, Scope, Value};

/// Decoded resources and scopes shared across requests, keyed by their protobuf encoding: an SDK sends the same
/// resource and scope with every export, so after the first request they are neither decoded nor allocated
/// again, and every span of that process, from any request, points at the same `Arc` (which the index's and the
/// codec's per-batch process lookups key on). Bounded by bytes (encoding plus decoded size); entries are evicted
/// by quick_cache's CLOCK-Pro policy. One instance serves one set of [`Limits`] (limits shape the decoded value).
pub struct Processes {
    resources: quick_cache::sync::Cache<Vec<u8>, Interned<crate::Resource>, ByteWeight>,
    scopes: quick_cache::sync::Cache<Vec<u8>, Interned<Scope>, ByteWeight>,
}

/// A decoded resource or scope and the warnings its limits produced.
struct Interned<T> {
    value: Arc<T>,
    warnings: Arc<[String]>,
    bytes: u64,
}

impl<T> Clone for Interned<T> {
    fn clone(&self) -> Self {
        Self { value: self.value.clone(), warnings: self.warnings.clone(), bytes: self.bytes }
    }
}

#[derive(Clone)]
struct ByteWeight;

impl<T> quick_cache::Weighter<Vec<u8>, Interned<T>> for ByteWeight {
    fn weight(&self, key: &Vec<u8>, value: &Interned<T>) -> u64 {
        key.len() as u64 + value.bytes
    }
}

impl Processes {
    /// Room for `max_bytes` (split evenly between resources and scopes).
    pub fn new(max_bytes: u64) -> Self {
        let half = (max_bytes / 2).max(1);
        // quick_cache sizes its tables from an item estimate: processes of about 1 KiB.
        let items = usize::try_from(half / 1024).unwrap_or(usize::MAX).max(16);
        Self {
            resources: quick_cache::sync::Cache::with_weighter(items, half, ByteWeight),
            scopes: quick_cache::sync::Cache::with_weighter(items, half, ByteWeight),
        }
    }

    /// Bytes held (keys plus estimated decoded sizes).
    pub fn weight_bytes(&self) -> u64 {
        self.resources.weight() + self.scopes.weight()
    }
}

/// Rough heap bytes of decoded attributes (for cache weights).
fn attributes_bytes(attributes: &[KeyValue]) -> u64 {
    attributes.iter().map(|kv| 64 + kv.key.len() as u64 + value_bytes(&kv.value)).sum()
}

fn value_bytes(v: &Value) -> u64 {
    match v {
        Value::Str(s) => s.len() as u64,
        Value::Bytes(b) => b.len() as u64,
        Value::Array(items) => items.iter().map(|v| 32 + value_bytes(v)).sum(),
        Value::KvList(kvs) => attributes_bytes(kvs),
        _ => 0,
    }
}

/// Why an export request's bytes are not a valid `ExportTraceServiceRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The message or field being read, as `Message.field` (for example `Span.name`).
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for DecodeError {}

fn error<T>(field: &'static str, reason: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError { field, reason: reason.into() })
}

/// Decodes the protobuf encoding of an `ExportTraceServiceRequest` and validates its spans: the same
/// [`Converted`] as prost's decoding followed by [`super::convert`]. Resources and scopes seen before are taken
/// from `processes` (which must have served the same `limits`).
///
/// # Errors
/// [`DecodeError`] naming the field when the bytes are not a valid request; nothing of the request is returned
/// then.
pub fn decode_export(buf: &[u8], limits: &Limits, processes: &Processes) -> Result<Converted, DecodeError> {
    let mut out = Converted::default();
    let mut scratch = Vec::new();
    let mut r = Msg::new(buf, 0, "ExportTraceServiceRequest");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => {
                let rs = message(wire, 0, "ExportTraceServiceRequest.resource_spans")?;
                resource_spans(rs, 1, limits, processes, &mut out, &mut scratch)?;
            }
            _ => r.unknown()?,
        }
    }
    Ok(out)
}

/// The shape `ResourceSpans` and `ScopeSpans` share: a head message (1: the resource or scope), repeated items (2:
/// scope spans or spans) and `schema_url` (3), with the names their errors carry.
struct Envelope {
    message: &'static str,
    head: &'static str,
    items: &'static str,
    schema_url: &'static str,
}

const RESOURCE_SPANS: Envelope = Envelope {
    message: "ResourceSpans",
    head: "ResourceSpans.resource",
    items: "ResourceSpans.scope_spans",
    schema_url: "ResourceSpans.schema_url",
};

const SCOPE_SPANS: Envelope = Envelope {
    message: "ScopeSpans",
    head: "ScopeSpans.scope",
    items: "ScopeSpans.spans",
    schema_url: "ScopeSpans.schema_url",
};

impl Envelope {
    /// The head's occurrences (protobuf merges several) and the schema URL. These may follow the items on the
    /// wire, so they are read in a pass of their own before the items.
    fn head<'a>(&self, buf: &'a [u8], depth: u32) -> Result<(Vec<&'a [u8]>, &'a str), DecodeError> {
        let (mut head, mut schema_url) = (Vec::new(), "");
        let mut r = Msg::new(buf, depth, self.message);
        while let Some((tag, wire)) = r.next()? {
            match tag {
                1 => head.push(message(wire, depth, self.head)?),
                2 => {
                    len(wire, self.items)?;
                }
                3 => schema_url = string(wire, self.schema_url)?,
                _ => r.unknown()?,
            }
        }
        Ok((head, schema_url))
    }

    /// Calls `f` with each item's bytes, in wire order.
    fn each_item<'a>(
        &self,
        buf: &'a [u8],
        depth: u32,
        mut f: impl FnMut(&'a [u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut r = Msg::new(buf, depth, self.message);
        while let Some((tag, wire)) = r.next()? {
            match tag {
                2 => f(message(wire, depth, self.items)?)?,
                _ => r.unknown()?,
            }
        }
        Ok(())
    }
}

/// One `ResourceSpans` at `depth`.
fn resource_spans(
    buf: &[u8],
    depth: u32,
    limits: &Limits,
    processes: &Processes,
    out: &mut Converted,
    scratch: &mut Vec<KeyValue>,
) -> Result<(), DecodeError> {
    let (encoded, schema_url) = RESOURCE_SPANS.head(buf, depth)?;
    let resource = intern(
        out,
        &processes.resources,
        &encoded,
        |r| r.schema_url == schema_url,
        || {
            let (mut attributes, mut dropped) = (Vec::new(), 0);
            for part in &encoded {
                resource(part, depth + 1, &mut attributes, &mut dropped)?;
            }
            let mut warnings = Vec::new();
            let resource = finish_resource(attributes, dropped, schema_url.to_owned(), limits, &mut warnings);
            let bytes = attributes_bytes(&resource.attributes) + schema_url.len() as u64;
            Ok((resource, warnings, bytes))
        },
    )?;
    RESOURCE_SPANS.each_item(buf, depth, |ss| scope_spans(ss, depth + 1, &resource, limits, processes, out, scratch))
}

/// The decoded resource or scope sent as `encoded` (the message's occurrences; protobuf merges several), from
/// `cache` when it holds it with the same schema URL (`same`), else made by `decode` and kept when sent whole.
fn intern<T>(
    out: &mut Converted,
    cache: &quick_cache::sync::Cache<Vec<u8>, Interned<T>, ByteWeight>,
    encoded: &[&[u8]],
    same: impl Fn(&T) -> bool,
    decode: impl FnOnce() -> Result<(T, Vec<String>, u64), DecodeError>,
) -> Result<Interned<T>, DecodeError> {
    let key = match encoded {
        [one] => Some(*one),
        _ => None,
    };
    if let Some(hit) = key.and_then(|k| cache.get(k)).filter(|hit| same(&hit.value)) {
        out.processes_reused += 1;
        return Ok(hit);
    }
    out.processes_decoded += 1;
    let (value, warnings, bytes) = decode()?;
    let interned = Interned { value: Arc::new(value), warnings: warnings.into(), bytes: bytes + 128 };
    if let Some(key) = key {
        cache.insert(key.to_vec(), interned.clone());
    }
    Ok(interned)
}

/// `Resource`: attributes (1), dropped_attributes_count (2), entity_refs (3, checked and not kept: the model has
/// no place for them, as [`super::convert`] drops them).
fn resource(buf: &[u8], depth: u32, attributes: &mut Vec<KeyValue>, dropped: &mut u32) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "Resource");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => attributes.push(key_value(message(wire, depth, "Resource.attributes")?, depth + 1)?),
            2 => *dropped = varint(wire, "Resource.dropped_attributes_count")? as u32,
            3 => entity_ref(message(wire, depth, "Resource.entity_refs")?, depth + 1)?,
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// `EntityRef`: only checked (schema_url 1, type 2, id_keys 3, description_keys 4 are strings).
fn entity_ref(buf: &[u8], depth: u32) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "EntityRef");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1..=4 => {
                string(wire, "EntityRef")?;
            }
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// One `ScopeSpans` at `depth`, under `resource`.
fn scope_spans(
    buf: &[u8],
    depth: u32,
    resource: &Interned<crate::Resource>,
    limits: &Limits,
    processes: &Processes,
    out: &mut Converted,
    scratch: &mut Vec<KeyValue>,
) -> Result<(), DecodeError> {
    let (encoded, schema_url) = SCOPE_SPANS.head(buf, depth)?;
    let scope = intern(
        out,
        &processes.scopes,
        &encoded,
        |s| s.schema_url == schema_url,
        || {
            let mut scope = Scope { schema_url: schema_url.to_owned(), ..Scope::default() };
            for part in &encoded {
                instrumentation_scope(part, depth + 1, &mut scope)?;
            }
            let mut warnings = Vec::new();
            let scope = finish_scope(scope, limits, &mut warnings);
            let bytes = attributes_bytes(&scope.attributes)
                + (scope.name.len() + scope.version.len() + schema_url.len()) as u64;
            Ok((scope, warnings, bytes))
        },
    )?;
    // A span inherits the resource's warnings, then the scope's.
    let warnings: Vec<String> = resource.warnings.iter().chain(scope.warnings.iter()).cloned().collect();
    SCOPE_SPANS.each_item(buf, depth, |bytes| {
        let parts = span(bytes, depth + 1, scratch)?;
        out.push(parts.finish(&resource.value, &scope.value, limits, &warnings));
        Ok(())
    })
}

/// `InstrumentationScope`: name (1), version (2), attributes (3), dropped_attributes_count (4).
fn instrumentation_scope(buf: &[u8], depth: u32, scope: &mut Scope) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "InstrumentationScope");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => scope.name = string(wire, "InstrumentationScope.name")?.to_owned(),
            2 => scope.version = string(wire, "InstrumentationScope.version")?.to_owned(),
            3 => scope.attributes.push(key_value(message(wire, depth, "InstrumentationScope.attributes")?, depth + 1)?),
            4 => scope.dropped_attributes_count = varint(wire, "InstrumentationScope.dropped_attributes_count")? as u32,
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// One `Span` (field numbers in `trace.proto`). Its attributes gather in `scratch` and are moved into one
/// exactly sized vector at the end.
fn span<'a>(buf: &'a [u8], depth: u32, scratch: &mut Vec<KeyValue>) -> Result<SpanParts<'a>, DecodeError> {
    let mut p = SpanParts::default();
    scratch.clear();
    let mut r = Msg::new(buf, depth, "Span");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => p.trace_id = len(wire, "Span.trace_id")?,
            2 => p.span_id = len(wire, "Span.span_id")?,
            3 => p.trace_state = string(wire, "Span.trace_state")?.to_owned(),
            4 => p.parent_span_id = len(wire, "Span.parent_span_id")?.to_vec(),
            5 => p.name = string(wire, "Span.name")?.into(),
            6 => p.kind = varint(wire, "Span.kind")? as i32,
            7 => p.start_unix_nanos = fixed64(wire, "Span.start_time_unix_nano")?,
            8 => p.end_unix_nanos = fixed64(wire, "Span.end_time_unix_nano")?,
            9 => scratch.push(key_value(message(wire, depth, "Span.attributes")?, depth + 1)?),
            10 => p.dropped_attributes_count = varint(wire, "Span.dropped_attributes_count")? as u32,
            11 => p.events.push(event(message(wire, depth, "Span.events")?, depth + 1)?),
            12 => p.dropped_events_count = varint(wire, "Span.dropped_events_count")? as u32,
            13 => p.links.push(link(message(wire, depth, "Span.links")?, depth + 1)?),
            14 => p.dropped_links_count = varint(wire, "Span.dropped_links_count")? as u32,
            15 => status(message(wire, depth, "Span.status")?, depth + 1, &mut p.status_code, &mut p.status_message)?,
            16 => p.flags = fixed32(wire, "Span.flags")?,
            _ => r.unknown()?,
        }
    }
    // Moved into an exactly sized vector; `scratch` keeps its capacity for the next span.
    p.attributes = Vec::with_capacity(scratch.len());
    p.attributes.append(scratch);
    Ok(p)
}

/// `Status`: message (2), code (3).
fn status(buf: &[u8], depth: u32, code: &mut i32, message: &mut String) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "Status");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            2 => *message = string(wire, "Status.message")?.to_owned(),
            3 => *code = varint(wire, "Status.code")? as i32,
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// `Span.Event`: time_unix_nano (1), name (2), attributes (3), dropped_attributes_count (4).
fn event(buf: &[u8], depth: u32) -> Result<Event, DecodeError> {
    let mut e = Event::default();
    let mut r = Msg::new(buf, depth, "Event");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => e.time_unix_nanos = fixed64(wire, "Event.time_unix_nano")?,
            2 => e.name = string(wire, "Event.name")?.into(),
            3 => e.attributes.push(key_value(message(wire, depth, "Event.attributes")?, depth + 1)?),
            4 => e.dropped_attributes_count = varint(wire, "Event.dropped_attributes_count")? as u32,
            _ => r.unknown()?,
        }
    }
    Ok(e)
}

/// `Span.Link`: trace_id (1), span_id (2), trace_state (3), attributes (4), dropped_attributes_count (5), flags (6).
fn link(buf: &[u8], depth: u32) -> Result<Link, DecodeError> {
    let mut l = Link::default();
    let mut r = Msg::new(buf, depth, "Link");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => l.trace_id = len(wire, "Link.trace_id")?.to_vec(),
            2 => l.span_id = len(wire, "Link.span_id")?.to_vec(),
            3 => l.trace_state = string(wire, "Link.trace_state")?.to_owned(),
            4 => l.attributes.push(key_value(message(wire, depth, "Link.attributes")?, depth + 1)?),
            5 => l.dropped_attributes_count = varint(wire, "Link.dropped_attributes_count")? as u32,
            6 => l.flags = fixed32(wire, "Link.flags")?,
            _ => r.unknown()?,
        }
    }
    Ok(l)
}

/// `KeyValue`: key (1), value (2, merged when repeated), key_strindex (3, profiles only: checked, not kept).
fn key_value(buf: &[u8], depth: u32) -> Result<KeyValue, DecodeError> {
    let mut key = CompactString::default();
    let mut value = Value::Empty;
    let mut r = Msg::new(buf, depth, "KeyValue");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => key = string(wire, "KeyValue.key")?.into(),
            2 => any_value(message(wire, depth, "KeyValue.value")?, depth + 1, &mut value)?,
            3 => {
                varint(wire, "KeyValue.key_strindex")?;
            }
            _ => r.unknown()?,
        }
    }
    Ok(KeyValue { key, value })
}

/// `AnyValue`, merged into `value`: the last field of the `value` oneof wins, except that an array or kvlist
/// following one of its kind is appended to it (protobuf's merge of a message field). `string_value_strindex`
/// (8) refers to a profiles string table a trace has none of, so it reads as empty, as in [`super::convert`].
fn any_value(buf: &[u8], depth: u32, value: &mut Value) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "AnyValue");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => *value = Value::Str(string(wire, "AnyValue.string_value")?.into()),
            2 => *value = Value::Bool(varint(wire, "AnyValue.bool_value")? != 0),
            3 => *value = Value::Int(varint(wire, "AnyValue.int_value")? as i64),
            4 => *value = Value::Double(f64::from_bits(fixed64(wire, "AnyValue.double_value")?)),
            5 => {
                let inner = message(wire, depth, "AnyValue.array_value")?;
                if !matches!(value, Value::Array(_)) {
                    *value = Value::Array(Vec::new());
                }
                if let Value::Array(items) = value {
                    array_value(inner, depth + 1, items)?;
                }
            }
            6 => {
                let inner = message(wire, depth, "AnyValue.kvlist_value")?;
                if !matches!(value, Value::KvList(_)) {
                    *value = Value::KvList(Vec::new());
                }
                if let Value::KvList(kvs) = value {
                    key_value_list(inner, depth + 1, kvs)?;
                }
            }
            7 => *value = Value::Bytes(len(wire, "AnyValue.bytes_value")?.to_vec()),
            8 => {
                varint(wire, "AnyValue.string_value_strindex")?;
                *value = Value::Empty;
            }
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// `ArrayValue`: values (1), appended to `items`.
fn array_value(buf: &[u8], depth: u32, items: &mut Vec<Value>) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "ArrayValue");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => {
                let mut item = Value::Empty;
                any_value(message(wire, depth, "ArrayValue.values")?, depth + 1, &mut item)?;
                items.push(item);
            }
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// `KeyValueList`: values (1), appended to `kvs`.
fn key_value_list(buf: &[u8], depth: u32, kvs: &mut Vec<KeyValue>) -> Result<(), DecodeError> {
    let mut r = Msg::new(buf, depth, "KeyValueList");
    while let Some((tag, wire)) = r.next()? {
        match tag {
            1 => kvs.push(key_value(message(wire, depth, "KeyValueList.values")?, depth + 1)?),
            _ => r.unknown()?,
        }
    }
    Ok(())
}

/// The fields of one message at `depth`, errors named after the message.
struct Msg<'a> {
    fields: Fields<'a>,
    depth: u32,
    name: &'static str,
}

impl<'a> Msg<'a> {
    fn new(buf: &'a [u8], depth: u32, name: &'static str) -> Self {
        Self { fields: Fields::at_depth(buf, 0, depth), depth, name }
    }

    /// The next field's number and value.
    fn next(&mut self) -> Result<Option<(u32, WireValue<'a>)>, DecodeError> {
        match self.fields.next_field() {
            Ok(field) => Ok(field.map(|f| (f.number, f.value))),
            Err(e) => error(self.name, e.what),
        }
    }

    /// Passes over an unknown field, as prost's `skip_field` does (which refuses at the recursion limit).
    fn unknown(&self) -> Result<(), DecodeError> {
        if self.depth >= RECURSION_LIMIT {
            return error(self.name, "recursion limit reached");
        }
        Ok(())
    }
}

fn wire_type_error<T>(v: WireValue<'_>, want: u8, field: &'static str) -> Result<T, DecodeError> {
    error(field, format!("invalid wire type {} (expected {want})", v.wire_type()))
}

/// A length-delimited field's bytes.
fn len<'a>(v: WireValue<'a>, field: &'static str) -> Result<&'a [u8], DecodeError> {
    match v {
        WireValue::Len(bytes) => Ok(bytes),
        _ => wire_type_error(v, 2, field),
    }
}

/// A nested message's bytes, read by a message at `depth`.
fn message<'a>(v: WireValue<'a>, depth: u32, field: &'static str) -> Result<&'a [u8], DecodeError> {
    let bytes = len(v, field)?;
    if depth >= RECURSION_LIMIT {
        return error(field, "recursion limit reached");
    }
    Ok(bytes)
}

fn string<'a>(v: WireValue<'a>, field: &'static str) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(len(v, field)?).or_else(|_| error(field, "invalid string value: data is not UTF-8 encoded"))
}

fn varint(v: WireValue<'_>, field: &'static str) -> Result<u64, DecodeError> {
    match v {
        WireValue::Varint(n) => Ok(n),
        _ => wire_type_error(v, 0, field),
    }
}

fn fixed64(v: WireValue<'_>, field: &'static str) -> Result<u64, DecodeError> {
    match v {
        WireValue::Fixed64(n) => Ok(n),
        _ => wire_type_error(v, 1, field),
    }
}

fn fixed32(v: WireValue<'_>, field: &'static str) -> Result<u32, DecodeError> {
    match v {
        WireValue::Fixed32(n) => Ok(n),
        _ => wire_type_error(v, 5, field),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;
    use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
    use skein_proto::otlp_common::{self as pc, any_value};
    use skein_proto::otlp_resource as pr;
    use skein_proto::otlp_trace as pt;

    use super::*;
    use crate::otlp::convert;

    const VARINT: u8 = 0;
    const FIXED64: u8 = 1;
    const LEN: u8 = 2;
    const START_GROUP: u8 = 3;
    const END_GROUP: u8 = 4;
    const FIXED32: u8 = 5;

    /// Small limits, so that generated requests cross every one of them.
    fn limits() -> Limits {
        Limits { max_attributes: 3, max_attribute_value_bytes: 8, max_events: 2, max_links: 1 }
    }

    /// What prost's decoding followed by `convert` makes of `bytes`: the reference [`decode_export`] must equal.
    fn reference(bytes: &[u8], limits: &Limits) -> Option<Converted> {
        ExportTraceServiceRequest::decode(bytes).ok().map(|r| convert(r.resource_spans, limits))
    }

    /// `decode_export` agrees with [`reference`], on first sight of the request's resources and scopes and again
    /// when they come from the cache.
    fn assert_same(bytes: &[u8], limits: &Limits) {
        let processes = Processes::new(1 << 20);
        let want = reference(bytes, limits);
        for pass in ["decoded", "cached"] {
            match (&want, decode_export(bytes, limits, &processes)) {
                (None, Err(_)) => {}
                (Some(want), Ok(got)) => {
                    assert_eq!(got.spans, want.spans, "{pass} spans of {bytes:02x?}");
                    assert_eq!(got.rejected, want.rejected, "{pass} rejections of {bytes:02x?}");
                }
                (want, got) => {
                    panic!("prost accepted: {}, decode_export: {got:?}, input {bytes:02x?}", want.is_some())
                }
            }
        }
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// One length-delimited field.
    fn field(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(tag) << 3 | u64::from(LEN), &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn any_value_strategy() -> impl Strategy<Value = pc::AnyValue> {
        let leaf = prop_oneof![
            Just(None),
            "[a-zé]{0,12}".prop_map(|s| Some(any_value::Value::StringValue(s))),
            any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
            any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
            (-1e9f64..1e9).prop_map(|d| Some(any_value::Value::DoubleValue(d))),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Some(any_value::Value::BytesValue(b))),
            any::<i32>().prop_map(|i| Some(any_value::Value::StringValueStrindex(i))),
        ]
        .prop_map(|value| pc::AnyValue { value });
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3)
                    .prop_map(|values| any_value::Value::ArrayValue(pc::ArrayValue { values })),
                proptest::collection::vec(("[a-z]{1,4}", inner), 0..3).prop_map(|kvs| {
                    any_value::Value::KvlistValue(pc::KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, v)| pc::KeyValue { key, value: Some(v), key_strindex: 0 })
                            .collect(),
                    })
                }),
            ]
            .prop_map(|v| pc::AnyValue { value: Some(v) })
        })
    }

    fn attrs_strategy() -> impl Strategy<Value = Vec<pc::KeyValue>> {
        proptest::collection::vec(
            ("[a-z.]{0,6}", proptest::option::weighted(0.9, any_value_strategy()), 0..2i32)
                .prop_map(|(key, value, key_strindex)| pc::KeyValue { key, value, key_strindex }),
            0..5,
        )
    }

    /// IDs of the valid length mostly, all-zero or of other lengths sometimes.
    fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), len),
            1 => Just(vec![0; len]),
            1 => proptest::collection::vec(any::<u8>(), 0..20),
        ]
    }

    fn span_strategy() -> impl Strategy<Value = pt::Span> {
        let events = proptest::collection::vec(
            (any::<u64>(), "[a-z]{0,5}", attrs_strategy(), 0..3u32).prop_map(|(t, name, attributes, d)| {
                pt::span::Event { time_unix_nano: t, name, attributes, dropped_attributes_count: d }
            }),
            0..4,
        );
        let links = proptest::collection::vec(
            (id(16), id(8), "[a-z=,]{0,6}", attrs_strategy(), any::<u32>()).prop_map(
                |(t, s, ts, attributes, flags)| pt::span::Link {
                    trace_id: t,
                    span_id: s,
                    trace_state: ts,
                    attributes,
                    dropped_attributes_count: 1,
                    flags,
                },
            ),
            0..3,
        );
        (
            (id(16), id(8), id(8), "[a-z =]{0,6}", any::<u32>(), "[a-zA-Z /]{0,30}", -1..7i32),
            (any::<u64>(), any::<u64>(), attrs_strategy(), 0..3u32, events, links),
            proptest::option::of((-1..4i32, "[a-z ]{0,10}")),
        )
            .prop_map(
                |(
                    (trace_id, span_id, parent, ts, flags, name, kind),
                    (start, end, attributes, da, events, links),
                    status,
                )| {
                    pt::Span {
                        trace_id,
                        span_id,
                        trace_state: ts,
                        parent_span_id: parent,
                        flags,
                        name,
                        kind,
                        start_time_unix_nano: start,
                        end_time_unix_nano: end,
                        attributes,
                        dropped_attributes_count: da,
                        events,
                        dropped_events_count: 1,
                        links,
                        dropped_links_count: 0,
                        status: status.map(|(code, message)| pt::Status { code, message }),
                    }
                },
            )
    }

    /// A scope and its spans, each span sent as one message or as two that protobuf merges.
    type ScopeSpec = (Option<pc::InstrumentationScope>, Vec<(pt::Span, Option<pt::Span>)>);

    /// A `ResourceSpans`, encoded with its fields in reverse order when `reverse` (scope spans before the resource,
    /// spans before the scope) and with some spans sent as two partial messages that protobuf merges.
    fn resource_spans_bytes(resource: &Option<pr::Resource>, scopes: &[ScopeSpec], reverse: bool) -> Vec<u8> {
        let mut fields = Vec::new();
        if let Some(r) = resource {
            fields.push(field(1, &r.encode_to_vec()));
        }
        for (scope, spans) in scopes {
            let mut inner = Vec::new();
            if let Some(s) = scope {
                inner.push(field(1, &s.encode_to_vec()));
            }
            for (span, second) in spans {
                let mut body = span.encode_to_vec();
                if let Some(second) = second {
                    body.extend(second.encode_to_vec());
                }
                inner.push(field(2, &body));
            }
            inner.push(field(3, b"https://opentelemetry.io/schemas/1.26.0"));
            if reverse {
                inner.reverse();
            }
            fields.push(field(2, &inner.concat()));
        }
        fields.push(field(3, b"schema"));
        if reverse {
            fields.reverse();
        }
        field(1, &fields.concat())
    }

    fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
        let resource = proptest::option::of((attrs_strategy(), 0..2u32).prop_map(|(attributes, d)| pr::Resource {
            attributes,
            dropped_attributes_count: d,
            entity_refs: Vec::new(),
        }));
        let scope = proptest::option::of(("[a-z.]{0,8}", "[0-9.]{0,5}", attrs_strategy()).prop_map(
            |(name, version, attributes)| pc::InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            },
        ));
        let spans =
            proptest::collection::vec((span_strategy(), proptest::option::weighted(0.2, span_strategy())), 0..4);
        let rs = (resource, proptest::collection::vec((scope, spans), 0..3), any::<bool>())
            .prop_map(|(r, scopes, reverse)| resource_spans_bytes(&r, &scopes, reverse));
        proptest::collection::vec(rs, 0..3).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Well-formed requests, with fields out of order and messages merged on the wire, decode to what prost
        /// and `convert` make of them, limits and rejections included.
        #[test]
        fn decodes_requests_as_prost_and_convert_do(bytes in request_strategy()) {
            assert_same(&bytes, &limits());
            assert_same(&bytes, &Limits::default());
        }

        /// Damaged requests (bytes flipped, cut, inserted) are refused exactly when prost refuses them, and decode
        /// to the same spans otherwise.
        #[test]
        fn damaged_requests_are_refused_when_prost_refuses_them(
            bytes in request_strategy(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let mut bytes = bytes;
            for (at, byte, how) in edits {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match how {
                    0 => bytes[i] = byte,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, byte),
                }
            }
            assert_same(&bytes, &limits());
        }
    }

    #[test]
    fn a_process_sent_again_is_shared_not_decoded_again() {
        let processes = Processes::new(1 << 20);
        let request = |schema_url: &str| {
            ExportTraceServiceRequest {
                resource_spans: vec![pt::ResourceSpans {
                    resource: Some(pr::Resource {
                        attributes: vec![pc::KeyValue {
                            key: "service.name".into(),
                            value: Some(pc::AnyValue { value: Some(any_value::Value::StringValue("cart".into())) }),
                            key_strindex: 0,
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![pt::ScopeSpans {
                        scope: Some(pc::InstrumentationScope { name: "otelgrpc".into(), ..Default::default() }),
                        spans: vec![pt::Span {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            name: "GetCart".into(),
                            ..Default::default()
                        }],
                        schema_url: String::new(),
                    }],
                    schema_url: schema_url.into(),
                }],
            }
            .encode_to_vec()
        };
        let decode = |bytes: &[u8]| decode_export(bytes, &Limits::default(), &processes).expect("valid");
        let first = decode(&request("s1"));
        assert_eq!((first.processes_decoded, first.processes_reused), (2, 0));
        let again = decode(&request("s1"));
        assert_eq!((again.processes_decoded, again.processes_reused), (0, 2));
        assert!(Arc::ptr_eq(&first.spans[0].resource, &again.spans[0].resource));
        assert!(Arc::ptr_eq(&first.spans[0].scope, &again.spans[0].scope));
        // The same resource bytes under another schema URL are another resource.
        let other = decode(&request("s2"));
        assert_eq!((other.processes_decoded, other.processes_reused), (1, 1));
        assert_eq!(other.spans[0].resource.schema_url, "s2");
        assert_eq!(other.spans[0].service_name(), "cart");
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        let span = pt::Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "n".into(), ..Default::default() };
        let mut body = span.encode_to_vec();
        // Field 99 as varint, fixed64, fixed32 and a group holding a nested group.
        for wire in [VARINT, FIXED64, FIXED32] {
            varint(99 << 3 | u64::from(wire), &mut body);
            body.extend_from_slice(
                &[1, 0, 0, 0, 0, 0, 0, 0][..if wire == VARINT {
                    1
                } else if wire == FIXED32 {
                    4
                } else {
                    8
                }],
            );
        }
        for (tag, wire) in [(98u32, START_GROUP), (97, START_GROUP), (97, END_GROUP), (98, END_GROUP)] {
            varint(u64::from(tag) << 3 | u64::from(wire), &mut body);
        }
        let bytes = field(1, &field(2, &field(2, &body)));
        let converted =
            decode_export(&bytes, &Limits::default(), &Processes::new(1 << 20)).expect("unknown fields are skipped");
        assert_eq!(converted.spans.len(), 1);
        assert_same(&bytes, &Limits::default());
    }

    #[test]
    fn malformed_requests_name_the_field() {
        let span = pt::Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "é".into(), ..Default::default() };
        let mut body = span.encode_to_vec();
        let at = body.len() - 1;
        body[at] = 0xff; // the name's second UTF-8 byte: no longer UTF-8
        let bytes = field(1, &field(2, &field(2, &body)));
        let e = decode_export(&bytes, &Limits::default(), &Processes::new(1 << 20)).expect_err("invalid UTF-8");
        assert_eq!(e.field, "Span.name", "{e}");
        assert!(ExportTraceServiceRequest::decode(bytes.as_slice()).is_err(), "prost refuses it too");

        // `name` (5) sent as a varint.
        let mut body = span.encode_to_vec();
        varint(5 << 3 | u64::from(VARINT), &mut body);
        body.push(1);
        let e = decode_export(&field(1, &field(2, &field(2, &body))), &Limits::default(), &Processes::new(1 << 20))
            .expect_err("wire type");
        assert_eq!((e.field, e.reason.as_str()), ("Span.name", "invalid wire type 0 (expected 2)"));
    }

    #[test]
    fn repeated_message_fields_merge_as_protobuf_merges_them() {
        let kv = |value: any_value::Value| pc::KeyValue {
            key: "k".into(),
            value: Some(pc::AnyValue { value: Some(value) }),
            key_strindex: 0,
        };
        let array = |items: &[i64]| {
            any_value::Value::ArrayValue(pc::ArrayValue {
                values: items.iter().map(|&i| pc::AnyValue { value: Some(any_value::Value::IntValue(i)) }).collect(),
            })
        };
        let list = |keys: &[&str]| {
            any_value::Value::KvlistValue(pc::KeyValueList {
                values: keys.iter().map(|k| pc::KeyValue { key: (*k).into(), value: None, key_strindex: 0 }).collect(),
            })
        };
        let cases = [
            (vec![array(&[1]), array(&[2, 3])], Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)])),
            (
                vec![list(&["a"]), list(&["b"])],
                Value::KvList(vec![KeyValue::new("a", Value::Empty), KeyValue::new("b", Value::Empty)]),
            ),
            (vec![array(&[1]), list(&["a"])], Value::KvList(vec![KeyValue::new("a", Value::Empty)])),
            (
                vec![array(&[1]), any_value::Value::StringValue("s".into()), array(&[2])],
                Value::Array(vec![Value::Int(2)]),
            ),
        ];
        for (parts, want) in cases {
            // One attribute whose KeyValue message arrives in parts: its `value` fields merge.
            let attribute: Vec<u8> = parts.into_iter().flat_map(|v| kv(v).encode_to_vec()).collect();
            let mut span =
                pt::Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "n".into(), ..Default::default() }
                    .encode_to_vec();
            span.extend(field(9, &attribute));
            let bytes = field(1, &field(2, &field(2, &span)));
            assert_same(&bytes, &Limits::default());
            let converted = decode_export(&bytes, &Limits::default(), &Processes::new(1 << 20)).expect("valid");
            assert_eq!(converted.spans[0].attributes, vec![KeyValue::new("k", want)]);
        }
    }

    #[test]
    fn nesting_past_the_recursion_limit_is_refused_as_prost_refuses_it() {
        // request → resource_spans → scope_spans → span → attribute → value (depth 5), then two levels per array
        // (ArrayValue, AnyValue): the limit falls between 47 and 48 arrays.
        for arrays in [46, 47, 48, 49] {
            let mut value = pc::AnyValue { value: Some(any_value::Value::IntValue(1)) };
            for _ in 0..arrays {
                value =
                    pc::AnyValue { value: Some(any_value::Value::ArrayValue(pc::ArrayValue { values: vec![value] })) };
            }
            let span = pt::Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "deep".into(),
                attributes: vec![pc::KeyValue { key: "k".into(), value: Some(value), key_strindex: 0 }],
                ..Default::default()
            };
            let bytes = field(1, &field(2, &field(2, &span.encode_to_vec())));
            assert_same(&bytes, &Limits::default());
        }
    }
}
