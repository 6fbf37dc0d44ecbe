//! Storage: the [`TraceStore`] trait every backend implements, and the backend-independent parts of the storage
//! layout — trace chunks, index entries (one per trace chunk and service, DESIGN §4), search semantics.
//!
//! Data flow: the assembler hands finished trace chunks to `skein-ingest`'s writer, which deduplicates late spans,
//! builds a [`WriteBatch`] with [`prepare_chunk`] (block bytes from [`skein_codec`], index entries, operations and
//! dependency edges) and calls [`TraceStore::write`]. The query API (`skein-query`) calls the read methods. Only
//! the backend modules know about their engine: [`embedded`] (fjall, feature `embedded`) and [`scylla`] (the
//! ScyllaDB driver and keyspace management, feature `scylla` — all the operator links).
//!
//! This crate must not import `skein-ingest`, `skein-query` or any server code: it is a library of stores.

mod dicts;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod index;
pub mod metrics;
#[cfg(feature = "scylla")]
pub mod scylla;

use std::collections::{BTreeMap, BTreeSet};

pub use dicts::{DictAppend, Dictionaries, MAX_OPEN_DICTIONARIES};
pub use index::{
    ENTRY_START_SPREAD_NANOS, IndexEntry, PAGE_SPAN_NANOS, PageEntry, PageMerger, TagFilter, decode_page, encode_page,
};

use skein_codec::{CodecError, SpanOutline};
use skein_model::dependencies::DependencyEdge;
use skein_model::{Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine (fjall or ScyllaDB) failed.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored block could not be decoded.
    #[error("trace block: {0}")]
    Codec(#[from] CodecError),
    /// A filesystem operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking task was cancelled or panicked.
    #[error("storage task failed: {0}")]
    Task(String),
}

/// Storage result.
pub type StoreResult<T> = Result<T, StoreError>;

/// One encoded trace chunk with everything that indexes it.
#[derive(Clone, Debug)]
pub struct PreparedChunk {
    /// The trace.
    pub trace_id: TraceId,
    /// Earliest span start in the chunk, ns since the Unix epoch (decides the time partition).
    pub start_unix_nanos: u64,
    /// Number of spans in the block.
    pub span_count: usize,
    /// The chunk's own block ([`skein_codec`]) with [`StoreLayout::PerTrace`]; empty with [`StoreLayout::Packed`],
    /// where the batch's [`WriteBatch::packs`] hold the spans.
    pub block: Vec<u8>,
    /// Shared-dictionary entries the block introduced; stored with (or before) it.
    pub dict: Option<DictAppend>,
    /// True when the trace is kept for the longer `retention_important` (it has an error or a slow span).
    pub important: bool,
    /// One index entry per service in the chunk (and stretch of span starts).
    pub index: Vec<IndexEntry>,
    /// With [`StoreLayout::Packed`]: the process-level tags of each distinct process in the chunk, which its
    /// entries reference by hash; empty otherwise.
    pub processes: Vec<ProcessTags>,
    /// Distinct (service, span kind, operation) triples.
    pub operations: BTreeSet<(String, SpanKind, String)>,
    /// Parent→child service edges, counted per time bucket.
    pub edges: Vec<DependencyEdge>,
}

/// How a backend lays out what it stores: blocks per trace chunk or packs of many, and where index entries keep
/// process-level tags ([`for_each_process_tag`]: resource and scope attributes, scope name and version), which
/// every span of a process repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreLayout {
    /// One block per chunk ([`PreparedChunk::block`]); every tag in the entry's bloom filter, so entries are
    /// self-contained (ScyllaDB).
    #[default]
    PerTrace,
    /// The chunks of a batch packed by partition ([`WriteBatch::packs`], codec version 3), so a one-span trace costs
    /// little more than its span; span-level tags in a byte-sized bloom filter and process-level tags once per
    /// process in a table of the partition, which entries reference by [`ProcessTags::hash`] (the embedded store).
    /// A resource with fifteen attributes then costs its entries eight bytes instead of fifteen filter slots each.
    Packed,
}

/// The process-level tags of one process (resource and scope) of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessTags {
    /// The service.
    pub service: String,
    /// FNV-1a (64-bit) over the pairs, in order; the key of the process in its partition's table.
    pub hash: u64,
    /// `(key, value as string)` pairs, in [`for_each_process_tag`] order (shared by every chunk of a write batch
    /// that references the process).
    pub pairs: std::sync::Arc<[(String, String)]>,
}

/// What one [`TraceStore::write`] call persists atomically.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    /// The chunks.
    pub chunks: Vec<PreparedChunk>,
    /// With [`StoreLayout::Packed`]: the chunks' spans, one pack per partition and tier; every chunk is in exactly
    /// one pack. Empty with [`StoreLayout::PerTrace`].
    pub packs: Vec<PreparedPack>,
}

/// The spans of many chunks of one partition and tier in one version 3 block ([`skein_codec::v3`]).
#[derive(Clone, Debug)]
pub struct PreparedPack {
    /// Earliest start among its chunks, ns since the Unix epoch (the partition, as a chunk's start decides it).
    pub start_unix_nanos: u64,
    /// The retention tier of all its chunks.
    pub important: bool,
    /// The pack.
    pub block: Vec<u8>,
    /// Shared-dictionary entries the pack introduced; stored with (or before) it.
    pub dict: Option<DictAppend>,
    /// The pack's chunks: positions in [`WriteBatch::chunks`], in the pack's trace-table order (by start).
    pub chunks: Vec<usize>,
    /// [`index::TraceFilter`] bytes over the pack's trace IDs.
    pub trace_filter: Vec<u8>,
    /// The chunks' index entries as pages ([`index::encode_packed_page`]): `(service, newest entry start ns,
    /// page)`, one per service and stretch of at most [`PAGE_SPAN_NANOS`].
    pub pages: Vec<(String, u64, Vec<u8>)>,
}

/// Most spans in one pack ([`StoreLayout::Packed`]), unless one trace chunk alone has more: reading a trace by ID
/// parses its whole pack (about 1 ms for this many spans), so a write batch of large traces becomes several packs.
pub const MAX_PACK_SPANS: usize = 8192;

/// The start second of the time partition of `partition_secs` seconds that holds data starting at
/// `start_unix_nanos` (ns since the Unix epoch).
pub fn partition_start_secs(start_unix_nanos: u64, partition_secs: u64) -> u64 {
    let partition_secs = partition_secs.max(1);
    start_unix_nanos / 1_000_000_000 / partition_secs * partition_secs
}

/// Prepares a write batch for a store of `layout` ([`TraceStore::layout`]): each input is a chunk's spans, its
/// dependency edges and its retention tier, as [`prepare_chunk`] takes them. With [`StoreLayout::Packed`] the
/// chunks are grouped by partition and tier into packs encoded with the partition's shared dictionary, each with
/// its trace filter and index pages.
///
/// # Errors
/// [`StoreError::Codec`] when a chunk is not one trace or encoding fails.
pub fn prepare_batch<'a>(
    inputs: impl IntoIterator<Item = (&'a [Span], Vec<DependencyEdge>, bool)>,
    dicts: &Dictionaries,
    layout: StoreLayout,
) -> StoreResult<WriteBatch> {
    let inputs: Vec<_> = inputs.into_iter().collect();
    if layout == StoreLayout::PerTrace {
        let chunks = inputs
            .into_iter()
            .map(|(spans, edges, important)| prepare_chunk(spans, edges, Some(dicts), important, layout))
            .collect::<StoreResult<Vec<_>>>()?;
        return Ok(WriteBatch { chunks, packs: Vec::new() });
    }
    let mut chunks = Vec::with_capacity(inputs.len());
    let mut spans_of = Vec::with_capacity(inputs.len());
    let mut groups: BTreeMap<(u64, bool), Vec<usize>> = BTreeMap::new();
    let mut processes = index::ProcessCache::default();
    for (i, (spans, edges, important)) in inputs.into_iter().enumerate() {
        let c = prepare_chunk_with(spans, edges, None, important, layout, &mut processes)?;
        groups.entry((dicts.partition_of(c.start_unix_nanos), important)).or_default().push(i);
        chunks.push(c);
        spans_of.push(spans);
    }
    let mut packs = Vec::with_capacity(groups.len());
    // Traces newest first, as searches read them: an index page (newest first) then names them by nearly constant
    // steps, and a search that opens a pack (codec::OpenPack) reads past only the rows before its newest matches.
    // A group is cut into packs of at most MAX_PACK_SPANS spans (a trace is never split).
    let mut runs: Vec<(bool, Vec<usize>)> = Vec::new();
    for ((_, important), mut members) in groups {
        members.sort_by_key(|&i| std::cmp::Reverse((chunks[i].start_unix_nanos, chunks[i].trace_id)));
        let (mut run, mut spans) = (Vec::new(), 0);
        for i in members {
            if !run.is_empty() && spans + chunks[i].span_count > MAX_PACK_SPANS {
                runs.push((important, std::mem::take(&mut run)));
                spans = 0;
            }
            spans += chunks[i].span_count;
            run.push(i);
        }
        runs.push((important, run));
    }
    for (important, members) in runs {
        let traces: Vec<&[Span]> = members.iter().map(|&i| spans_of[i]).collect();
        let start_unix_nanos = members.iter().map(|&i| chunks[i].start_unix_nanos).min().unwrap_or(0);
        let (block, dict) = dicts.encode_pack(&traces, start_unix_nanos, important)?;
        let trace_filter = index::TraceFilter::build(members.iter().map(|&i| chunks[i].trace_id)).into_bytes();
        let entries: Vec<(u32, &IndexEntry)> = members
            .iter()
            .enumerate()
            .flat_map(|(ordinal, &i)| chunks[i].index.iter().map(move |e| (ordinal as u32, e)))
            .collect();
        let pages = index::packed_pages(&entries)?;
        packs.push(PreparedPack { start_unix_nanos, important, block, dict, chunks: members, trace_filter, pages });
    }
    Ok(WriteBatch { chunks, packs })
}

/// Encodes a trace chunk and derives its index entries and operations; `edges` are its dependency edges
/// (`skein_model::dependencies::edges`, against the trace's stored spans for a late chunk), computed once by the
/// caller, which usually has them already.
/// With `dicts`, the block references the partition's shared dictionary; without, it is self-contained. `layout`
/// is the target store's [`TraceStore::layout`].
///
/// # Errors
/// [`StoreError::Codec`] when the spans are not one trace.
pub fn prepare_chunk(
    spans: &[Span],
    edges: Vec<DependencyEdge>,
    dicts: Option<&Dictionaries>,
    important: bool,
    layout: StoreLayout,
) -> StoreResult<PreparedChunk> {
    prepare_chunk_with(spans, edges, dicts, important, layout, &mut index::ProcessCache::default())
}

/// [`prepare_chunk`] with the process tags of a whole batch computed once, in `processes`.
fn prepare_chunk_with(
    spans: &[Span],
    edges: Vec<DependencyEdge>,
    dicts: Option<&Dictionaries>,
    important: bool,
    layout: StoreLayout,
    processes: &mut index::ProcessCache,
) -> StoreResult<PreparedChunk> {
    let trace_id = spans.first().ok_or_else(|| CodecError::NotOneTrace("no spans".into()))?.trace_id;
    let start_unix_nanos = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let (block, dict) = match (layout, dicts) {
        (StoreLayout::Packed, _) => (Vec::new(), None),
        (StoreLayout::PerTrace, Some(d)) => d.encode(spans, start_unix_nanos, important)?,
        (StoreLayout::PerTrace, None) => (skein_codec::encode(spans)?, None),
    };
    // Distinct borrowed first: chunks repeat a few operations many times.
    let operations: BTreeSet<(&str, SpanKind, &str)> =
        spans.iter().map(|s| (s.service_name(), s.kind, s.name.as_str())).collect();
    let operations =
        operations.into_iter().map(|(service, kind, name)| (service.to_string(), kind, name.to_string())).collect();
    let (index, processes) = index::entries_for_chunk(spans, layout, processes);
    Ok(PreparedChunk {
        trace_id,
        start_unix_nanos,
        span_count: spans.len(),
        block,
        dict,
        important,
        index,
        processes,
        operations,
        edges,
    })
}

/// Which traces are kept for the longer `retention_important`: every trace with an ERROR span, and, with a
/// latency threshold, every trace with a span at least that slow (the tail sampler's latency policy of issue #4
/// feeds the same flag).
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportancePolicy {
    /// Spans at least this long, ns, make their trace important; `None` disables the latency rule.
    pub min_duration_nanos: Option<u64>,
}

impl ImportancePolicy {
    /// True when the spans (all known spans of one trace) earn the important retention tier.
    pub fn is_important<'a>(&self, spans: impl IntoIterator<Item = &'a Span>) -> bool {
        spans.into_iter().any(|s| {
            s.status_code == StatusCode::ERROR || self.min_duration_nanos.is_some_and(|d| s.duration_nanos() >= d)
        })
    }
}

/// A trace search, in Jaeger's terms (REFERENCE §1): every criterion must hold for one span of `service`, and that
/// span must start inside the window — a trace whose spans straddle the window's start is found by the spans that
/// start inside it, as Jaeger's storage integration suite requires.
#[derive(Clone, Debug, Default)]
pub struct TraceQuery {
    /// Service name (required).
    pub service: String,
    /// Operation name; any when `None`.
    pub operation: Option<String>,
    /// `key=value` tags that must all match one span (each tag may match a different place of it: span, resource,
    /// scope, event or link attributes, or Jaeger's synthesized tags such as `error=true` and `span.kind=server`);
    /// values compare as strings, so `200` matches an int 200.
    pub tags: Vec<(String, String)>,
    /// Earliest start of the matching span, ns since the Unix epoch (inclusive).
    pub start_min_unix_nanos: u64,
    /// Latest start of the matching span, ns since the Unix epoch (inclusive).
    pub start_max_unix_nanos: u64,
    /// Minimum span duration, ns (inclusive).
    pub duration_min_nanos: Option<u64>,
    /// Maximum span duration, ns (inclusive).
    pub duration_max_nanos: Option<u64>,
    /// Maximum number of traces returned, newest first.
    pub limit: usize,
}

impl TraceQuery {
    /// True when the chunk behind `entry` (which [`IndexEntry::may_match`] accepted) must be decoded and checked
    /// with [`TraceQuery::matches_spans`], because the entry alone cannot prove that one span meets every
    /// criterion inside the window.
    pub fn needs_verification(&self, entry: &IndexEntry) -> bool {
        let window = self.start_min_unix_nanos..=self.start_max_unix_nanos;
        let all_inside = window.contains(&entry.start_unix_nanos) && window.contains(&entry.latest_start_unix_nanos);
        let one_inside = window.contains(&entry.start_unix_nanos) || window.contains(&entry.latest_start_unix_nanos);
        let duration_criteria = self.duration_min_nanos.is_some() || self.duration_max_nanos.is_some();
        let span_criteria = self.operation.is_some() || duration_criteria;
        // A coarse entry's bounds prove only that all its spans start inside the window.
        (entry.coarse && (!all_inside || duration_criteria))
            || !self.tags.is_empty()
            || (self.operation.is_some() && duration_criteria)
            || (self.duration_min_nanos.is_some() && self.duration_max_nanos.is_some())
            || !one_inside
            || (!all_inside && span_criteria)
    }

    /// Exact check: some span of the service starts inside the window and satisfies operation, duration and every
    /// tag.
    pub fn matches_spans(&self, spans: &[Span]) -> bool {
        spans.iter().any(|s| {
            self.matches_outline(s.service_name(), &s.name, s.start_unix_nanos, s.end_unix_nanos)
                && self.tags.iter().all(|(k, v)| span_has_tag(s, k, v))
        })
    }

    /// The criteria of [`TraceQuery::matches_spans`] that a span's service, name, start and end (ns since the
    /// Unix epoch) decide: all but the tags. What a search checks on a stored row before building its span.
    pub fn matches_outline(&self, service: &str, name: &str, start_unix_nanos: u64, end_unix_nanos: u64) -> bool {
        let duration_nanos = end_unix_nanos.saturating_sub(start_unix_nanos);
        service == self.service
            && (self.start_min_unix_nanos..=self.start_max_unix_nanos).contains(&start_unix_nanos)
            && self.operation.as_ref().is_none_or(|op| op == name)
            && self.duration_min_nanos.is_none_or(|d| duration_nanos >= d)
            && self.duration_max_nanos.is_none_or(|d| duration_nanos <= d)
    }

    /// Lowest entry start a search must scan: entries start at most [`ENTRY_START_SPREAD_NANOS`] before their
    /// latest span start, so an entry starting earlier cannot hold a span inside the window.
    pub fn scan_start_min_unix_nanos(&self) -> u64 {
        self.start_min_unix_nanos.saturating_sub(ENTRY_START_SPREAD_NANOS)
    }
}

/// True when `key=value` is one of the span's searchable tags (see [`for_each_searchable_tag`]).
pub fn span_has_tag(span: &Span, key: &str, value: &str) -> bool {
    let mut found = false;
    for_each_searchable_tag(span, |k, v| {
        if !found && k == key && v == value {
            found = true;
        }
    });
    found
}

/// Calls `f(key, value_as_string)` for every tag search can match on a span: span attributes, resource
/// attributes (Jaeger's process tags), scope attributes, event attributes (log fields), link attributes (Jaeger v2
/// searches all of them), and the tags Jaeger's OTLP translator adds
/// (`span.kind`, `otel.status_code`, `otel.status_description`, `error=true`, `otel.scope.name`,
/// `otel.scope.version`, `w3c.tracestate`): [`for_each_span_level_tag`] and [`for_each_process_tag`] together.
pub fn for_each_searchable_tag(span: &Span, mut f: impl FnMut(&str, &str)) {
    for_each_process_tag(&span.resource, &span.scope, &mut f);
    for_each_span_level_tag(span, f);
}

/// The searchable tags every span of one process (resource and instrumentation scope) shares: resource
/// attributes, scope attributes, `otel.scope.name`, `otel.scope.version`.
pub fn for_each_process_tag(resource: &Resource, scope: &Scope, mut f: impl FnMut(&str, &str)) {
    for kv in resource.attributes.iter().chain(&scope.attributes) {
        f(&kv.key, &kv.value.tag_str());
    }
    if !scope.name.is_empty() {
        f("otel.scope.name", &scope.name);
    }
    if !scope.version.is_empty() {
        f("otel.scope.version", &scope.version);
    }
}

/// The searchable tags of the span itself: span, event and link attributes, `span.kind`, `otel.status_code`,
/// `otel.status_description`, `error=true`, `w3c.tracestate`.
pub fn for_each_span_level_tag(span: &Span, mut f: impl FnMut(&str, &str)) {
    let places = std::iter::once(&span.attributes)
        .chain(span.events.iter().map(|e| &e.attributes))
        .chain(span.links.iter().map(|l| &l.attributes));
    for kv in places.flatten() {
        f(&kv.key, &kv.value.tag_str());
    }
    let kind = span.kind.jaeger_name();
    if !kind.is_empty() {
        f("span.kind", kind);
    }
    match span.status_code {
        StatusCode::ERROR => {
            f("otel.status_code", "ERROR");
            f("error", "true");
        }
        StatusCode::OK => f("otel.status_code", "OK"),
        _ => {}
    }
    if !span.status_message.is_empty() {
        f("otel.status_description", &span.status_message);
    }
    if !span.trace_state.is_empty() {
        f("w3c.tracestate", &span.trace_state);
    }
}

/// The answer to a search.
#[derive(Clone, Debug, Default)]
pub struct FoundTraces {
    /// Matching traces, newest first; each sorted by span start.
    pub traces: Vec<Vec<Span>>,
    /// Candidate traces left out because a stored block could not be decoded, with the reason.
    pub corrupt: Vec<(TraceId, String)>,
}

impl FoundTraces {
    /// Records one candidate's outcome: a trace joins the results, a block that fails to decode joins
    /// [`FoundTraces::corrupt`]; `None` (not found or not matching) records nothing. Returns true when the trace ID
    /// is settled (must not be tried again).
    ///
    /// # Errors
    /// Any [`StoreError`] other than a codec error, unchanged.
    pub fn record(&mut self, trace_id: TraceId, outcome: StoreResult<Option<Vec<Span>>>) -> StoreResult<bool> {
        record_outcome(&mut self.traces, &mut self.corrupt, trace_id, outcome)
    }
}

/// [`FoundTraces::record`] for any kind of result (full traces, summaries).
///
/// # Errors
/// Any [`StoreError`] other than a codec error, unchanged.
pub fn record_outcome<T>(
    found: &mut Vec<T>,
    corrupt: &mut Vec<(TraceId, String)>,
    trace_id: TraceId,
    outcome: StoreResult<Option<T>>,
) -> StoreResult<bool> {
    match outcome {
        Ok(Some(item)) => found.push(item),
        Ok(None) => return Ok(false),
        Err(StoreError::Codec(e)) => corrupt.push((trace_id, e.to_string())),
        Err(e) => return Err(e),
    }
    Ok(true)
}

/// What a search result list shows of a trace (api_v3 `TraceSummary`, the UI's result rows): root, time range,
/// span and error counts, and counts per service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: TraceId,
    /// Service of the root span (the earliest span without a parent in the trace; else the earliest span).
    pub root_service: String,
    /// Name of that span.
    pub root_operation: String,
    /// Earliest span start, ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Latest span end, ns since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Spans in the trace.
    pub span_count: u64,
    /// Spans with ERROR status.
    pub error_span_count: u64,
    /// `(service, spans, error spans)` in order of first appearance (spans sorted by start).
    pub services: Vec<(String, u64, u64)>,
}

impl TraceSummary {
    /// Summarizes the spans of one trace (sorted by start, as [`TraceStore::get_trace`] returns them); `None` for
    /// no spans. Reads no span attributes, so it takes the outline that [`skein_codec::decode_outline_with`]
    /// decodes.
    pub fn of<'a, I>(spans: I) -> Option<Self>
    where
        I: IntoIterator<Item = &'a Span>,
        I::IntoIter: Clone,
    {
        let mut spans = spans.into_iter().peekable();
        let trace_id = spans.peek()?.trace_id;
        Self::of_heads(trace_id, spans)
    }

    /// [`TraceSummary::of`] over any [`SpanHead`]s of trace `trace_id` (sorted by start, then span ID), such as the
    /// row outlines a search reads instead of building spans.
    pub fn of_heads<'a, S, I>(trace_id: TraceId, spans: I) -> Option<Self>
    where
        S: SpanHead + 'a,
        I: IntoIterator<Item = &'a S>,
        I::IntoIter: Clone,
    {
        let spans = spans.into_iter();
        let first = spans.clone().next()?;
        let root = spans.clone().filter(|s| s.is_root()).min_by_key(|s| s.start_unix_nanos()).unwrap_or(first);
        let mut services: Vec<(String, u64, u64)> = Vec::new();
        let (mut span_count, mut error_span_count) = (0, 0);
        for s in spans.clone() {
            let name = s.service_name();
            let at = match services.iter().position(|(n, _, _)| n == name) {
                Some(i) => i,
                None => {
                    services.push((name.to_string(), 0, 0));
                    services.len() - 1
                }
            };
            services[at].1 += 1;
            services[at].2 += u64::from(s.is_error());
            span_count += 1;
            error_span_count += u64::from(s.is_error());
        }
        Some(Self {
            trace_id,
            root_service: root.service_name().to_string(),
            root_operation: root.name().to_string(),
            start_unix_nanos: spans.clone().map(SpanHead::start_unix_nanos).min().unwrap_or(0),
            end_unix_nanos: spans.map(SpanHead::end_unix_nanos).max().unwrap_or(0),
            span_count,
            error_span_count,
            services,
        })
    }
}

/// What trace summaries and chunk merging read of a span: a built [`Span`], or the outline of a stored row
/// ([`SpanOutline`]) that a search reads without building the span.
pub trait SpanHead {
    /// The span's ID.
    fn span_id(&self) -> SpanId;
    /// Start, ns since the Unix epoch.
    fn start_unix_nanos(&self) -> u64;
    /// End, ns since the Unix epoch.
    fn end_unix_nanos(&self) -> u64;
    /// Span kind.
    fn kind(&self) -> SpanKind;
    /// Service that emitted the span.
    fn service_name(&self) -> &str;
    /// Operation (span name).
    fn name(&self) -> &str;
    /// True when the span has no parent ([`Span::parent_id`] is `None`).
    fn is_root(&self) -> bool;
    /// True when the span's status is ERROR.
    fn is_error(&self) -> bool;
    /// The identity used for exact-duplicate detection ([`Span::dedup_key`]).
    fn dedup_key(&self) -> (SpanId, i32, u64, u64) {
        (self.span_id(), self.kind().0, self.start_unix_nanos(), self.end_unix_nanos())
    }
}

impl SpanHead for Span {
    fn span_id(&self) -> SpanId {
        self.span_id
    }
    fn start_unix_nanos(&self) -> u64 {
        self.start_unix_nanos
    }
    fn end_unix_nanos(&self) -> u64 {
        self.end_unix_nanos
    }
    fn kind(&self) -> SpanKind {
        self.kind
    }
    fn service_name(&self) -> &str {
        Span::service_name(self)
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn is_root(&self) -> bool {
        self.parent_id().is_none()
    }
    fn is_error(&self) -> bool {
        Span::is_error(self)
    }
}

impl SpanHead for SpanOutline {
    fn span_id(&self) -> SpanId {
        self.span_id
    }
    fn start_unix_nanos(&self) -> u64 {
        self.start_unix_nanos
    }
    fn end_unix_nanos(&self) -> u64 {
        self.end_unix_nanos
    }
    fn kind(&self) -> SpanKind {
        self.template.kind
    }
    fn service_name(&self) -> &str {
        SpanOutline::service_name(self)
    }
    fn name(&self) -> &str {
        SpanOutline::name(self)
    }
    fn is_root(&self) -> bool {
        self.root
    }
    fn is_error(&self) -> bool {
        SpanOutline::is_error(self)
    }
}

/// The answer to a summary search ([`TraceStore::find_trace_summaries`]).
#[derive(Clone, Debug, Default)]
pub struct FoundSummaries {
    /// Summaries of the matching traces, newest first.
    pub summaries: Vec<TraceSummary>,
    /// Candidate traces left out because a stored block could not be decoded, with the reason.
    pub corrupt: Vec<(TraceId, String)>,
}

/// One row of the operations listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// Operation (span) name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
}

/// A service dependency aggregated over a time window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyLink {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
    /// Number of calls (child spans whose parent is in the calling service).
    pub call_count: u64,
    /// Calls whose child span has ERROR status.
    pub error_count: u64,
}

/// Sums edges into links, sorted by (parent, child).
pub fn sum_edges(edges: impl IntoIterator<Item = DependencyEdge>) -> Vec<DependencyLink> {
    let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for e in edges {
        let v = m.entry((e.parent, e.child)).or_default();
        v.0 += e.calls;
        v.1 += e.errors;
    }
    m.into_iter()
        .map(|((parent, child), (call_count, error_count))| DependencyLink { parent, child, call_count, error_count })
        .collect()
}

/// The storage interface shared by every backend (embedded now; ScyllaDB with issue #3).
///
/// Reads see every write that returned `Ok`. A trace may be stored as several chunks (late spans); reads merge
/// them and drop exact duplicates.
#[async_trait::async_trait]
pub trait TraceStore: Send + Sync + 'static {
    /// Length of one time partition, seconds: writers keep one shared dictionary per partition and tier, so a
    /// dictionary never outlives the blocks that use it.
    fn partition_secs(&self) -> u64;

    /// Where this backend's index entries keep process-level tags; [`prepare_chunk`] builds entries for it.
    fn layout(&self) -> StoreLayout {
        StoreLayout::PerTrace
    }

    /// Persists a batch atomically and durably.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails; nothing of the batch is visible then.
    async fn write(&self, batch: std::sync::Arc<WriteBatch>) -> StoreResult<()>;

    /// All spans of a trace, sorted by start time; `None` when no chunk exists.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails or a block is corrupt.
    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>>;

    /// Traces matching a query, newest first, at most `query.limit`. Traces whose blocks fail to decode are
    /// listed in [`FoundTraces::corrupt`] instead of failing the whole search.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails.
    async fn find_traces(&self, query: TraceQuery) -> StoreResult<FoundTraces>;

    /// The traces [`TraceStore::find_traces`] finds, as summaries, in the same order. Backends that can decode
    /// less than whole traces for it override this (the embedded store reads no span attributes of a matching
    /// trace); the default summarizes the full traces.
    ///
    /// # Errors
    /// As [`TraceStore::find_traces`].
    async fn find_trace_summaries(&self, query: TraceQuery) -> StoreResult<FoundSummaries> {
        let found = self.find_traces(query).await?;
        Ok(FoundSummaries {
            summaries: found.traces.iter().filter_map(TraceSummary::of).collect(),
            corrupt: found.corrupt,
        })
    }

    /// All service names, sorted.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails.
    async fn services(&self) -> StoreResult<Vec<String>>;

    /// Operations of a service, optionally of one span kind, sorted by name then kind.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails.
    async fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>>;

    /// Service dependencies for calls that started in `[end - lookback, end]` (ns since the Unix epoch).
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails.
    async fn dependencies(&self, end_unix_nanos: u64, lookback_nanos: u64) -> StoreResult<Vec<DependencyLink>>;
}

/// Merges chunks of one trace: drops exact duplicates (same span ID, kind, start and end; the first one stays) and
/// sorts by start, then span ID (ties in chunk order).
pub fn merge_chunks(chunks: Vec<Vec<Span>>) -> Vec<Span> {
    let mut spans: Vec<Span> = chunks.into_iter().flatten().collect();
    spans.sort_by(span_order);
    drop_sorted_duplicates(&mut spans);
    spans
}

/// [`merge_chunks`] over borrowed chunks: the same spans in the same order, borrowed (a summary needs no copy).
pub fn merge_chunk_refs<'a, S: SpanHead + 'a>(chunks: impl IntoIterator<Item = &'a [S]>) -> Vec<&'a S> {
    let mut spans: Vec<&S> = chunks.into_iter().flatten().collect();
    spans.sort_by(|a, b| span_order(*a, *b));
    drop_sorted_duplicates(&mut spans);
    spans
}

/// Drops the exact duplicates ([`SpanHead::dedup_key`]) of spans sorted by [`span_order`], keeping the first of
/// each. Duplicates share start and span ID, so each is compared only with the spans kept of its run of equal
/// start and span ID: no hashing.
fn drop_sorted_duplicates<S: SpanHead>(spans: &mut Vec<S>) {
    let (mut run, mut kept) = (0, 0);
    for i in 0..spans.len() {
        let key = spans[i].dedup_key();
        if kept > 0 && span_order(&spans[kept - 1], &spans[i]).is_ne() {
            run = kept;
        }
        if (run..kept).any(|j| spans[j].dedup_key() == key) {
            continue;
        }
        spans.swap(kept, i);
        kept += 1;
    }
    spans.truncate(kept);
}

impl<S: SpanHead> SpanHead for &S {
    fn span_id(&self) -> SpanId {
        (**self).span_id()
    }
    fn start_unix_nanos(&self) -> u64 {
        (**self).start_unix_nanos()
    }
    fn end_unix_nanos(&self) -> u64 {
        (**self).end_unix_nanos()
    }
    fn kind(&self) -> SpanKind {
        (**self).kind()
    }
    fn service_name(&self) -> &str {
        (**self).service_name()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn is_root(&self) -> bool {
        (**self).is_root()
    }
    fn is_error(&self) -> bool {
        (**self).is_error()
    }
}

/// The order of a trace's spans: by start, then span ID.
fn span_order<S: SpanHead>(a: &S, b: &S) -> std::cmp::Ordering {
    a.start_unix_nanos().cmp(&b.start_unix_nanos()).then(a.span_id().cmp(&b.span_id()))
}
