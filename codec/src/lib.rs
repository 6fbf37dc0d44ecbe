//! The trace-block codec: Skein's own columnar encoding of all spans of one trace (or one late chunk of it).
//!
//! A block is written once by the storage writer and read by every query, so it is optimised for size and for
//! decoding whole. Layout of version 1 (all integers LEB128 varints unless noted; signed ones zig-zag):
//!
//! ```text
//! "SKTB" | version u8 = 1 | zstd( body )
//! body:  trace_id [16] | base_start_nanos | strings | resources | scopes | span_count | columns…
//! strings:   count, then (len, utf-8 bytes)…          — the dictionary: every string is stored once
//! resources: count, then (attrs, dropped, schema_url#)…
//! scopes:    count, then (name#, version#, attrs, dropped, schema_url#)…
//! columns, one after another, each a run of span_count values:
//!   span_id [8] · parent (0 none | 1 raw bytes in parent_raw | k+2 = index k in this block) · parent_raw ·
//!   start − base · end − start (wrapping) · name# · kind · flags · trace_state# · status code · status msg# ·
//!   resource · scope · dropped attrs/events/links · attributes · events · links · warnings
//! value: tag u8 (0 empty, 1 string#, 2 false, 3 true, 4 int, 5 f64 LE, 6 bytes, 7 array, 8 kvlist) then payload
//! ```
//!
//! `#` marks an index into the string dictionary. The codec is lossless for every field of the model (which is
//! itself lossless against OTLP); [`decode`] validates every length and index, so a corrupt block is an error,
//! never a panic.
//!
//! Version 2 ([`v2`], written by [`encode`] and [`encode_with_dict`]) adds shared per-partition dictionaries
//! (strings, whole resources and scopes, span templates), parent deltas, delta-encoded starts and one zstd frame
//! over column-ordered data. Version 1 blocks stay readable:
//! [`decode`] and [`decode_with`] accept both.

use std::collections::HashMap;
use std::sync::Arc;

use skein_model::{Event, KeyValue, Link, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

pub mod v2;

pub use v2::{
    DictEntry, DictLookup, Dictionary, NoDict, SharedDict, Template, VERSION_2, decode_dictionary, dictionary_of,
};

/// Magic bytes at the start of every block.
pub const MAGIC: &[u8; 4] = b"SKTB";
/// The first layout (issue #2); [`encode_v1`] still writes it for compatibility tests and benchmarks.
pub const VERSION_1: u8 = 1;
/// zstd level used for blocks.
pub const ZSTD_LEVEL: i32 = 3;
/// Upper bound on a decoded block body, to refuse decompression bombs.
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// A codec failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The block does not start with the magic bytes.
    #[error("not a trace block (bad magic)")]
    BadMagic,
    /// The block's version is not known to this build.
    #[error("unsupported trace block version {0}")]
    UnsupportedVersion(u8),
    /// The block holds no spans or spans of different traces.
    #[error("a block holds the spans of exactly one trace: {0}")]
    NotOneTrace(String),
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    /// The body is truncated or an index points outside its table.
    #[error("corrupt trace block: {0}")]
    Corrupt(&'static str),
    /// The block references a shared dictionary the reader does not have (or not enough of it).
    #[error("shared dictionary {0:016x} is missing")]
    MissingDictionary(u64),
}

/// Encodes the spans of one trace into a version 2 block that uses no shared dictionary (self-contained).
///
/// # Errors
/// [`CodecError::NotOneTrace`] when `spans` is empty or mixes trace IDs; [`CodecError::Zstd`] if compression fails.
pub fn encode(spans: &[Span]) -> Result<Vec<u8>, CodecError> {
    v2::encode(spans, None)
}

/// Encodes the spans of one trace into a version 2 block that references (and extends) a shared dictionary.
/// New entries must be persisted ([`SharedDict::take_unpersisted`]) with the block.
///
/// # Errors
/// As [`encode`].
pub fn encode_with_dict(spans: &[Span], dict: &mut SharedDict) -> Result<Vec<u8>, CodecError> {
    v2::encode(spans, Some(dict))
}

/// Encodes the spans of one trace into a version 1 block.
///
/// # Errors
/// As [`encode`].
pub fn encode_v1(spans: &[Span]) -> Result<Vec<u8>, CodecError> {
    let first = spans.first().ok_or_else(|| CodecError::NotOneTrace("no spans".into()))?;
    let trace_id = first.trace_id;
    if let Some(other) = spans.iter().find(|s| s.trace_id != trace_id) {
        return Err(CodecError::NotOneTrace(format!("{} and {}", trace_id, other.trace_id)));
    }
    let mut enc = Encoder::default();
    let base = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);

    // Resources and scopes, deduplicated by pointer first, then by value.
    let mut resources: Vec<Arc<Resource>> = Vec::new();
    let mut scopes: Vec<Arc<Scope>> = Vec::new();
    let mut res_idx = Vec::with_capacity(spans.len());
    let mut scope_idx = Vec::with_capacity(spans.len());
    for s in spans {
        res_idx.push(position_or_push(&mut resources, &s.resource));
        scope_idx.push(position_or_push(&mut scopes, &s.scope));
    }
    let mut res_buf = Vec::new();
    put_uvarint(&mut res_buf, resources.len() as u64);
    for r in &resources {
        enc.attrs(&mut res_buf, &r.attributes);
        put_uvarint(&mut res_buf, r.dropped_attributes_count.into());
        enc.string(&mut res_buf, &r.schema_url);
    }
    let mut scope_buf = Vec::new();
    put_uvarint(&mut scope_buf, scopes.len() as u64);
    for sc in &scopes {
        enc.string(&mut scope_buf, &sc.name);
        enc.string(&mut scope_buf, &sc.version);
        enc.attrs(&mut scope_buf, &sc.attributes);
        put_uvarint(&mut scope_buf, sc.dropped_attributes_count.into());
        enc.string(&mut scope_buf, &sc.schema_url);
    }

    let mut index_of: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        index_of.entry(s.span_id).or_insert(i);
    }
    let mut cols: [Vec<u8>; 19] = Default::default();
    for (i, s) in spans.iter().enumerate() {
        cols[0].extend_from_slice(&s.span_id.0);
        match s.parent_span_id.as_slice() {
            [] => put_uvarint(&mut cols[1], 0),
            raw => match raw.try_into().ok().and_then(|id: [u8; 8]| index_of.get(&SpanId(id))) {
                Some(&k) => put_uvarint(&mut cols[1], k as u64 + 2),
                None => {
                    put_uvarint(&mut cols[1], 1);
                    put_bytes(&mut cols[2], raw);
                }
            },
        }
        put_uvarint(&mut cols[3], s.start_unix_nanos - base);
        put_uvarint(&mut cols[4], s.end_unix_nanos.wrapping_sub(s.start_unix_nanos));
        enc.string(&mut cols[5], &s.name);
        put_ivarint(&mut cols[6], s.kind.0.into());
        put_uvarint(&mut cols[7], s.flags.into());
        enc.string(&mut cols[8], &s.trace_state);
        put_ivarint(&mut cols[9], s.status_code.0.into());
        enc.string(&mut cols[10], &s.status_message);
        put_uvarint(&mut cols[11], res_idx[i] as u64);
        put_uvarint(&mut cols[12], scope_idx[i] as u64);
        put_uvarint(&mut cols[13], s.dropped_attributes_count.into());
        put_uvarint(&mut cols[13], s.dropped_events_count.into());
        put_uvarint(&mut cols[13], s.dropped_links_count.into());
        enc.attrs(&mut cols[14], &s.attributes);
        put_uvarint(&mut cols[15], s.events.len() as u64);
        for e in &s.events {
            put_ivarint(&mut cols[15], e.time_unix_nanos.wrapping_sub(s.start_unix_nanos) as i64);
            enc.string(&mut cols[15], &e.name);
            enc.attrs(&mut cols[15], &e.attributes);
            put_uvarint(&mut cols[15], e.dropped_attributes_count.into());
        }
        put_uvarint(&mut cols[16], s.links.len() as u64);
        for l in &s.links {
            put_bytes(&mut cols[16], &l.trace_id);
            put_bytes(&mut cols[16], &l.span_id);
            enc.string(&mut cols[16], &l.trace_state);
            enc.attrs(&mut cols[16], &l.attributes);
            put_uvarint(&mut cols[16], l.dropped_attributes_count.into());
            put_uvarint(&mut cols[16], l.flags.into());
        }
        put_uvarint(&mut cols[17], s.warnings.len() as u64);
        for w in &s.warnings {
            enc.string(&mut cols[17], w);
        }
    }

    let mut body = Vec::with_capacity(64 + cols.iter().map(Vec::len).sum::<usize>());
    body.extend_from_slice(&trace_id.0);
    put_uvarint(&mut body, base);
    put_uvarint(&mut body, enc.strings.len() as u64);
    for s in &enc.strings {
        put_bytes(&mut body, s.as_bytes());
    }
    body.extend_from_slice(&res_buf);
    body.extend_from_slice(&scope_buf);
    put_uvarint(&mut body, spans.len() as u64);
    for c in &cols {
        put_bytes(&mut body, c);
    }
    let mut out = Vec::with_capacity(body.len() / 4 + 8);
    out.extend_from_slice(MAGIC);
    out.push(VERSION_1);
    out.extend_from_slice(&zstd::bulk::compress(&body, ZSTD_LEVEL)?);
    Ok(out)
}

fn position_or_push<T: PartialEq>(list: &mut Vec<Arc<T>>, item: &Arc<T>) -> usize {
    if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, item) || **x == **item) {
        return i;
    }
    list.push(item.clone());
    list.len() - 1
}

fn decompress(block: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut decoder = zstd::stream::read::Decoder::new(block)?;
    let mut body = Vec::new();
    use std::io::Read as _;
    (&mut decoder).take(MAX_BODY_BYTES as u64 + 1).read_to_end(&mut body)?;
    if body.len() > MAX_BODY_BYTES {
        return Err(CodecError::Corrupt("body larger than the limit"));
    }
    Ok(body)
}

/// Decodes a self-contained block (version 1, or version 2 without a shared dictionary) into its spans, in the
/// order they were encoded.
///
/// # Errors
/// [`CodecError::BadMagic`] / [`CodecError::UnsupportedVersion`] for foreign data, [`CodecError::Corrupt`] for a
/// truncated or inconsistent body, [`CodecError::Zstd`] when decompression fails,
/// [`CodecError::MissingDictionary`] when the block needs a shared dictionary (use [`decode_with`]).
pub fn decode(block: &[u8]) -> Result<Vec<Span>, CodecError> {
    decode_with(block, &NoDict)
}

/// Decodes a block of any supported version, resolving shared-dictionary references through `dicts`.
///
/// # Errors
/// As [`decode`]; [`CodecError::MissingDictionary`] when `dicts` lacks the block's dictionary.
pub fn decode_with(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    match block[4] {
        VERSION_1 => decode_v1(block),
        VERSION_2 => v2::decode(block, dicts, MAX_BODY_BYTES),
        v => Err(CodecError::UnsupportedVersion(v)),
    }
}

fn decode_v1(block: &[u8]) -> Result<Vec<Span>, CodecError> {
    let body = decompress(&block[5..])?;
    let mut r = Reader { buf: &body, pos: 0 };
    let trace_id = TraceId(r.array::<16>()?);
    let base = r.uvarint()?;
    let n_strings = r.count()?;
    let mut strings = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        let b = r.bytes()?;
        strings.push(std::str::from_utf8(b).map_err(|_| CodecError::Corrupt("string is not utf-8"))?.to_string());
    }
    let d = Dict { strings, shared: None };
    let n_res = r.count()?;
    let mut resources = Vec::with_capacity(n_res);
    for _ in 0..n_res {
        let attributes = d.attrs(&mut r)?;
        let dropped_attributes_count = r.u32()?;
        let schema_url = d.string(&mut r)?;
        resources.push(Arc::new(Resource { attributes, dropped_attributes_count, schema_url }));
    }
    let n_scopes = r.count()?;
    let mut scopes = Vec::with_capacity(n_scopes);
    for _ in 0..n_scopes {
        let name = d.string(&mut r)?;
        let version = d.string(&mut r)?;
        let attributes = d.attrs(&mut r)?;
        let dropped_attributes_count = r.u32()?;
        let schema_url = d.string(&mut r)?;
        scopes.push(Arc::new(Scope { name, version, attributes, dropped_attributes_count, schema_url }));
    }
    let n = r.count()?;
    let mut cols = Vec::with_capacity(19);
    for _ in 0..19 {
        cols.push(Reader { buf: r.bytes()?, pos: 0 });
    }
    let mut span_ids = Vec::with_capacity(n);
    for _ in 0..n {
        span_ids.push(SpanId(cols[0].array::<8>()?));
    }
    let mut spans = Vec::with_capacity(n);
    for &span_id in &span_ids {
        let parent_span_id = match cols[1].uvarint()? {
            0 => Vec::new(),
            1 => cols[2].bytes()?.to_vec(),
            k => {
                let idx = usize::try_from(k - 2).map_err(|_| CodecError::Corrupt("parent index"))?;
                span_ids.get(idx).ok_or(CodecError::Corrupt("parent index out of range"))?.0.to_vec()
            }
        };
        let start = base.checked_add(cols[3].uvarint()?).ok_or(CodecError::Corrupt("start overflows"))?;
        let end = start.wrapping_add(cols[4].uvarint()?);
        let name = d.string(&mut cols[5])?;
        let kind = SpanKind(cols[6].i32()?);
        let flags = cols[7].u32()?;
        let trace_state = d.string(&mut cols[8])?;
        let status_code = StatusCode(cols[9].i32()?);
        let status_message = d.string(&mut cols[10])?;
        let resource = resources.get(cols[11].count_any()?).ok_or(CodecError::Corrupt("resource index"))?.clone();
        let scope = scopes.get(cols[12].count_any()?).ok_or(CodecError::Corrupt("scope index"))?.clone();
        let dropped_attributes_count = cols[13].u32()?;
        let dropped_events_count = cols[13].u32()?;
        let dropped_links_count = cols[13].u32()?;
        let attributes = d.attrs(&mut cols[14])?;
        let events = d.events(&mut cols[15], start)?;
        let links = d.links(&mut cols[16])?;
        let warnings = d.strings(&mut cols[17])?;
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            start_unix_nanos: start,
            end_unix_nanos: end,
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status_code,
            status_message,
            resource,
            scope,
            warnings,
        });
    }
    Ok(spans)
}

#[derive(Default)]
struct Encoder {
    strings: Vec<String>,
    index: HashMap<String, u64>,
}

impl Encoder {
    fn string(&mut self, buf: &mut Vec<u8>, s: &str) {
        let idx = match self.index.get(s) {
            Some(&i) => i,
            None => {
                let i = self.strings.len() as u64;
                self.strings.push(s.to_string());
                self.index.insert(s.to_string(), i);
                i
            }
        };
        put_uvarint(buf, idx);
    }

    fn attrs(&mut self, buf: &mut Vec<u8>, attrs: &[KeyValue]) {
        put_attrs(buf, attrs, &mut |b, s, _| self.string(b, s));
    }
}

/// Writes an attribute list (count, then key and value per entry) in the layout shared by versions 1 and 2;
/// `string(buf, s, is_key)` writes each string's reference.
fn put_attrs(buf: &mut Vec<u8>, attrs: &[KeyValue], string: &mut dyn FnMut(&mut Vec<u8>, &str, bool)) {
    put_uvarint(buf, attrs.len() as u64);
    for kv in attrs {
        string(buf, &kv.key, true);
        put_value(buf, &kv.value, string);
    }
}

/// Writes one value: tag u8 (0 empty, 1 string, 2 false, 3 true, 4 int, 5 f64 LE, 6 bytes, 7 array, 8 kvlist)
/// then its payload; strings through `string(buf, s, false)` (keys of nested kvlists with `is_key` true).
fn put_value(buf: &mut Vec<u8>, v: &Value, string: &mut dyn FnMut(&mut Vec<u8>, &str, bool)) {
    match v {
        Value::Empty => buf.push(0),
        Value::Str(s) => {
            buf.push(1);
            string(buf, s, false);
        }
        Value::Bool(false) => buf.push(2),
        Value::Bool(true) => buf.push(3),
        Value::Int(i) => {
            buf.push(4);
            put_ivarint(buf, *i);
        }
        Value::Double(d) => {
            buf.push(5);
            buf.extend_from_slice(&d.to_le_bytes());
        }
        Value::Bytes(b) => {
            buf.push(6);
            put_bytes(buf, b);
        }
        Value::Array(items) => {
            buf.push(7);
            put_uvarint(buf, items.len() as u64);
            for item in items {
                put_value(buf, item, string);
            }
        }
        Value::KvList(kvs) => {
            buf.push(8);
            put_attrs(buf, kvs, string);
        }
    }
}

/// String references of a block: version 1 indexes `strings` directly; version 2 (`shared` is `Some`) uses refs,
/// odd for entries of the shared dictionary and even for the block's local `strings`.
struct Dict<'a> {
    strings: Vec<String>,
    shared: Option<&'a [v2::DictEntry]>,
}

/// Maximum nesting of array/kvlist values accepted when decoding (OTLP allows nesting; this bounds recursion).
const MAX_VALUE_DEPTH: usize = 64;

impl Dict<'_> {
    /// A span's events column entry: count, then (time − span start, name#, attrs, dropped)….
    fn events(&self, r: &mut Reader<'_>, span_start: u64) -> Result<Vec<Event>, CodecError> {
        let n = r.count()?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let time_unix_nanos = span_start.wrapping_add(r.ivarint()? as u64);
            let name = self.string(r)?;
            let attributes = self.attrs(r)?;
            let dropped_attributes_count = r.u32()?;
            events.push(Event { time_unix_nanos, name, attributes, dropped_attributes_count });
        }
        Ok(events)
    }

    /// A span's links column entry: count, then (trace_id, span_id, trace_state#, attrs, dropped, flags)….
    fn links(&self, r: &mut Reader<'_>) -> Result<Vec<Link>, CodecError> {
        let n = r.count()?;
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            let trace_id = r.bytes()?.to_vec();
            let span_id = r.bytes()?.to_vec();
            let trace_state = self.string(r)?;
            let attributes = self.attrs(r)?;
            let dropped_attributes_count = r.u32()?;
            let flags = r.u32()?;
            links.push(Link { trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags });
        }
        Ok(links)
    }

    /// A counted list of strings (the warnings column).
    fn strings(&self, r: &mut Reader<'_>) -> Result<Vec<String>, CodecError> {
        let n = r.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string(r)?);
        }
        Ok(out)
    }

    fn string(&self, r: &mut Reader<'_>) -> Result<String, CodecError> {
        let i = r.count_any()?;
        let Some(shared) = self.shared else {
            return self.strings.get(i).cloned().ok_or(CodecError::Corrupt("string index out of range"));
        };
        if i & 1 == 0 {
            return self.strings.get(i >> 1).cloned().ok_or(CodecError::Corrupt("string index out of range"));
        }
        match shared.get(i >> 1) {
            Some(v2::DictEntry::Str(s)) => Ok(s.to_string()),
            Some(_) => Err(CodecError::Corrupt("dictionary entry is not a string")),
            None => Err(CodecError::Corrupt("dictionary reference out of range")),
        }
    }

    fn attrs(&self, r: &mut Reader<'_>) -> Result<Vec<KeyValue>, CodecError> {
        self.attrs_at(r, 0)
    }

    fn attrs_at(&self, r: &mut Reader<'_>, depth: usize) -> Result<Vec<KeyValue>, CodecError> {
        let n = r.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.string(r)?;
            let value = self.value(r, depth)?;
            out.push(KeyValue { key, value });
        }
        Ok(out)
    }

    fn value(&self, r: &mut Reader<'_>, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(CodecError::Corrupt("values nested too deeply"));
        }
        Ok(match r.u8()? {
            0 => Value::Empty,
            1 => Value::Str(self.string(r)?),
            2 => Value::Bool(false),
            3 => Value::Bool(true),
            4 => Value::Int(r.ivarint()?),
            5 => Value::Double(f64::from_le_bytes(r.array::<8>()?)),
            6 => Value::Bytes(r.bytes()?.to_vec()),
            7 => {
                let n = r.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(r, depth + 1)?);
                }
                Value::Array(items)
            }
            8 => Value::KvList(self.attrs_at(r, depth + 1)?),
            _ => return Err(CodecError::Corrupt("unknown value tag")),
        })
    }
}

/// Appends an unsigned LEB128 varint.
pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a signed (zig-zag) LEB128 varint.
pub fn put_ivarint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// A bounds-checked reader over a byte slice.
pub struct Reader<'a> {
    /// The bytes read.
    pub buf: &'a [u8],
    /// The next position.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Corrupt("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned LEB128 varint.
    pub fn uvarint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(CodecError::Corrupt("varint overflows u64"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Corrupt("varint too long"))
    }

    /// A signed (zig-zag) LEB128 varint.
    pub fn ivarint(&mut self) -> Result<i64, CodecError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A varint that fits a `u32`.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.uvarint()?).map_err(|_| CodecError::Corrupt("value exceeds u32"))
    }

    /// A zig-zag varint that fits an `i32`.
    pub fn i32(&mut self) -> Result<i32, CodecError> {
        i32::try_from(self.ivarint()?).map_err(|_| CodecError::Corrupt("value exceeds i32"))
    }

    /// An element count that must be backed by at least one remaining byte per element.
    pub fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.count_any()?;
        if n > self.buf.len().saturating_sub(self.pos) {
            return Err(CodecError::Corrupt("count larger than the remaining bytes"));
        }
        Ok(n)
    }

    /// A count not bounded by the bytes left (items may be empty).
    pub fn count_any(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.uvarint()?).map_err(|_| CodecError::Corrupt("count exceeds usize"))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.count_any()?;
        let end = self.pos.checked_add(n).ok_or(CodecError::Corrupt("length overflows"))?;
        let b = self.buf.get(self.pos..end).ok_or(CodecError::Corrupt("truncated"))?;
        self.pos = end;
        Ok(b)
    }

    /// `N` raw bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let end = self.pos + N;
        let b = self.buf.get(self.pos..end).ok_or(CodecError::Corrupt("truncated"))?;
        self.pos = end;
        b.try_into().map_err(|_| CodecError::Corrupt("truncated"))
    }
}

#[cfg(test)]
mod tests;
