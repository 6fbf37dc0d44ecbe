//! Version 1 of the trace block (issue #2): one zstd frame over a block-local string dictionary, resources,
//! scopes and one column per span field. Still written by [`encode`] for compatibility tests and benchmarks, and
//! read by every build.
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
//! `#` marks an index into the string dictionary.

use std::collections::HashMap;
use std::sync::Arc;

use skein_model::{KeyValue, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId};

use crate::dict::DictLookup;
use crate::values::{Strings, position_or_push, put_attrs};
use crate::wire::{OrCorrupt, Reader, put_bytes, put_ivarint, put_uvarint};
use crate::{BlockVersion, CodecError, MAGIC, MAX_BODY_BYTES, ZSTD_LEVEL};

/// Version byte of this layout.
pub const VERSION_1: u8 = 1;

/// Version 1 behind the versioned interface.
pub struct V1;

impl BlockVersion for V1 {
    const VERSION: u8 = VERSION_1;

    fn decode(block: &[u8], _dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
        decode(block)
    }
}

/// Encodes the spans of one trace into a version 1 block.
///
/// # Errors
/// As [`crate::encode`].
pub fn encode(spans: &[Span]) -> Result<Vec<u8>, CodecError> {
    let first = spans.first().ok_or(CodecError::NotOneTrace("no spans".into()))?;
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

/// Decodes a version 1 block (magic and version byte included).
///
/// # Errors
/// As [`crate::decode`].
pub fn decode(block: &[u8]) -> Result<Vec<Span>, CodecError> {
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
    let d = Strings { strings: &strings, shared: None };
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
                span_ids.get(idx).or_corrupt("parent index out of range")?.0.to_vec()
            }
        };
        let start = base.checked_add(cols[3].uvarint()?).or_corrupt("start overflows")?;
        let end = start.wrapping_add(cols[4].uvarint()?);
        let name = d.text(&mut cols[5])?;
        let kind = SpanKind(cols[6].i32()?);
        let flags = cols[7].u32()?;
        let trace_state = d.string(&mut cols[8])?;
        let status_code = StatusCode(cols[9].i32()?);
        let status_message = d.string(&mut cols[10])?;
        let resource = resources.get(cols[11].count_any()?).or_corrupt("resource index")?.clone();
        let scope = scopes.get(cols[12].count_any()?).or_corrupt("scope index")?.clone();
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
