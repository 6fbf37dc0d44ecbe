//! Version 2 of the trace-block codec: shared dictionaries of strings, resources, scopes and span templates;
//! parent deltas, delta-encoded starts, varint durations and one zstd frame over column-ordered data.
//!
//! ```text
//! "SKTB" | version u8 = 2 | dict_id u64 LE | dict_len uvarint | trace_id [16] | base_start_nanos uvarint
//!        | span_count uvarint | span_id [8] × span_count | mode u8 | body
//! mode 0: body = len uvarint | bytes;   mode 1: body = raw_len uvarint | len uvarint | zstd(bytes)
//! bytes: eight sections, each len uvarint | section bytes:
//!   0 local table   1 parent   2 parent_raw   3 start delta (zig-zag vs the previous span, the first vs base)
//!   4 duration (end − start, wrapping)   5 template ref   6 attribute values   7 rare fields
//! local table: strings (count, (len, utf-8)…) | resources (count, def…) | scopes (count, def…) |
//!              templates (count, def…)
//! resource def: attrs, dropped, schema_url ref         scope def: name ref, version ref, attrs, dropped, schema_url ref
//! template def: resource ref, scope ref, name ref, kind (zig-zag), key count, (key ref, default)…
//!               default: 0 none | 1 value (the value spans of the template usually carry)
//! ref:          uvarint r: r odd → entry (r >> 1) of shared dictionary `dict_id` (which must be of the expected
//!               kind and below `dict_len`); r even → entry (r >> 1) of the block's local list of that kind
//! parent:       0 none | 1 raw bytes in `parent_raw` | 2 + zigzag(i − k) = span k of this block
//! attribute values: per span, a bit mask of ⌈keys/8⌉ bytes (bit i set: key i's value differs from the
//!               template's default, or it has none), then those values in key order (value: tag u8 then
//!               payload, as version 1, strings as refs)
//! rare fields:  per span a presence byte, then the fields whose bit is set: 0x01 flags (when they differ from
//!               the previous span's; the first span's are compared with 0), 0x02 trace_state ref,
//!               0x04 status code (zig-zag), 0x08 status message ref, 0x10 dropped attrs/events/links,
//!               0x20 events, 0x40 links, 0x80 warnings (count, ref…)
//! shared dictionary entry: kind u8 (0 string, 1 resource, 2 scope, 3 template) | payload (the utf-8 string, or
//!               the def above with only odd refs, each to an earlier entry)
//! ```
//!
//! A span template is the tuple (resource, scope, operation, kind, attribute-key list) plus default values:
//! spans that repeat it pay one small reference instead of their resource, keys, service and operation, and
//! store only the attribute values that differ from the template's (a `rpc.method` or `server.port` rarely does). A [`SharedDict`] is an
//! append-only table that one writer keeps per storage partition; resources (with every k8s, process and SDK
//! attribute), scopes and templates enter it whole, so a block of a trace seen a thousand times before holds little
//! more than IDs, timings and attribute values. `dict_len` is how many entries existed when the block was
//! written, so a reader knows whether its cached copy is recent enough; `dict_id` 0 means a self-contained
//! block. Span IDs are random, so they stay outside the zstd frame; everything else is grouped by column inside
//! one frame (one frame per block: a frame costs about a dozen bytes, which a per-column layout paid 8 times).

use foldhash::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

pub use crate::dict::{DictEntry, DictLookup, Dictionary, NoDict, Template};
use crate::values::{Strings, position_or_push, put_attrs, put_value, skip_value};
use crate::wire::{OrCorrupt, Reader, put_bytes, put_ivarint, put_uvarint};
use crate::{BlockVersion, CodecError, MAGIC, MAX_BODY_BYTES, ZSTD_LEVEL};
use skein_model::{KeyValue, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

/// Version byte of this layout.
pub const VERSION_2: u8 = 2;

/// Version 2 behind the versioned interface.
pub struct V2;

impl BlockVersion for V2 {
    const VERSION: u8 = VERSION_2;

    fn decode(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
        decode(block, dicts, MAX_BODY_BYTES, true)
    }
}
/// Most entries one [`SharedDict`] holds; later strings and structures stay local to their blocks.
pub const MAX_SHARED_ENTRIES: usize = 1 << 16;
/// Longest string a [`SharedDict`] takes, bytes.
pub const MAX_SHARED_STRING_BYTES: usize = 256;
/// Bound on the "seen once" candidates a [`SharedDict`] tracks for frequent values.
const MAX_CANDIDATES: usize = 1 << 16;
const SECTIONS: usize = 8;
/// Bodies smaller than this are stored raw: a zstd frame costs about a dozen bytes.
const MIN_COMPRESS_BYTES: usize = 32;

const KIND_STRING: u8 = 0;
const KIND_RESOURCE: u8 = 1;
const KIND_SCOPE: u8 = 2;
const KIND_TEMPLATE: u8 = 3;

const RARE_FLAGS: u8 = 0x01;
const RARE_TRACE_STATE: u8 = 0x02;
const RARE_STATUS_CODE: u8 = 0x04;
const RARE_STATUS_MESSAGE: u8 = 0x08;
const RARE_DROPPED: u8 = 0x10;
const RARE_EVENTS: u8 = 0x20;
const RARE_LINKS: u8 = 0x40;
const RARE_WARNINGS: u8 = 0x80;

/// How a string is used, which decides whether it goes into the shared dictionary.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Services, operations, attribute keys, resource and scope values: shared at first sight.
    Shared,
    /// Span attribute values and status messages: shared once seen in an earlier block ("frequent values").
    Frequent,
    /// Free text (warnings, trace state): never shared.
    Inline,
}

/// A shared, append-only dictionary that many blocks of one storage partition reference by number instead of
/// repeating: strings (services, operations, attribute keys, frequent values), whole resources, scopes and span
/// templates.
///
/// Entries are numbered from 0 in insertion order and never change, so a block written when the dictionary had
/// `n` entries decodes with any copy holding at least `n`. The writer must persist
/// [`SharedDict::take_unpersisted`] no later than the blocks that reference them; readers rebuild the dictionary
/// with [`decode_dictionary`].
pub struct SharedDict {
    id: u64,
    /// Serialized entries (`kind u8 ‖ payload`), numbered from 0.
    raw: Vec<Arc<[u8]>>,
    strings: HashMap<Arc<str>, u32>,
    structures: HashMap<Arc<[u8]>, u32>,
    /// Template shape (resource, scope, name, kind, keys refs) → template entry and its encoded default values.
    shapes: HashMap<Vec<u8>, (u32, Defaults)>,
    persisted: usize,
    candidates: HashSet<Box<str>>,
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
        Self {
            id,
            raw: Vec::new(),
            strings: HashMap::default(),
            structures: HashMap::default(),
            shapes: HashMap::default(),
            persisted: 0,
            candidates: HashSet::default(),
        }
    }

    /// The dictionary's ID, as recorded in its blocks.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True when the dictionary has no entries.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The string entries, in entry order.
    pub fn strings(&self) -> impl Iterator<Item = &str> {
        self.raw.iter().filter(|e| e.first() == Some(&KIND_STRING)).filter_map(|e| std::str::from_utf8(&e[1..]).ok())
    }

    /// All serialized entries (`kind u8 ‖ payload`), numbered from 0.
    pub fn raw_entries(&self) -> &[Arc<[u8]>] {
        &self.raw
    }

    /// Serialized entries added since the last call: `(first_entry_number, entries)`. The caller persists them
    /// with (or before) the blocks encoded since.
    pub fn take_unpersisted(&mut self) -> (u32, Vec<Arc<[u8]>>) {
        let first = self.persisted;
        self.persisted = self.raw.len();
        (first as u32, self.raw[first..].to_vec())
    }

    fn push(&mut self, raw: Arc<[u8]>) -> u32 {
        self.raw.push(raw);
        (self.raw.len() - 1) as u32
    }

    fn string(&mut self, s: &str, class: Class) -> Option<u32> {
        if let Some(&i) = self.strings.get(s) {
            return Some(i);
        }
        if class == Class::Inline || s.len() > MAX_SHARED_STRING_BYTES || self.raw.len() >= MAX_SHARED_ENTRIES {
            return None;
        }
        if class == Class::Frequent && !self.candidates.remove(s) {
            if self.candidates.len() >= MAX_CANDIDATES {
                self.candidates.clear();
            }
            self.candidates.insert(s.into());
            return None;
        }
        let mut raw = Vec::with_capacity(s.len() + 1);
        raw.push(KIND_STRING);
        raw.extend_from_slice(s.as_bytes());
        let i = self.push(raw.into());
        self.strings.insert(s.into(), i);
        Some(i)
    }

    fn structure(&mut self, kind: u8, payload: &[u8]) -> Option<u32> {
        let mut key = Vec::with_capacity(payload.len() + 1);
        key.push(kind);
        key.extend_from_slice(payload);
        if let Some(&i) = self.structures.get(key.as_slice()) {
            return Some(i);
        }
        if self.raw.len() >= MAX_SHARED_ENTRIES {
            return None;
        }
        let key: Arc<[u8]> = key.into();
        let i = self.push(key.clone());
        self.structures.insert(key, i);
        Some(i)
    }
}

impl Default for SharedDict {
    fn default() -> Self {
        Self::new()
    }
}

/// Rebuilds a shared dictionary from its serialized entries, in entry order (as stored by the writer).
///
/// # Errors
/// [`CodecError::Corrupt`] for a malformed entry or one that references a later entry.
pub fn decode_dictionary<'a>(raw: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<DictEntry>, CodecError> {
    let mut out: Vec<DictEntry> = Vec::new();
    for entry in raw {
        let (&kind, payload) = entry.split_first().or_corrupt("empty dictionary entry")?;
        let local = Local::default();
        let refs = Refs { local: &local, shared: &out };
        let mut r = Reader { buf: payload, pos: 0 };
        let decoded = match kind {
            KIND_STRING => DictEntry::Str(
                std::str::from_utf8(payload).map_err(|_| CodecError::Corrupt("dictionary entry is not utf-8"))?.into(),
            ),
            KIND_RESOURCE => DictEntry::Resource(Arc::new(refs.resource_def(&mut r)?)),
            KIND_SCOPE => DictEntry::Scope(Arc::new(refs.scope_def(&mut r)?)),
            KIND_TEMPLATE => DictEntry::Template(Arc::new(refs.template_def(&mut r)?)),
            _ => return Err(CodecError::Corrupt("unknown dictionary entry kind")),
        };
        if kind != KIND_STRING && r.pos != payload.len() {
            return Err(CodecError::Corrupt("trailing bytes in a dictionary entry"));
        }
        out.push(decoded);
    }
    Ok(out)
}

impl DictLookup for SharedDict {
    fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Dictionary, CodecError> {
        if dict_id != self.id || self.raw.len() < min_len {
            return Err(CodecError::MissingDictionary(dict_id));
        }
        Ok(decode_dictionary(self.raw.iter().map(|e| &e[..]))?.into())
    }
}

/// Encoded default values of a template's keys (`None`: no default, the value is always stored).
type Defaults = Arc<Vec<Option<Vec<u8>>>>;

#[derive(PartialEq, Eq, Hash)]
struct TemplateKey {
    resource: u64,
    scope: u64,
    name: u64,
    kind: i32,
    keys: Vec<u64>,
}

/// Local definitions of one kind: count and encoded defs.
#[derive(Default)]
struct Defs {
    count: u64,
    buf: Vec<u8>,
}

struct Enc<'d> {
    dict: Option<&'d mut SharedDict>,
    strings: Defs,
    refs: HashMap<String, u64>,
    /// Set when a local string ref was written since the last reset (a structure using one cannot be shared).
    used_local: bool,
}

impl Enc<'_> {
    fn string(&mut self, s: &str, class: Class) -> u64 {
        if let Some(&r) = self.refs.get(s) {
            self.used_local |= r & 1 == 0;
            return r;
        }
        let r = match self.dict.as_deref_mut().and_then(|d| d.string(s, class)) {
            Some(id) => (u64::from(id) << 1) | 1,
            None => {
                put_bytes(&mut self.strings.buf, s.as_bytes());
                self.strings.count += 1;
                self.used_local = true;
                (self.strings.count - 1) << 1
            }
        };
        self.refs.insert(s.to_owned(), r);
        r
    }

    fn put_string(&mut self, buf: &mut Vec<u8>, s: &str, class: Class) {
        let r = self.string(s, class);
        put_uvarint(buf, r);
    }

    fn attrs(&mut self, buf: &mut Vec<u8>, attrs: &[KeyValue], values: Class) {
        put_attrs(buf, attrs, &mut |b, s, key| self.put_string(b, s, if key { Class::Shared } else { values }));
    }

    fn value(&mut self, buf: &mut Vec<u8>, v: &Value, class: Class) {
        put_value(buf, v, &mut |b, s, key| self.put_string(b, s, if key { Class::Shared } else { class }));
    }

    /// Shares a structure whose payload references only shared entries, else defines it locally; returns its ref.
    fn define(&mut self, kind: u8, payload: &[u8], shareable: bool, local: &mut Defs) -> u64 {
        if shareable && let Some(id) = self.dict.as_deref_mut().and_then(|d| d.structure(kind, payload)) {
            return (u64::from(id) << 1) | 1;
        }
        local.buf.extend_from_slice(payload);
        local.count += 1;
        (local.count - 1) << 1
    }

    fn resource(&mut self, r: &Resource, local: &mut Defs) -> u64 {
        self.used_local = false;
        let mut p = Vec::new();
        self.attrs(&mut p, &r.attributes, Class::Shared);
        put_uvarint(&mut p, r.dropped_attributes_count.into());
        self.put_string(&mut p, &r.schema_url, Class::Shared);
        let shareable = !self.used_local;
        self.define(KIND_RESOURCE, &p, shareable, local)
    }

    fn scope(&mut self, s: &Scope, local: &mut Defs) -> u64 {
        self.used_local = false;
        let mut p = Vec::new();
        self.put_string(&mut p, &s.name, Class::Shared);
        self.put_string(&mut p, &s.version, Class::Shared);
        self.attrs(&mut p, &s.attributes, Class::Shared);
        put_uvarint(&mut p, s.dropped_attributes_count.into());
        self.put_string(&mut p, &s.schema_url, Class::Shared);
        let shareable = !self.used_local;
        self.define(KIND_SCOPE, &p, shareable, local)
    }

    /// The template of spans of shape `k`: an existing shared one, else a new one whose default values are those of
    /// `attrs` (the span at hand), shared when everything it references is.
    fn template(&mut self, k: &TemplateKey, attrs: &[KeyValue], local: &mut Defs) -> (u64, Defaults) {
        let mut head = Vec::new();
        put_uvarint(&mut head, k.resource);
        put_uvarint(&mut head, k.scope);
        put_uvarint(&mut head, k.name);
        put_ivarint(&mut head, k.kind.into());
        let shareable = [k.resource, k.scope, k.name].iter().chain(&k.keys).all(|r| r & 1 == 1);
        let mut shape = head.clone();
        for &key in &k.keys {
            put_uvarint(&mut shape, key);
        }
        if shareable && let Some((id, defaults)) = self.dict.as_deref().and_then(|d| d.shapes.get(&shape)) {
            return ((u64::from(*id) << 1) | 1, defaults.clone());
        }
        // Defaults reference shared entries only, so that the template can be shared; values are shared at first
        // sight here (one per template key, so bounded by the number of templates).
        let mut defaults = Vec::with_capacity(attrs.len());
        let mut p = head;
        put_uvarint(&mut p, k.keys.len() as u64);
        for (kv, &key) in attrs.iter().zip(&k.keys) {
            put_uvarint(&mut p, key);
            self.used_local = false;
            let mut v = Vec::new();
            self.value(&mut v, &kv.value, Class::Shared);
            if self.used_local || self.dict.is_none() {
                p.push(0);
                defaults.push(None);
            } else {
                p.push(1);
                p.extend_from_slice(&v);
                defaults.push(Some(v));
            }
        }
        let defaults = Arc::new(defaults);
        let r = self.define(KIND_TEMPLATE, &p, shareable, local);
        if r & 1 == 1
            && let Some(d) = self.dict.as_deref_mut()
        {
            d.shapes.insert(shape, ((r >> 1) as u32, defaults.clone()));
        }
        (r, defaults)
    }
}

/// Encodes one trace's spans as a version 2 block, taking shared entries from (and adding them to) `dict`.
///
/// # Errors
/// [`CodecError::NotOneTrace`] when `spans` is empty or mixes trace IDs; [`CodecError::Zstd`] if compression fails.
pub fn encode(spans: &[Span], dict: Option<&mut SharedDict>) -> Result<Vec<u8>, CodecError> {
    let trace_id = one_trace(spans)?;
    let rows = encode_rows(&[spans], dict)?;
    let mut out = Vec::with_capacity(48 + spans.len() * 8 + rows.body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION_2);
    out.extend_from_slice(&rows.dict_id.to_le_bytes());
    put_uvarint(&mut out, rows.dict_len as u64);
    out.extend_from_slice(&trace_id.0);
    put_uvarint(&mut out, rows.base);
    put_uvarint(&mut out, spans.len() as u64);
    for s in spans {
        out.extend_from_slice(&s.span_id.0);
    }
    out.extend_from_slice(&rows.body);
    Ok(out)
}

/// The trace ID shared by all of `spans`.
pub(crate) fn one_trace(spans: &[Span]) -> Result<TraceId, CodecError> {
    let first = spans.first().ok_or(CodecError::NotOneTrace("no spans".into()))?;
    match spans.iter().find(|s| s.trace_id != first.trace_id) {
        Some(other) => Err(CodecError::NotOneTrace(format!("{} and {}", first.trace_id, other.trace_id))),
        None => Ok(first.trace_id),
    }
}

/// The encoded rows of a block: what follows the span IDs (`mode u8 | body`), and the header fields they depend on.
pub(crate) struct Rows {
    pub(crate) dict_id: u64,
    pub(crate) dict_len: usize,
    /// Earliest span start, ns since the Unix epoch.
    pub(crate) base: u64,
    /// `mode u8 | body` as the module docs describe.
    pub(crate) body: Vec<u8>,
}

/// Encodes the rows of `traces` (each the spans of one trace, in order; parents are resolved within a trace) into
/// one body: the sections of the module docs over all spans, one trace after another.
pub(crate) fn encode_rows(traces: &[&[Span]], dict: Option<&mut SharedDict>) -> Result<Rows, CodecError> {
    let dict_id = dict.as_ref().map_or(0, |d| d.id);
    let mut enc = Enc { dict, strings: Defs::default(), refs: HashMap::default(), used_local: false };
    let spans = || traces.iter().flat_map(|t| t.iter());
    let n: usize = traces.iter().map(|t| t.len()).sum();
    let base = spans().map(|s| s.start_unix_nanos).min().unwrap_or(0);

    // Resources and scopes, deduplicated by pointer first, then by value; each shared whole when it can be.
    let (mut resources, mut scopes): (Vec<Arc<Resource>>, Vec<Arc<Scope>>) = (Vec::new(), Vec::new());
    let (mut resource_defs, mut scope_defs, mut template_defs) = (Defs::default(), Defs::default(), Defs::default());
    let (mut resource_refs, mut scope_refs) = (Vec::new(), Vec::new());
    let mut res_idx = Vec::with_capacity(n);
    let mut scope_idx = Vec::with_capacity(n);
    // By address first: the spans of one request share their `Arc`s, so each is compared by value once. The
    // spans hold every `Arc` for the whole call, so no address is reused meanwhile.
    let mut resource_at: HashMap<usize, usize> = HashMap::default();
    let mut scope_at: HashMap<usize, usize> = HashMap::default();
    for s in spans() {
        let i = *resource_at
            .entry(Arc::as_ptr(&s.resource) as usize)
            .or_insert_with(|| position_or_push(&mut resources, &s.resource));
        if i == resource_refs.len() {
            resource_refs.push(enc.resource(&s.resource, &mut resource_defs));
        }
        res_idx.push(resource_refs[i]);
        let i =
            *scope_at.entry(Arc::as_ptr(&s.scope) as usize).or_insert_with(|| position_or_push(&mut scopes, &s.scope));
        if i == scope_refs.len() {
            scope_refs.push(enc.scope(&s.scope, &mut scope_defs));
        }
        scope_idx.push(scope_refs[i]);
    }

    let mut templates: HashMap<TemplateKey, (u64, Defaults)> = HashMap::default();
    let mut scratch = Vec::new();
    let mut prev_flags = 0;
    let mut cols: [Vec<u8>; SECTIONS] = Default::default();
    let mut prev_start = base;
    let mut index_of: HashMap<SpanId, usize> = HashMap::default();
    let mut i = 0;
    for trace in traces {
        // Parents are referenced within their trace only: span IDs of different traces may collide.
        index_of.clear();
        for (k, s) in trace.iter().enumerate() {
            index_of.entry(s.span_id).or_insert(i + k);
        }
        for s in trace.iter() {
            match s.parent_span_id.as_slice() {
                [] => put_uvarint(&mut cols[1], 0),
                raw => match raw.try_into().ok().and_then(|id: [u8; 8]| index_of.get(&SpanId(id))) {
                    Some(&k) => put_uvarint(&mut cols[1], 2 + zigzag(i as i64 - k as i64)),
                    None => {
                        put_uvarint(&mut cols[1], 1);
                        put_bytes(&mut cols[2], raw);
                    }
                },
            }
            put_ivarint(&mut cols[3], s.start_unix_nanos.wrapping_sub(prev_start) as i64);
            prev_start = s.start_unix_nanos;
            put_uvarint(&mut cols[4], s.end_unix_nanos.wrapping_sub(s.start_unix_nanos));
            let key = TemplateKey {
                resource: res_idx[i],
                scope: scope_idx[i],
                name: enc.string(&s.name, Class::Shared),
                kind: s.kind.0,
                keys: s.attributes.iter().map(|kv| enc.string(&kv.key, Class::Shared)).collect(),
            };
            let (t, defaults) = match templates.get(&key) {
                Some(t) => t.clone(),
                None => {
                    let t = enc.template(&key, &s.attributes, &mut template_defs);
                    templates.insert(key, t.clone());
                    t
                }
            };
            put_uvarint(&mut cols[5], t);
            // Values: a bit mask of those that differ from the template's defaults, then those values.
            let mask_at = cols[6].len();
            cols[6].resize(mask_at + s.attributes.len().div_ceil(8), 0);
            for (a, kv) in s.attributes.iter().enumerate() {
                scratch.clear();
                enc.value(&mut scratch, &kv.value, Class::Frequent);
                if defaults.get(a).and_then(Option::as_ref) != Some(&scratch) {
                    cols[6][mask_at + a / 8] |= 1 << (a % 8);
                    cols[6].extend_from_slice(&scratch);
                }
            }
            rare(&mut enc, &mut cols[7], s, prev_flags);
            prev_flags = s.flags;
            i += 1;
        }
    }
    let table = &mut cols[0];
    for defs in [&enc.strings, &resource_defs, &scope_defs, &template_defs] {
        put_uvarint(table, defs.count);
        table.extend_from_slice(&defs.buf);
    }

    let mut raw = Vec::with_capacity(cols.iter().map(|c| c.len() + 2).sum());
    for col in &cols {
        put_bytes(&mut raw, col);
    }
    let dict_len = enc.dict.as_ref().map_or(0, |d| d.raw.len());
    let mut body = Vec::with_capacity(raw.len() / 2 + 8);
    if raw.len() >= MIN_COMPRESS_BYTES {
        let z = compress(&raw)?;
        if z.len() + 2 < raw.len() {
            body.push(1);
            put_uvarint(&mut body, raw.len() as u64);
            put_bytes(&mut body, &z);
            return Ok(Rows { dict_id, dict_len, base, body });
        }
    }
    body.push(0);
    put_bytes(&mut body, &raw);
    Ok(Rows { dict_id, dict_len, base, body })
}

/// Appends a span's rare fields: a presence byte, then the fields that differ from their defaults.
fn rare(enc: &mut Enc<'_>, buf: &mut Vec<u8>, s: &Span, prev_flags: u32) {
    let dropped = s.dropped_attributes_count != 0 || s.dropped_events_count != 0 || s.dropped_links_count != 0;
    let bits = [
        (s.flags != prev_flags, RARE_FLAGS),
        (!s.trace_state.is_empty(), RARE_TRACE_STATE),
        (s.status_code.0 != 0, RARE_STATUS_CODE),
        (!s.status_message.is_empty(), RARE_STATUS_MESSAGE),
        (dropped, RARE_DROPPED),
        (!s.events.is_empty(), RARE_EVENTS),
        (!s.links.is_empty(), RARE_LINKS),
        (!s.warnings.is_empty(), RARE_WARNINGS),
    ];
    let presence = bits.iter().filter(|(on, _)| *on).fold(0, |acc, (_, bit)| acc | bit);
    buf.push(presence);
    if presence & RARE_FLAGS != 0 {
        put_uvarint(buf, s.flags.into());
    }
    if presence & RARE_TRACE_STATE != 0 {
        enc.put_string(buf, &s.trace_state, Class::Inline);
    }
    if presence & RARE_STATUS_CODE != 0 {
        put_ivarint(buf, s.status_code.0.into());
    }
    if presence & RARE_STATUS_MESSAGE != 0 {
        enc.put_string(buf, &s.status_message, Class::Frequent);
    }
    if presence & RARE_DROPPED != 0 {
        put_uvarint(buf, s.dropped_attributes_count.into());
        put_uvarint(buf, s.dropped_events_count.into());
        put_uvarint(buf, s.dropped_links_count.into());
    }
    if presence & RARE_EVENTS != 0 {
        put_uvarint(buf, s.events.len() as u64);
        for e in &s.events {
            put_ivarint(buf, e.time_unix_nanos.wrapping_sub(s.start_unix_nanos) as i64);
            enc.put_string(buf, &e.name, Class::Shared);
            enc.attrs(buf, &e.attributes, Class::Frequent);
            put_uvarint(buf, e.dropped_attributes_count.into());
        }
    }
    if presence & RARE_LINKS != 0 {
        put_uvarint(buf, s.links.len() as u64);
        for l in &s.links {
            put_bytes(buf, &l.trace_id);
            put_bytes(buf, &l.span_id);
            enc.put_string(buf, &l.trace_state, Class::Inline);
            enc.attrs(buf, &l.attributes, Class::Frequent);
            put_uvarint(buf, l.dropped_attributes_count.into());
            put_uvarint(buf, l.flags.into());
        }
    }
    if presence & RARE_WARNINGS != 0 {
        put_uvarint(buf, s.warnings.len() as u64);
        for w in &s.warnings {
            enc.put_string(buf, w, Class::Inline);
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

thread_local! {
    /// One zstd context per thread: creating one per block costs more than compressing a small block.
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

/// A block's local definitions.
#[derive(Default)]
struct Local {
    resources: Vec<Arc<Resource>>,
    scopes: Vec<Arc<Scope>>,
    templates: Vec<Arc<Template>>,
}

/// Resolves refs against a block's local definitions and a shared dictionary.
struct Refs<'a> {
    local: &'a Local,
    shared: &'a [DictEntry],
}

impl<'a> Refs<'a> {
    fn shared(&self, r: u64) -> Result<&'a DictEntry, CodecError> {
        usize::try_from(r >> 1).ok().and_then(|i| self.shared.get(i)).or_corrupt("dictionary reference out of range")
    }

    fn local<T>(list: &[Arc<T>], r: u64) -> Result<&Arc<T>, CodecError> {
        usize::try_from(r >> 1).ok().and_then(|i| list.get(i)).or_corrupt("local reference out of range")
    }

    fn dict(&self) -> Strings<'_> {
        Strings { strings: &[], shared: Some(self.shared) }
    }

    /// Resolves a ref of one kind: even → `local[r >> 1]`, odd → the shared entry, which `pick` must accept.
    fn entry<T>(
        &self,
        r: &mut Reader<'_>,
        local: &'a [Arc<T>],
        pick: fn(&DictEntry) -> Option<&Arc<T>>,
        not_kind: &'static str,
    ) -> Result<&'a Arc<T>, CodecError> {
        let v = r.uvarint()?;
        if v & 1 == 0 {
            return Self::local(local, v);
        }
        pick(self.shared(v)?).or_corrupt(not_kind)
    }

    fn resource(&self, r: &mut Reader<'_>) -> Result<&'a Arc<Resource>, CodecError> {
        self.entry(
            r,
            &self.local.resources,
            |e| if let DictEntry::Resource(x) = e { Some(x) } else { None },
            "dictionary entry is not a resource",
        )
    }

    fn scope(&self, r: &mut Reader<'_>) -> Result<&'a Arc<Scope>, CodecError> {
        self.entry(
            r,
            &self.local.scopes,
            |e| if let DictEntry::Scope(x) = e { Some(x) } else { None },
            "dictionary entry is not a scope",
        )
    }

    fn template(&self, r: &mut Reader<'_>) -> Result<&'a Arc<Template>, CodecError> {
        self.entry(
            r,
            &self.local.templates,
            |e| if let DictEntry::Template(x) = e { Some(x) } else { None },
            "dictionary entry is not a template",
        )
    }

    fn resource_def(&self, r: &mut Reader<'_>) -> Result<Resource, CodecError> {
        self.resource_def_with(&self.dict(), r)
    }

    fn resource_def_with(&self, d: &Strings<'_>, r: &mut Reader<'_>) -> Result<Resource, CodecError> {
        let attributes = d.attrs(r)?;
        let dropped_attributes_count = r.u32()?;
        let schema_url = d.string(r)?;
        Ok(Resource { attributes, dropped_attributes_count, schema_url })
    }

    fn scope_def(&self, r: &mut Reader<'_>) -> Result<Scope, CodecError> {
        self.scope_def_with(&self.dict(), r)
    }

    fn scope_def_with(&self, d: &Strings<'_>, r: &mut Reader<'_>) -> Result<Scope, CodecError> {
        let name = d.string(r)?;
        let version = d.string(r)?;
        let attributes = d.attrs(r)?;
        let dropped_attributes_count = r.u32()?;
        let schema_url = d.string(r)?;
        Ok(Scope { name, version, attributes, dropped_attributes_count, schema_url })
    }

    fn template_def(&self, r: &mut Reader<'_>) -> Result<Template, CodecError> {
        self.template_def_with(&self.dict(), r)
    }

    fn template_def_with(&self, d: &Strings<'_>, r: &mut Reader<'_>) -> Result<Template, CodecError> {
        let resource = self.resource(r)?.clone();
        let scope = self.scope(r)?.clone();
        let name = d.text(r)?;
        let kind = SpanKind(r.i32()?);
        let n_keys = r.count()?;
        let mut keys = Vec::with_capacity(n_keys);
        let mut defaults = Vec::with_capacity(n_keys);
        for _ in 0..n_keys {
            keys.push(d.text(r)?);
            defaults.push(match r.u8()? {
                0 => None,
                1 => Some(d.value(r, 0)?),
                _ => return Err(CodecError::Corrupt("unknown template default marker")),
            });
        }
        Ok(Template { resource, scope, name, kind, keys, defaults })
    }
}

/// Decodes a version 2 block (the caller checked magic and version), resolving shared-dictionary references
/// through `dicts`. With `span_attributes` false the attribute-value column is not read and every span's
/// `attributes` stay empty ([`crate::decode_outline_with`]).
///
/// # Errors
/// As [`crate::decode_with`].
pub fn decode(
    block: &[u8],
    dicts: &dyn DictLookup,
    max_body_bytes: usize,
    span_attributes: bool,
) -> Result<Vec<Span>, CodecError> {
    let mut r = Reader { buf: block, pos: 5 };
    let dict_id = u64::from_le_bytes(r.array::<8>()?);
    let dict_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("dictionary length"))?;
    let trace_id = TraceId(r.array::<16>()?);
    let base = r.uvarint()?;
    let n = r.count_any()?;
    let head = Head { dict_id, dict_len, traces: vec![(trace_id, n)], base };
    let mut out = decode_rows(head, &mut r, dicts, max_body_bytes, span_attributes, &|_| true)?;
    Ok(out.pop().unwrap_or_default())
}

/// Header fields a block's rows depend on.
pub(crate) struct Head {
    pub(crate) dict_id: u64,
    pub(crate) dict_len: usize,
    /// Each trace of the block with its span count, in row order.
    pub(crate) traces: Vec<(TraceId, usize)>,
    /// Earliest span start, ns since the Unix epoch.
    pub(crate) base: u64,
}

/// Decodes the rows that follow a header (`r` at the span-ID column): one `Vec` of spans per trace of
/// `head.traces`, empty for the traces `want` (given the trace's position) declines. Declined rows are parsed,
/// not built.
pub(crate) fn decode_rows(
    head: Head,
    r: &mut Reader<'_>,
    dicts: &dyn DictLookup,
    max_body_bytes: usize,
    span_attributes: bool,
    want: &dyn Fn(usize) -> bool,
) -> Result<Vec<Vec<Span>>, CodecError> {
    let rows = OpenRows::open(head, r, dicts, max_body_bytes)?;
    let mut out = Vec::with_capacity(rows.traces.len());
    let mut at = rows.first();
    for ordinal in 0..rows.traces.len() {
        let mut spans = Vec::new();
        let keep = |_: &Template, _, _| true;
        let rows_wanted = if want(ordinal) {
            Want::Spans { out: &mut spans, attributes: span_attributes, keep: &keep }
        } else {
            Want::Nothing
        };
        rows.read(&mut at, ordinal, rows_wanted)?;
        out.push(spans);
    }
    Ok(out)
}

/// Where the rows of one trace begin: a position in each section and the running values rows are deltas of.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    /// Read position in each section (section 0, the local table, is read at open).
    pos: [usize; SECTIONS],
    /// Index of the row in the block (into the span-ID column).
    row: usize,
    /// Start of the previous row, ns (the block's base before the first row).
    prev_start: u64,
    /// Flags of the previous row.
    prev_flags: u32,
}

/// The rows of a block, opened: its body decompressed once and its local table and shared dictionary resolved, so
/// that the rows of any of its traces can be built from a [`Cursor`] without building the others'.
pub(crate) struct OpenRows {
    /// Each trace of the block with its span count, in row order.
    pub(crate) traces: Vec<(TraceId, usize)>,
    base: u64,
    span_ids: Vec<SpanId>,
    body: Vec<u8>,
    /// Byte range of each section in `body`.
    sections: [(usize, usize); SECTIONS],
    shared: Option<Dictionary>,
    dict_len: usize,
    strings: Vec<String>,
    local: Local,
}

impl OpenRows {
    /// Opens the rows that follow a header (`r` at the span-ID column).
    ///
    /// # Errors
    /// As [`crate::decode_with`].
    pub(crate) fn open(
        head: Head,
        r: &mut Reader<'_>,
        dicts: &dyn DictLookup,
        max_body_bytes: usize,
    ) -> Result<Self, CodecError> {
        let (dict_id, dict_len) = (head.dict_id, head.dict_len);
        let dictionary: Option<Dictionary> =
            if dict_id != 0 && dict_len > 0 { Some(dicts.dictionary(dict_id, dict_len)?) } else { None };
        let shared: &[DictEntry] = match &dictionary {
            Some(d) => d.get(..dict_len).ok_or(CodecError::MissingDictionary(dict_id))?,
            None => &[],
        };
        let n = head.traces.iter().try_fold(0usize, |a, (_, c)| a.checked_add(*c));
        let n = n.or_corrupt("span count")?;
        if n.checked_mul(8).is_none_or(|b| b > r.buf.len().saturating_sub(r.pos)) {
            return Err(CodecError::Corrupt("span count larger than the span-ID column"));
        }
        let mut span_ids = Vec::with_capacity(n);
        for _ in 0..n {
            span_ids.push(SpanId(r.array::<8>()?));
        }
        let body = match r.u8()? {
            0 => r.bytes()?.to_vec(),
            1 => {
                let raw_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("body length"))?;
                if raw_len > max_body_bytes {
                    return Err(CodecError::Corrupt("body larger than the limit"));
                }
                let raw = decompress(r.bytes()?, raw_len)?;
                if raw.len() != raw_len {
                    return Err(CodecError::Corrupt("body length mismatch"));
                }
                raw
            }
            _ => return Err(CodecError::Corrupt("unknown body mode")),
        };
        let mut sections = [(0, 0); SECTIONS];
        let mut b = Reader { buf: &body, pos: 0 };
        for section in &mut sections {
            let len = b.count_any()?;
            let start = b.pos;
            b.take(len)?;
            *section = (start, b.pos);
        }

        // Local table: strings, then resources, scopes and templates (each may reference the ones before).
        let t = &mut Reader { buf: &body[sections[0].0..sections[0].1], pos: 0 };
        let n_strings = t.count()?;
        let mut strings = Vec::with_capacity(n_strings);
        for _ in 0..n_strings {
            let s = std::str::from_utf8(t.bytes()?).map_err(|_| CodecError::Corrupt("string is not utf-8"))?;
            strings.push(s.to_string());
        }
        let d = Strings { strings: &strings, shared: Some(shared) };
        let mut local = Local::default();
        let n_res = t.count()?;
        for _ in 0..n_res {
            let x = Refs { local: &local, shared }.resource_def_with(&d, t)?;
            local.resources.push(Arc::new(x));
        }
        let n_scopes = t.count()?;
        for _ in 0..n_scopes {
            let x = Refs { local: &local, shared }.scope_def_with(&d, t)?;
            local.scopes.push(Arc::new(x));
        }
        let n_templates = t.count()?;
        for _ in 0..n_templates {
            let x = Refs { local: &local, shared }.template_def_with(&d, t)?;
            local.templates.push(Arc::new(x));
        }
        Ok(OpenRows {
            traces: head.traces,
            base: head.base,
            span_ids,
            body,
            sections,
            shared: dictionary,
            dict_len,
            strings,
            local,
        })
    }

    /// The cursor at the first row.
    pub(crate) fn first(&self) -> Cursor {
        Cursor { pos: [0; SECTIONS], row: 0, prev_start: self.base, prev_flags: 0 }
    }

    /// Heap bytes held (body, span IDs, trace table and local strings; local definitions approximately).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.body.len()
            + self.span_ids.len() * 8
            + self.traces.len() * 24
            + self.strings.iter().map(|s| s.len() + 24).sum::<usize>()
            + (self.local.resources.len() + self.local.scopes.len() + self.local.templates.len()) * 256
    }

    /// Reads the rows of trace `ordinal`, which must start at `at`, and leaves `at` at the next trace's first row.
    /// What is built of them is `want`'s choice: nothing, spans, or outlines.
    ///
    /// # Errors
    /// [`CodecError::Corrupt`] when a row is truncated or references what does not exist.
    pub(crate) fn read(&self, at: &mut Cursor, ordinal: usize, mut want: Want<'_>) -> Result<(), CodecError> {
        let &(trace_id, count) = self.traces.get(ordinal).or_corrupt("trace ordinal")?;
        let shared: &[DictEntry] = self.shared.as_deref().and_then(|d| d.get(..self.dict_len)).unwrap_or(&[]);
        let d = Strings { strings: &self.strings, shared: Some(shared) };
        let refs = Refs { local: &self.local, shared };
        let mut cols: [Reader<'_>; SECTIONS] = std::array::from_fn(|k| {
            let (start, end) = self.sections[k];
            Reader { buf: &self.body[start..end], pos: at.pos[k] }
        });
        match &mut want {
            Want::Spans { out, .. } => out.reserve(count),
            Want::Outlines(out) => out.reserve(count),
            Want::Nothing => {}
        }
        let (mut prev_start, mut prev_flags, mut i) = (at.prev_start, at.prev_flags, at.row);
        for _ in 0..count {
            let parent = cols[1].uvarint()?;
            let raw_parent = if parent == 1 { Some(cols[2].bytes()?) } else { None };
            let start = prev_start.wrapping_add(cols[3].ivarint()? as u64);
            prev_start = start;
            let end = start.wrapping_add(cols[4].uvarint()?);
            let t = refs.template(&mut cols[5])?;
            let (out, attributes) = match &mut want {
                Want::Spans { out, attributes, keep } if keep(t, start, end) => (out, *attributes),
                Want::Outlines(out) => {
                    let parent = self.parent_id(parent, raw_parent, i)?;
                    skip_attributes(&mut cols[6], t)?;
                    let (flags, status_code) = skip_rare(&mut cols[7])?;
                    prev_flags = flags.unwrap_or(prev_flags);
                    out.push(SpanOutline {
                        span_id: *self.span_ids.get(i).or_corrupt("span-ID column")?,
                        start_unix_nanos: start,
                        end_unix_nanos: end,
                        template: t.clone(),
                        root: parent.len() != 8 || parent == [0; 8],
                        status_code,
                    });
                    i += 1;
                    continue;
                }
                _ => {
                    skip_attributes(&mut cols[6], t)?;
                    prev_flags = skip_rare(&mut cols[7])?.0.unwrap_or(prev_flags);
                    i += 1;
                    continue;
                }
            };
            let parent_span_id = self.parent_id(parent, raw_parent, i)?.to_vec();
            let attributes = if attributes {
                self::attributes(&d, &mut cols[6], t)?
            } else {
                skip_attributes(&mut cols[6], t)?;
                Vec::new()
            };
            let mut span = Span {
                trace_id,
                span_id: *self.span_ids.get(i).or_corrupt("span-ID column")?,
                parent_span_id,
                trace_state: String::new(),
                flags: prev_flags,
                name: t.name.clone(),
                kind: t.kind,
                start_unix_nanos: start,
                end_unix_nanos: end,
                attributes,
                dropped_attributes_count: 0,
                events: Vec::new(),
                dropped_events_count: 0,
                links: Vec::new(),
                dropped_links_count: 0,
                status_code: StatusCode(0),
                status_message: String::new(),
                resource: t.resource.clone(),
                scope: t.scope.clone(),
                warnings: Vec::new(),
            };
            decode_rare(&d, &mut cols[7], &mut span)?;
            prev_flags = span.flags;
            out.push(span);
            i += 1;
        }
        *at = Cursor { pos: std::array::from_fn(|k| cols[k].pos), row: i, prev_start, prev_flags };
        Ok(())
    }

    /// The parent span ID of row `i` from its parent column value (`parent`) and raw parent bytes: empty, the
    /// raw bytes, or the span ID of the row `parent` references.
    fn parent_id<'b>(&'b self, parent: u64, raw_parent: Option<&'b [u8]>, i: usize) -> Result<&'b [u8], CodecError> {
        Ok(match (parent, raw_parent) {
            (0, _) => &[],
            (_, Some(raw)) => raw,
            (k, None) => {
                let delta = unzigzag(k - 2);
                let idx = (i as i64).checked_sub(delta).or_corrupt("parent index")?;
                let idx = usize::try_from(idx).map_err(|_| CodecError::Corrupt("parent index"))?;
                &self.span_ids.get(idx).or_corrupt("parent index out of range")?.0
            }
        })
    }
}

impl SpanOutline {
    /// The service that emitted the span.
    pub fn service_name(&self) -> &str {
        self.template.resource.service_name()
    }

    /// Operation (span name).
    pub fn name(&self) -> &str {
        &self.template.name
    }

    /// True when the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::ERROR
    }
}

/// What [`OpenRows::read`] builds of a trace's rows.
pub(crate) enum Want<'a> {
    /// Nothing: the rows are read past.
    Nothing,
    /// The spans of the rows `keep(template, start, end)` accepts (start and end in ns since the Unix epoch),
    /// with span attributes when `attributes`, appended to `out`.
    Spans { out: &'a mut Vec<Span>, attributes: bool, keep: &'a dyn Fn(&Template, u64, u64) -> bool },
    /// The outline of every row, appended.
    Outlines(&'a mut Vec<SpanOutline>),
}

/// What a row tells without building its span: identity, times, template (service, scope, name, kind), whether it
/// is a root, and status. All a trace summary reads; reading it allocates nothing but the outline itself.
#[derive(Clone, Debug)]
pub struct SpanOutline {
    /// The span's ID.
    pub span_id: SpanId,
    /// Start, ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, ns since the Unix epoch.
    pub end_unix_nanos: u64,
    /// The span's template: resource (service), scope, name and kind.
    pub template: Arc<Template>,
    /// True when the span has no well-formed non-zero parent ID (as [`Span::parent_id`] is `None`).
    pub root: bool,
    /// Status code (OTLP `Status.code`).
    pub status_code: StatusCode,
}

/// Skips one span's entry in the attribute-value column.
fn skip_attributes(col: &mut Reader<'_>, t: &Template) -> Result<(), CodecError> {
    let mask_at = col.pos;
    let mask_end = mask_at.checked_add(t.keys.len().div_ceil(8)).or_corrupt("value mask")?;
    let mask = col.buf.get(mask_at..mask_end).or_corrupt("truncated value mask")?;
    let present: u32 = mask.iter().map(|b| b.count_ones()).sum();
    col.pos = mask_end;
    for _ in 0..present {
        skip_value(col, 0)?;
    }
    Ok(())
}

/// One span's attribute values from the value column: those its mask marks, the template's defaults for the rest.
fn attributes(d: &Strings<'_>, col: &mut Reader<'_>, t: &Template) -> Result<Vec<KeyValue>, CodecError> {
    let mut attributes = Vec::with_capacity(t.keys.len());
    let mask_at = col.pos;
    let mask_end = mask_at.checked_add(t.keys.len().div_ceil(8)).or_corrupt("value mask")?;
    col.pos = mask_end;
    for (i, (key, default)) in t.keys.iter().zip(&t.defaults).enumerate() {
        let bits = *col.buf.get(mask_at + i / 8).or_corrupt("truncated value mask")?;
        let value = if bits & (1 << (i % 8)) != 0 {
            d.value(col, 0)?
        } else {
            default.clone().or_corrupt("value omitted but the template has no default")?
        };
        attributes.push(KeyValue { key: key.clone(), value });
    }
    Ok(attributes)
}

fn decode_rare(d: &Strings<'_>, r: &mut Reader<'_>, s: &mut Span) -> Result<(), CodecError> {
    let presence = r.u8()?;
    if presence & RARE_FLAGS != 0 {
        s.flags = r.u32()?;
    }
    if presence & RARE_TRACE_STATE != 0 {
        s.trace_state = d.string(r)?;
    }
    if presence & RARE_STATUS_CODE != 0 {
        s.status_code = StatusCode(r.i32()?);
    }
    if presence & RARE_STATUS_MESSAGE != 0 {
        s.status_message = d.string(r)?;
    }
    if presence & RARE_DROPPED != 0 {
        s.dropped_attributes_count = r.u32()?;
        s.dropped_events_count = r.u32()?;
        s.dropped_links_count = r.u32()?;
    }
    if presence & RARE_EVENTS != 0 {
        s.events = d.events(r, s.start_unix_nanos)?;
    }
    if presence & RARE_LINKS != 0 {
        s.links = d.links(r)?;
    }
    if presence & RARE_WARNINGS != 0 {
        s.warnings = d.strings(r)?;
    }
    Ok(())
}

/// Skips one span's rare fields; returns its flags when the row sets them, and its status code.
fn skip_rare(r: &mut Reader<'_>) -> Result<(Option<u32>, StatusCode), CodecError> {
    let skip_attrs = |r: &mut Reader<'_>| -> Result<(), CodecError> {
        for _ in 0..r.count()? {
            r.uvarint()?;
            skip_value(r, 0)?;
        }
        Ok(())
    };
    let presence = r.u8()?;
    let flags = if presence & RARE_FLAGS != 0 { Some(r.u32()?) } else { None };
    if presence & RARE_TRACE_STATE != 0 {
        r.uvarint()?;
    }
    let status_code = if presence & RARE_STATUS_CODE != 0 { StatusCode(r.i32()?) } else { StatusCode(0) };
    if presence & RARE_STATUS_MESSAGE != 0 {
        r.uvarint()?;
    }
    if presence & RARE_DROPPED != 0 {
        for _ in 0..3 {
            r.u32()?;
        }
    }
    if presence & RARE_EVENTS != 0 {
        for _ in 0..r.count()? {
            r.ivarint()?;
            r.uvarint()?;
            skip_attrs(r)?;
            r.u32()?;
        }
    }
    if presence & RARE_LINKS != 0 {
        for _ in 0..r.count()? {
            r.bytes()?;
            r.bytes()?;
            r.uvarint()?;
            skip_attrs(r)?;
            r.u32()?;
            r.u32()?;
        }
    }
    if presence & RARE_WARNINGS != 0 {
        for _ in 0..r.count()? {
            r.uvarint()?;
        }
    }
    Ok((flags, status_code))
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}
