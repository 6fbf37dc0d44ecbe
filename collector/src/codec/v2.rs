//! Version 2 of the trace-block codec: shared dictionaries, span templates, parent deltas, delta-encoded starts
//! and column-wise zstd.
//!
//! ```text
//! "SKTB" | version u8 = 2 | dict_id u64 LE | dict_len uvarint | sections…
//! section: mode u8 = 0 (raw) | len uvarint | bytes,  or  mode u8 = 1 (zstd) | raw_len uvarint | len uvarint | bytes
//! sections, in order:
//!   0 header: trace_id [16] | base_start_nanos | span_count | strings | resources | scopes | templates
//!   1 span_id [8]…          2 parent          3 parent_raw        4 start delta (zig-zag vs previous span)
//!   5 duration (end − start, wrapping)        6 template#         7 flags            8 trace_state#
//!   9 status code, message#                   10 dropped attrs/events/links           11 attribute values
//!   12 events               13 links          14 warnings
//! strings:   count, then per entry uvarint e: e odd → shared entry (e >> 1) of dictionary `dict_id`;
//!            e even → inline string of (e >> 1) bytes that follow
//! template:  resource#, scope#, name#, kind (zig-zag), key count, key#…
//! parent:    0 none | 1 raw bytes in `parent_raw` | 2 + zigzag(i − k) = span k of this block
//! attribute values: per span, the values of its template's keys in order (value encoding as version 1)
//! ```
//!
//! A span template is the tuple (resource, scope, operation, kind, attribute-key list): spans that repeat it pay
//! one small index instead of their keys, service and operation. `dict_id` names a [`SharedDict`], an append-only
//! string table that one writer keeps per storage partition; `dict_len` is how many of its entries existed when
//! the block was written, so a reader knows whether its cached copy is recent enough. `dict_id` 0 means the block
//! uses no shared dictionary. Each section is compressed on its own when zstd makes it smaller: span IDs are
//! random and stay raw, while names, values and timings compress well in isolation.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::{CodecError, Dict, MAGIC, Reader, ZSTD_LEVEL, position_or_push, put_bytes, put_ivarint, put_uvarint};
use crate::model::{KeyValue, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

/// Version byte of this layout.
pub const VERSION_2: u8 = 2;
/// Most entries one [`SharedDict`] holds; later strings stay inline in their blocks.
pub const MAX_SHARED_ENTRIES: usize = 1 << 16;
/// Longest string a [`SharedDict`] takes, bytes.
pub const MAX_SHARED_STRING_BYTES: usize = 256;
/// Bound on the "seen once" candidates a [`SharedDict`] tracks for frequent values.
const MAX_CANDIDATES: usize = 1 << 16;
const SECTIONS: usize = 15;
/// Sections smaller than this are stored raw: a zstd frame costs about a dozen bytes.
const MIN_COMPRESS_BYTES: usize = 48;

/// How a string is used, which decides whether it goes into the shared dictionary.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Services, operations, attribute keys, resource and scope values: shared at first sight.
    Shared,
    /// Span attribute values: shared once seen in an earlier block ("frequent values").
    Frequent,
    /// Free text (status messages, warnings, trace state): never shared.
    Inline,
}

/// A shared, append-only string dictionary: services, operations, attribute keys and frequent values that many
/// blocks of one storage partition reference by number instead of repeating.
///
/// Entries are numbered from 0 in insertion order and never change, so a block written when the dictionary had
/// `n` entries decodes with any copy holding at least `n`. The writer must persist
/// [`SharedDict::take_unpersisted`] no later than the blocks that reference them.
pub struct SharedDict {
    id: u64,
    strings: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
    persisted: usize,
    candidates: HashMap<Box<str>, ()>,
}

impl SharedDict {
    /// An empty dictionary with a random non-zero ID (IDs name dictionaries across writers and restarts).
    pub fn new() -> Self {
        let mut id = 0;
        while id == 0 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            );
            id = h.finish();
        }
        Self::with_id(id)
    }

    /// An empty dictionary with a given ID (tests, tools).
    pub fn with_id(id: u64) -> Self {
        Self { id, strings: Vec::new(), index: HashMap::new(), persisted: 0, candidates: HashMap::new() }
    }

    /// The dictionary's ID, as recorded in its blocks.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// All entries, numbered from 0.
    pub fn entries(&self) -> &[Arc<str>] {
        &self.strings
    }

    /// Entries added since the last call: `(first_entry_number, strings)`. The caller persists them with (or
    /// before) the blocks encoded since.
    pub fn take_unpersisted(&mut self) -> (u32, Vec<Arc<str>>) {
        let first = self.persisted;
        self.persisted = self.strings.len();
        (first as u32, self.strings[first..].to_vec())
    }

    fn lookup(&mut self, s: &str, class: Class) -> Option<u32> {
        if let Some(&i) = self.index.get(s) {
            return Some(i);
        }
        if class == Class::Inline || s.len() > MAX_SHARED_STRING_BYTES || self.strings.len() >= MAX_SHARED_ENTRIES {
            return None;
        }
        if class == Class::Frequent && self.candidates.remove(s).is_none() {
            if self.candidates.len() >= MAX_CANDIDATES {
                self.candidates.clear();
            }
            self.candidates.insert(s.into(), ());
            return None;
        }
        let i = self.strings.len() as u32;
        let s: Arc<str> = s.into();
        self.strings.push(s.clone());
        self.index.insert(s, i);
        Some(i)
    }
}

impl Default for SharedDict {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a reader finds shared dictionaries.
pub trait DictLookup {
    /// The entries of dictionary `dict_id`, at least `min_len` of them.
    ///
    /// # Errors
    /// [`CodecError::MissingDictionary`] when the dictionary (or enough of it) is not available.
    fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Arc<[Arc<str>]>, CodecError>;
}

/// A [`DictLookup`] that has no dictionaries (blocks encoded without one decode with it).
pub struct NoDict;

impl DictLookup for NoDict {
    fn dictionary(&self, dict_id: u64, _min_len: usize) -> Result<Arc<[Arc<str>]>, CodecError> {
        Err(CodecError::MissingDictionary(dict_id))
    }
}

impl DictLookup for SharedDict {
    fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Arc<[Arc<str>]>, CodecError> {
        if dict_id != self.id || self.strings.len() < min_len {
            return Err(CodecError::MissingDictionary(dict_id));
        }
        Ok(self.strings.clone().into())
    }
}

#[derive(PartialEq, Eq, Hash)]
struct TemplateKey {
    resource: u32,
    scope: u32,
    name: u32,
    kind: i32,
    keys: Vec<u32>,
}

struct Enc<'d> {
    dict: Option<&'d mut SharedDict>,
    /// Block string table entries, encoded.
    table: Vec<u8>,
    table_len: u32,
    local: HashMap<String, u32>,
    shared_local: HashMap<u32, u32>,
}

impl Enc<'_> {
    fn string(&mut self, s: &str, class: Class) -> u32 {
        if let Some(&i) = self.local.get(s) {
            return i;
        }
        let shared = self.dict.as_deref_mut().and_then(|d| d.lookup(s, class));
        let i = match shared {
            Some(id) => {
                if let Some(&i) = self.shared_local.get(&id) {
                    return i;
                }
                put_uvarint(&mut self.table, (u64::from(id) << 1) | 1);
                self.shared_local.insert(id, self.table_len);
                self.table_len
            }
            None => {
                put_uvarint(&mut self.table, (s.len() as u64) << 1);
                self.table.extend_from_slice(s.as_bytes());
                self.table_len
            }
        };
        self.table_len += 1;
        self.local.insert(s.to_string(), i);
        i
    }

    fn put_string(&mut self, buf: &mut Vec<u8>, s: &str, class: Class) {
        let i = self.string(s, class);
        put_uvarint(buf, i.into());
    }

    fn attrs(&mut self, buf: &mut Vec<u8>, attrs: &[KeyValue], values: Class) {
        put_uvarint(buf, attrs.len() as u64);
        for kv in attrs {
            self.put_string(buf, &kv.key, Class::Shared);
            self.value(buf, &kv.value, values);
        }
    }

    fn value(&mut self, buf: &mut Vec<u8>, v: &Value, class: Class) {
        match v {
            Value::Empty => buf.push(0),
            Value::Str(s) => {
                buf.push(1);
                self.put_string(buf, s, class);
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
                    self.value(buf, item, class);
                }
            }
            Value::KvList(kvs) => {
                buf.push(8);
                self.attrs(buf, kvs, class);
            }
        }
    }
}

/// Encodes one trace's spans as a version 2 block, taking shared strings from (and adding them to) `dict`.
///
/// # Errors
/// [`CodecError::NotOneTrace`] when `spans` is empty or mixes trace IDs; [`CodecError::Zstd`] if compression fails.
pub fn encode(spans: &[Span], dict: Option<&mut SharedDict>) -> Result<Vec<u8>, CodecError> {
    let first = spans.first().ok_or_else(|| CodecError::NotOneTrace("no spans".into()))?;
    let trace_id = first.trace_id;
    if let Some(other) = spans.iter().find(|s| s.trace_id != trace_id) {
        return Err(CodecError::NotOneTrace(format!("{} and {}", trace_id, other.trace_id)));
    }
    let dict_id = dict.as_ref().map_or(0, |d| d.id);
    let mut enc = Enc { dict, table: Vec::new(), table_len: 0, local: HashMap::new(), shared_local: HashMap::new() };
    let base = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);

    let mut resources: Vec<Arc<Resource>> = Vec::new();
    let mut scopes: Vec<Arc<Scope>> = Vec::new();
    let mut res_idx = Vec::with_capacity(spans.len());
    let mut scope_idx = Vec::with_capacity(spans.len());
    for s in spans {
        res_idx.push(position_or_push(&mut resources, &s.resource) as u32);
        scope_idx.push(position_or_push(&mut scopes, &s.scope) as u32);
    }
    let mut meta = Vec::new();
    put_uvarint(&mut meta, resources.len() as u64);
    for r in &resources {
        enc.attrs(&mut meta, &r.attributes, Class::Shared);
        put_uvarint(&mut meta, r.dropped_attributes_count.into());
        enc.put_string(&mut meta, &r.schema_url, Class::Shared);
    }
    put_uvarint(&mut meta, scopes.len() as u64);
    for sc in &scopes {
        enc.put_string(&mut meta, &sc.name, Class::Shared);
        enc.put_string(&mut meta, &sc.version, Class::Shared);
        enc.attrs(&mut meta, &sc.attributes, Class::Shared);
        put_uvarint(&mut meta, sc.dropped_attributes_count.into());
        enc.put_string(&mut meta, &sc.schema_url, Class::Shared);
    }

    let mut index_of: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
    for (i, s) in spans.iter().enumerate() {
        index_of.entry(s.span_id).or_insert(i);
    }
    let mut templates: HashMap<TemplateKey, u32> = HashMap::new();
    let mut template_buf = Vec::new();
    let mut cols: [Vec<u8>; SECTIONS] = Default::default();
    let mut prev_start = base;
    for (i, s) in spans.iter().enumerate() {
        cols[1].extend_from_slice(&s.span_id.0);
        match s.parent_span_id.as_slice() {
            [] => put_uvarint(&mut cols[2], 0),
            raw => match raw.try_into().ok().and_then(|id: [u8; 8]| index_of.get(&SpanId(id))) {
                Some(&k) => put_uvarint(&mut cols[2], 2 + zigzag(i as i64 - k as i64)),
                None => {
                    put_uvarint(&mut cols[2], 1);
                    put_bytes(&mut cols[3], raw);
                }
            },
        }
        put_ivarint(&mut cols[4], s.start_unix_nanos.wrapping_sub(prev_start) as i64);
        prev_start = s.start_unix_nanos;
        put_uvarint(&mut cols[5], s.end_unix_nanos.wrapping_sub(s.start_unix_nanos));
        let key = TemplateKey {
            resource: res_idx[i],
            scope: scope_idx[i],
            name: enc.string(&s.name, Class::Shared),
            kind: s.kind.0,
            keys: s.attributes.iter().map(|kv| enc.string(&kv.key, Class::Shared)).collect(),
        };
        let next = templates.len() as u32;
        let t = *templates.entry(key).or_insert_with_key(|k| {
            put_uvarint(&mut template_buf, k.resource.into());
            put_uvarint(&mut template_buf, k.scope.into());
            put_uvarint(&mut template_buf, k.name.into());
            put_ivarint(&mut template_buf, k.kind.into());
            put_uvarint(&mut template_buf, k.keys.len() as u64);
            for &key in &k.keys {
                put_uvarint(&mut template_buf, key.into());
            }
            next
        });
        put_uvarint(&mut cols[6], t.into());
        put_uvarint(&mut cols[7], s.flags.into());
        enc.put_string(&mut cols[8], &s.trace_state, Class::Inline);
        put_ivarint(&mut cols[9], s.status_code.0.into());
        enc.put_string(&mut cols[9], &s.status_message, Class::Frequent);
        put_uvarint(&mut cols[10], s.dropped_attributes_count.into());
        put_uvarint(&mut cols[10], s.dropped_events_count.into());
        put_uvarint(&mut cols[10], s.dropped_links_count.into());
        for kv in &s.attributes {
            enc.value(&mut cols[11], &kv.value, Class::Frequent);
        }
        put_uvarint(&mut cols[12], s.events.len() as u64);
        for e in &s.events {
            put_ivarint(&mut cols[12], e.time_unix_nanos.wrapping_sub(s.start_unix_nanos) as i64);
            enc.put_string(&mut cols[12], &e.name, Class::Shared);
            enc.attrs(&mut cols[12], &e.attributes, Class::Frequent);
            put_uvarint(&mut cols[12], e.dropped_attributes_count.into());
        }
        put_uvarint(&mut cols[13], s.links.len() as u64);
        for l in &s.links {
            put_bytes(&mut cols[13], &l.trace_id);
            put_bytes(&mut cols[13], &l.span_id);
            enc.put_string(&mut cols[13], &l.trace_state, Class::Inline);
            enc.attrs(&mut cols[13], &l.attributes, Class::Frequent);
            put_uvarint(&mut cols[13], l.dropped_attributes_count.into());
            put_uvarint(&mut cols[13], l.flags.into());
        }
        put_uvarint(&mut cols[14], s.warnings.len() as u64);
        for w in &s.warnings {
            enc.put_string(&mut cols[14], w, Class::Inline);
        }
    }
    let header = &mut cols[0];
    header.extend_from_slice(&trace_id.0);
    put_uvarint(header, base);
    put_uvarint(header, spans.len() as u64);
    put_uvarint(header, enc.table_len.into());
    header.extend_from_slice(&enc.table);
    header.extend_from_slice(&meta);
    put_uvarint(header, templates.len() as u64);
    header.extend_from_slice(&template_buf);

    let dict_len = enc.dict.as_ref().map_or(0, |d| d.strings.len());
    let mut out = Vec::with_capacity(64 + cols.iter().map(Vec::len).sum::<usize>() / 2);
    out.extend_from_slice(MAGIC);
    out.push(VERSION_2);
    out.extend_from_slice(&dict_id.to_le_bytes());
    put_uvarint(&mut out, dict_len as u64);
    for col in &cols {
        put_section(&mut out, col)?;
    }
    Ok(out)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

thread_local! {
    /// One zstd context per thread: creating one per section costs more than compressing a small section.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

fn compress(raw: &[u8]) -> Result<Vec<u8>, CodecError> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        match c.as_mut() {
            Some(c) => Ok(c.compress(raw)?),
            None => Ok(zstd::bulk::compress(raw, ZSTD_LEVEL)?),
        }
    })
}

fn decompress(z: &[u8], raw_len: usize) -> Result<Vec<u8>, CodecError> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => Ok(d.decompress(z, raw_len)?),
            None => Ok(zstd::bulk::decompress(z, raw_len)?),
        }
    })
}

fn put_section(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), CodecError> {
    if raw.len() >= MIN_COMPRESS_BYTES {
        let z = compress(raw)?;
        if z.len() + 2 < raw.len() {
            out.push(1);
            put_uvarint(out, raw.len() as u64);
            put_bytes(out, &z);
            return Ok(());
        }
    }
    out.push(0);
    put_bytes(out, raw);
    Ok(())
}

/// The dictionary a block needs: `(dict_id, dict_len)`, or `None` when it needs none (version 1 blocks and
/// self-contained version 2 blocks).
///
/// # Errors
/// [`CodecError::BadMagic`] for foreign data, [`CodecError::Corrupt`] when the header is truncated.
pub fn dictionary_of(block: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if block[4] != VERSION_2 {
        return Ok(None);
    }
    let mut r = Reader { buf: block, pos: 5 };
    let dict_id = u64::from_le_bytes(r.array::<8>()?);
    let dict_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("dictionary length"))?;
    Ok((dict_id != 0 && dict_len > 0).then_some((dict_id, dict_len)))
}

/// Decodes a version 2 block (the caller checked magic and version).
pub(super) fn decode(block: &[u8], dicts: &dyn DictLookup, max_body_bytes: usize) -> Result<Vec<Span>, CodecError> {
    let mut r = Reader { buf: block, pos: 5 };
    let dict_id = u64::from_le_bytes(r.array::<8>()?);
    let dict_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("dictionary length"))?;
    let shared: Arc<[Arc<str>]> =
        if dict_id != 0 && dict_len > 0 { dicts.dictionary(dict_id, dict_len)? } else { Arc::from(Vec::new()) };
    let mut budget = max_body_bytes;
    let mut sections: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(SECTIONS);
    for _ in 0..SECTIONS {
        sections.push(match r.u8()? {
            0 => std::borrow::Cow::Borrowed(r.bytes()?),
            1 => {
                let raw_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("section length"))?;
                let z = r.bytes()?;
                if raw_len > budget {
                    return Err(CodecError::Corrupt("body larger than the limit"));
                }
                budget -= raw_len;
                let raw = decompress(z, raw_len)?;
                if raw.len() != raw_len {
                    return Err(CodecError::Corrupt("section length mismatch"));
                }
                std::borrow::Cow::Owned(raw)
            }
            _ => return Err(CodecError::Corrupt("unknown section mode")),
        });
    }
    let mut cols: Vec<Reader<'_>> = sections.iter().map(|s| Reader { buf: s, pos: 0 }).collect();
    let h = &mut cols[0];
    let trace_id = TraceId(h.array::<16>()?);
    let base = h.uvarint()?;
    let n = h.count_any()?;
    // Every span has at least its 8-byte ID in section 1.
    if n.checked_mul(8).is_none_or(|b| b > sections[1].len()) {
        return Err(CodecError::Corrupt("span count larger than the span-ID column"));
    }
    let n_strings = h.count()?;
    let mut strings = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        let e = h.uvarint()?;
        if e & 1 == 1 {
            let i = usize::try_from(e >> 1).map_err(|_| CodecError::Corrupt("dictionary index"))?;
            if i >= dict_len {
                return Err(CodecError::Corrupt("dictionary index beyond the block's dictionary length"));
            }
            strings.push(shared.get(i).ok_or(CodecError::Corrupt("dictionary index out of range"))?.to_string());
        } else {
            let len = usize::try_from(e >> 1).map_err(|_| CodecError::Corrupt("string length"))?;
            let end = h.pos.checked_add(len).ok_or(CodecError::Corrupt("length overflows"))?;
            let b = h.buf.get(h.pos..end).ok_or(CodecError::Corrupt("truncated"))?;
            h.pos = end;
            strings.push(std::str::from_utf8(b).map_err(|_| CodecError::Corrupt("string is not utf-8"))?.to_string());
        }
    }
    let d = Dict { strings };
    let n_res = h.count()?;
    let mut resources = Vec::with_capacity(n_res);
    for _ in 0..n_res {
        let attributes = d.attrs(h)?;
        let dropped_attributes_count = h.u32()?;
        let schema_url = d.string(h)?;
        resources.push(Arc::new(Resource { attributes, dropped_attributes_count, schema_url }));
    }
    let n_scopes = h.count()?;
    let mut scopes = Vec::with_capacity(n_scopes);
    for _ in 0..n_scopes {
        let name = d.string(h)?;
        let version = d.string(h)?;
        let attributes = d.attrs(h)?;
        let dropped_attributes_count = h.u32()?;
        let schema_url = d.string(h)?;
        scopes.push(Arc::new(Scope { name, version, attributes, dropped_attributes_count, schema_url }));
    }
    struct Template {
        resource: Arc<Resource>,
        scope: Arc<Scope>,
        name: String,
        kind: SpanKind,
        keys: Vec<String>,
    }
    let n_templates = h.count()?;
    let mut templates = Vec::with_capacity(n_templates);
    for _ in 0..n_templates {
        let resource = resources.get(h.count_any()?).ok_or(CodecError::Corrupt("resource index"))?.clone();
        let scope = scopes.get(h.count_any()?).ok_or(CodecError::Corrupt("scope index"))?.clone();
        let name = d.string(h)?;
        let kind = SpanKind(h.i32()?);
        let n_keys = h.count()?;
        let mut keys = Vec::with_capacity(n_keys);
        for _ in 0..n_keys {
            keys.push(d.string(h)?);
        }
        templates.push(Template { resource, scope, name, kind, keys });
    }

    let mut span_ids = Vec::with_capacity(n);
    for _ in 0..n {
        span_ids.push(SpanId(cols[1].array::<8>()?));
    }
    let mut spans = Vec::with_capacity(n);
    let mut prev_start = base;
    for (i, &span_id) in span_ids.iter().enumerate() {
        let parent_span_id = match cols[2].uvarint()? {
            0 => Vec::new(),
            1 => cols[3].bytes()?.to_vec(),
            k => {
                let delta = unzigzag(k - 2);
                let idx = (i as i64).checked_sub(delta).ok_or(CodecError::Corrupt("parent index"))?;
                let idx = usize::try_from(idx).map_err(|_| CodecError::Corrupt("parent index"))?;
                span_ids.get(idx).ok_or(CodecError::Corrupt("parent index out of range"))?.0.to_vec()
            }
        };
        let start = prev_start.wrapping_add(cols[4].ivarint()? as u64);
        prev_start = start;
        let end = start.wrapping_add(cols[5].uvarint()?);
        let t = templates.get(cols[6].count_any()?).ok_or(CodecError::Corrupt("template index"))?;
        let flags = cols[7].u32()?;
        let trace_state = d.string(&mut cols[8])?;
        let status_code = StatusCode(cols[9].i32()?);
        let status_message = d.string(&mut cols[9])?;
        let dropped_attributes_count = cols[10].u32()?;
        let dropped_events_count = cols[10].u32()?;
        let dropped_links_count = cols[10].u32()?;
        let mut attributes = Vec::with_capacity(t.keys.len());
        for key in &t.keys {
            attributes.push(KeyValue { key: key.clone(), value: d.value(&mut cols[11], 0)? });
        }
        let events = d.events(&mut cols[12], start)?;
        let links = d.links(&mut cols[13])?;
        let warnings = d.strings(&mut cols[14])?;
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name: t.name.clone(),
            kind: t.kind,
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
            resource: t.resource.clone(),
            scope: t.scope.clone(),
            warnings,
        });
    }
    Ok(spans)
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}
