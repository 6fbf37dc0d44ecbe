//! Version 3 of the trace-block codec: a *pack*, the spans of many traces in one block, so that small traces share
//! one zstd frame, one local table and one header instead of paying each their own (a one-span trace costs little
//! more than its IDs and the values that differ from its template).
//!
//! ```text
//! "SKTB" | version u8 = 3 | dict_id u64 LE | dict_len uvarint | trace_count uvarint
//!        | trace_id [16] × trace_count | span_count uvarint × trace_count | base_start_nanos uvarint
//!        | span_id [8] × Σ span_count | mode u8 | body
//! ```
//!
//! Everything after the trace table is version 2's layout ([`crate::v2`]) over all spans of the pack, one trace
//! after another in trace-table order: rows of trace `k` follow those of trace `k − 1`, parents are referenced
//! within their trace only, and start deltas run across trace boundaries. A trace may appear more than once (two
//! chunks of it in one pack). The trace table sits outside the zstd frame, so [`trace_ids`] reads it without
//! decompressing, and [`decode_pack`] builds only the traces a reader asks for (the others' rows are parsed and
//! skipped).

use skein_model::{Span, TraceId};

use crate::dict::Template;
use crate::v2::{Cursor, Head, OpenRows, SharedDict, SpanOutline, Want, decode_rows, encode_rows, one_trace};
use crate::wire::{Reader, put_uvarint};
use crate::{BlockVersion, CodecError, DictLookup, MAGIC, MAX_BODY_BYTES};

/// Version byte of this layout.
pub const VERSION_3: u8 = 3;

/// Version 3 behind the versioned interface: decoding yields the spans of every trace of the pack.
pub struct V3;

impl BlockVersion for V3 {
    const VERSION: u8 = VERSION_3;

    fn decode(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
        Ok(decode_pack(block, dicts, &|_| true, true)?.into_iter().flatten().collect())
    }
}

/// Encodes a pack of traces: `traces[k]` holds the spans of one trace (or one chunk of it), in order.
///
/// # Errors
/// [`CodecError::NotOneTrace`] when `traces` is empty or one of its entries is empty or mixes trace IDs;
/// [`CodecError::Zstd`] if compression fails.
pub fn encode_pack(traces: &[&[Span]], dict: Option<&mut SharedDict>) -> Result<Vec<u8>, CodecError> {
    if traces.is_empty() {
        return Err(CodecError::NotOneTrace("a pack without traces".into()));
    }
    let ids = traces.iter().map(|t| one_trace(t)).collect::<Result<Vec<_>, _>>()?;
    let rows = encode_rows(traces, dict)?;
    let n: usize = traces.iter().map(|t| t.len()).sum();
    let mut out = Vec::with_capacity(32 + ids.len() * 18 + n * 8 + rows.body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION_3);
    out.extend_from_slice(&rows.dict_id.to_le_bytes());
    put_uvarint(&mut out, rows.dict_len as u64);
    put_uvarint(&mut out, ids.len() as u64);
    for id in &ids {
        out.extend_from_slice(&id.0);
    }
    for t in traces {
        put_uvarint(&mut out, t.len() as u64);
    }
    put_uvarint(&mut out, rows.base);
    for s in traces.iter().flat_map(|t| t.iter()) {
        out.extend_from_slice(&s.span_id.0);
    }
    out.extend_from_slice(&rows.body);
    Ok(out)
}

/// Parses a pack's header up to its span-ID column.
fn head(block: &[u8]) -> Result<(Head, Reader<'_>), CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if block[4] != VERSION_3 {
        return Err(CodecError::UnsupportedVersion(block[4]));
    }
    let mut r = Reader { buf: block, pos: 5 };
    let dict_id = u64::from_le_bytes(r.array::<8>()?);
    let dict_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("dictionary length"))?;
    let n = r.count_any()?;
    if n.checked_mul(17).is_none_or(|b| b > r.buf.len().saturating_sub(r.pos)) {
        return Err(CodecError::Corrupt("trace count larger than the trace table"));
    }
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(TraceId(r.array::<16>()?));
    }
    let mut traces = Vec::with_capacity(n);
    for id in ids {
        traces.push((id, r.count_any()?));
    }
    let base = r.uvarint()?;
    Ok((Head { dict_id, dict_len, traces, base }, r))
}

/// The traces of a pack, in trace-table order, read from its header (the body is not touched).
///
/// # Errors
/// [`CodecError::BadMagic`] / [`CodecError::UnsupportedVersion`] for anything but a pack;
/// [`CodecError::Corrupt`] when the header is truncated.
pub fn trace_ids(block: &[u8]) -> Result<Vec<TraceId>, CodecError> {
    Ok(head(block)?.0.traces.into_iter().map(|(id, _)| id).collect())
}

/// Decodes a pack: one `Vec` of spans per entry of its trace table, empty for the entries `want` (given the
/// entry's position) declines. With `span_attributes` false, span attributes are left empty, as
/// [`crate::decode_outline_with`] does.
///
/// # Errors
/// As [`crate::decode_with`].
pub fn decode_pack(
    block: &[u8],
    dicts: &dyn DictLookup,
    want: &dyn Fn(usize) -> bool,
    span_attributes: bool,
) -> Result<Vec<Vec<Span>>, CodecError> {
    let (head, mut r) = head(block)?;
    decode_rows(head, &mut r, dicts, MAX_BODY_BYTES, span_attributes, want)
}

/// A pack opened for reading its traces one at a time: the body is decompressed and the local table and the
/// shared dictionary resolved once ([`OpenPack::open`]); [`OpenPack::trace`] then builds the spans of one trace
/// alone, reading past the rows before it once (the first row of every trace read past is remembered). What a
/// search that confirms or fetches a few traces of a pack of thousands wants; [`decode_pack`] is cheaper for
/// decoding most of a pack once. Packs list their traces newest first, so a newest-first search reads a prefix.
pub struct OpenPack {
    rows: OpenRows,
    /// The cursor at the first row of each trace located so far, in trace-table order.
    starts: Vec<Cursor>,
    /// The cursor at the first row of the next trace to locate.
    next: Cursor,
}

impl OpenPack {
    /// Opens a pack: decompresses its body and reads its local table.
    ///
    /// # Errors
    /// As [`crate::decode_with`].
    pub fn open(block: &[u8], dicts: &dyn DictLookup) -> Result<Self, CodecError> {
        let (head, mut r) = head(block)?;
        let rows = OpenRows::open(head, &mut r, dicts, MAX_BODY_BYTES)?;
        let next = rows.first();
        Ok(OpenPack { starts: Vec::new(), next, rows })
    }

    /// The pack's trace table: each trace (or chunk of one) with its span count, in order.
    pub fn traces(&self) -> &[(TraceId, usize)] {
        &self.rows.traces
    }

    /// The spans of the trace at `ordinal` in the trace table (with span attributes when `span_attributes`).
    ///
    /// # Errors
    /// [`CodecError::Corrupt`] when `ordinal` is past the trace table or its rows reference what does not exist.
    pub fn trace(&mut self, ordinal: usize, span_attributes: bool) -> Result<Vec<Span>, CodecError> {
        self.spans_where(ordinal, span_attributes, &|_, _, _| true)
    }

    /// The spans of the trace at `ordinal` whose rows `keep(template, start_unix_nanos, end_unix_nanos)` accepts;
    /// the other rows are read past without being built. What confirms a search match cheaply: only the spans
    /// that can match (service, operation, window, duration: all in the template and times) are built with
    /// their attributes.
    ///
    /// # Errors
    /// As [`OpenPack::trace`].
    pub fn spans_where(
        &mut self,
        ordinal: usize,
        span_attributes: bool,
        keep: &dyn Fn(&Template, u64, u64) -> bool,
    ) -> Result<Vec<Span>, CodecError> {
        let mut at = self.locate(ordinal)?;
        let mut out = Vec::new();
        self.rows.read(&mut at, ordinal, Want::Spans { out: &mut out, attributes: span_attributes, keep })?;
        Ok(out)
    }

    /// The outline of every span of the trace at `ordinal` ([`SpanOutline`]: what a trace summary reads), without
    /// building spans.
    ///
    /// # Errors
    /// As [`OpenPack::trace`].
    pub fn outline(&mut self, ordinal: usize) -> Result<Vec<SpanOutline>, CodecError> {
        let mut at = self.locate(ordinal)?;
        let mut out = Vec::new();
        self.rows.read(&mut at, ordinal, Want::Outlines(&mut out))?;
        Ok(out)
    }

    /// The cursor at the first row of the trace at `ordinal`, reading past the rows before it once.
    fn locate(&mut self, ordinal: usize) -> Result<Cursor, CodecError> {
        if ordinal >= self.rows.traces.len() {
            return Err(CodecError::Corrupt("trace ordinal past the trace table"));
        }
        while self.starts.len() <= ordinal {
            self.starts.push(self.next);
            self.rows.read(&mut self.next, self.starts.len() - 1, Want::Nothing)?;
        }
        Ok(self.starts[ordinal])
    }

    /// Heap bytes held, approximately (dominated by the decompressed body).
    pub fn heap_bytes(&self) -> usize {
        self.rows.heap_bytes() + self.rows.traces.len() * std::mem::size_of::<Cursor>()
    }
}
