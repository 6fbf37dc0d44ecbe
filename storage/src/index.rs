//! Index entries: one per trace chunk, service and stretch of span starts (at most [`ENTRY_START_SPREAD_NANOS`]).
//!
//! An entry answers service + operation + tags + duration + time filters together without decoding the block:
//! the operation set is exact, durations are the min/max span duration of the service's spans, span starts are
//! the earliest and latest of them, and tags go through a bloom filter over `key=value` pairs (false positives are
//! removed by checking the decoded chunk). A service's spans whose starts spread wider than
//! [`ENTRY_START_SPREAD_NANOS`] get one entry per stretch, which bounds how far before its window a search scans.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{ProcessTags, StoreLayout, for_each_process_tag, for_each_span_level_tag};
use skein_codec::CodecError;
use skein_codec::wire::{OrCorrupt, Reader, put_ivarint, put_uvarint};
use skein_model::{Resource, Scope, Span, TraceId};
use std::sync::Arc;

/// The `key=value` tag pairs of an index entry: a bloom filter (about 1 % false positives at 10 bits per pair, 7
/// probes) and, in packed index pages, the exact pair hashes the page keeps in its table of common pairs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TagFilter {
    bits: Vec<u64>,
    /// Bits in use (at most `bits.len() * 64`): whole words for self-contained entries, whole bytes in packed
    /// index pages.
    nbits: usize,
    /// Pair hashes ([`hash_pair`]) the entry holds for certain, sorted: the pairs a packed page stores once in its
    /// table instead of in each entry's bloom filter (and, on the write side, every pair before the page is
    /// built).
    exact: Vec<u64>,
}

const PROBES: u32 = 7;
/// Bloom filter bits per tag pair.
const BITS_PER_PAIR: usize = 10;

/// Widest stretch of span starts one index entry covers, ns (10 s): a service's spans in a chunk are split into
/// entries whose earliest and latest starts lie at most this far apart, so a search for spans starting in
/// `[min, max]` scans entries starting in `[min − spread, max]` and misses none (the exact-match guarantee) without
/// knowing how long traces are.
pub const ENTRY_START_SPREAD_NANOS: u64 = 10_000_000_000;

/// Widest stretch of entry starts one packed index page covers, ns (60 s): a search for spans starting at or
/// before `max` reads pages whose newest entry starts at or before `max` plus this.
pub const PAGE_SPAN_NANOS: u64 = 60_000_000_000;

/// Grid of the entry starts kept in packed index pages, ns (1 ms): an entry's earliest start is rounded down and
/// its latest start up to it.
const PAGE_TIME_GRID_NANOS: u64 = 1_000_000;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues an FNV-1a 64-bit hash (stable across builds and platforms, unlike `std`'s hasher) over `bytes`.
fn fnv1a(mut h: u64, bytes: impl Iterator<Item = u8>) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a over `key`, `=`, `value`.
fn hash_pair(key: &str, value: &str) -> u64 {
    fnv1a(FNV_OFFSET, key.bytes().chain(std::iter::once(b'=')).chain(value.bytes()))
}

/// FNV-1a over an operation name: how packed index pages name operations (resolved through the partition's
/// operation table).
pub(crate) fn name_hash(name: &str) -> u64 {
    fnv1a(FNV_OFFSET, name.bytes())
}

impl TagFilter {
    /// Builds a bloom filter holding every pair.
    pub fn build<'a>(pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Self {
        let hashes: Vec<u64> = pairs.map(|(k, v)| hash_pair(k, v)).collect();
        Self::bloom(&hashes)
    }

    /// A bloom filter over pair hashes, in whole 64-bit words (self-contained index entries).
    fn bloom(hashes: &[u64]) -> Self {
        let words = (hashes.len().max(1) * BITS_PER_PAIR).div_ceil(64);
        Self::with_bits(hashes, words * 64)
    }

    /// A bloom filter over pair hashes, in whole bytes (a packed page's per-entry filters); empty for no pairs.
    fn compact_bloom(hashes: &[u64]) -> Self {
        Self::with_bits(hashes, (hashes.len() * BITS_PER_PAIR).div_ceil(8) * 8)
    }

    /// The exact pair hashes, no bloom filter: what [`entries_for_chunk`] gives a packed page to split.
    fn exact(mut hashes: Vec<u64>) -> Self {
        hashes.sort_unstable();
        hashes.dedup();
        TagFilter { bits: Vec::new(), nbits: 0, exact: hashes }
    }

    fn with_bits(hashes: &[u64], nbits: usize) -> Self {
        let mut f = TagFilter { bits: vec![0; nbits.div_ceil(64)], nbits, exact: Vec::new() };
        if nbits > 0 {
            for &h in hashes {
                f.insert(h);
            }
        }
        f
    }

    /// The bloom filter's bits as bytes (little-endian words cut to whole bytes): the form packed pages store.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.bits.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.truncate(self.nbits.div_ceil(8));
        out
    }

    /// The inverse of [`TagFilter::to_bytes`], with the entry's exact pairs from the page's table.
    fn from_bytes(b: &[u8], exact: Vec<u64>) -> Self {
        let mut bits = vec![0u64; b.len().div_ceil(8)];
        for (i, byte) in b.iter().enumerate() {
            bits[i / 8] |= u64::from(*byte) << ((i % 8) * 8);
        }
        TagFilter { bits, nbits: b.len() * 8, exact }
    }

    fn positions(&self, h: u64) -> impl Iterator<Item = usize> + '_ {
        let m = self.nbits as u64;
        let h1 = h;
        let h2 = h.rotate_left(32) | 1;
        (0..PROBES).map(move |i| (h1.wrapping_add(u64::from(i).wrapping_mul(h2)) % m) as usize)
    }

    fn insert(&mut self, h: u64) {
        let pos: Vec<usize> = self.positions(h).collect();
        for p in pos {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    /// False when the pair is certainly absent; true when it may be present.
    pub fn may_contain(&self, key: &str, value: &str) -> bool {
        let h = hash_pair(key, value);
        self.exact.binary_search(&h).is_ok()
            || (self.nbits > 0 && self.positions(h).all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0))
    }
}

/// One index entry: what search needs to know about a service's spans in one trace chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexEntry {
    /// Service.
    pub service: String,
    /// Trace.
    pub trace_id: TraceId,
    /// Earliest start of this entry's spans, ns since the Unix epoch (the search time key).
    pub start_unix_nanos: u64,
    /// Latest start of this entry's spans, ns since the Unix epoch; at most [`ENTRY_START_SPREAD_NANOS`] after
    /// `start_unix_nanos`.
    pub latest_start_unix_nanos: u64,
    /// Chunk duration (latest end − earliest start over all its spans), ns.
    pub trace_duration_nanos: u64,
    /// Name of the chunk's root span (no parent), else of its earliest span.
    pub root_operation: String,
    /// True when one of this service's spans has ERROR status.
    pub error: bool,
    /// Number of this service's spans in the chunk.
    pub span_count: u32,
    /// Shortest duration among this service's spans, ns.
    pub min_span_duration_nanos: u64,
    /// Longest duration among this service's spans, ns.
    pub max_span_duration_nanos: u64,
    /// Distinct operation names of this service's spans.
    pub operations: BTreeSet<String>,
    /// Bloom filter over the service's searchable `key=value` tags: all of them when `processes` is empty, else
    /// the span-level ones only.
    pub tags: TagFilter,
    /// [`ProcessTags::hash`] of each process of the entry's spans ([`StoreLayout::Packed`]): their tags are
    /// in the partition's process table, not in `tags`. Empty: every tag is in `tags`.
    pub processes: Vec<u64>,
    /// True for entries read from packed index pages: the starts are rounded outwards to 1 ms and the span
    /// durations outwards to a quarter octave, so they bound the true values without proving them; a search
    /// confirms such an entry against its spans unless the bounds alone prove the match
    /// ([`crate::TraceQuery::needs_verification`]).
    pub coarse: bool,
}

impl IndexEntry {
    /// True when the entry may match the query; false only when it certainly does not. For an entry with
    /// `processes`, use [`IndexEntry::may_match_with`].
    pub fn may_match(&self, q: &super::TraceQuery) -> bool {
        self.may_match_with(q, |_, _| false)
    }

    /// [`IndexEntry::may_match`], where `process_has(i, hash)` says whether process `hash` of the partition's
    /// table holds `q.tags[i]`.
    pub fn may_match_with(&self, q: &super::TraceQuery, process_has: impl Fn(usize, u64) -> bool) -> bool {
        self.service == q.service
            && self.within_bounds(q)
            && q.operation.as_ref().is_none_or(|op| self.operations.contains(op))
            && q.tags
                .iter()
                .enumerate()
                .all(|(i, (k, v))| self.tags.may_contain(k, v) || self.processes.iter().any(|&h| process_has(i, h)))
    }

    /// The part of [`IndexEntry::may_match`] that reads only the entry's start and duration bounds: its starts
    /// overlap the query's window and its span durations its duration range.
    pub fn within_bounds(&self, q: &super::TraceQuery) -> bool {
        self.start_unix_nanos <= q.start_max_unix_nanos
            && self.latest_start_unix_nanos >= q.start_min_unix_nanos
            && q.duration_min_nanos.is_none_or(|d| self.max_span_duration_nanos >= d)
            && q.duration_max_nanos.is_none_or(|d| self.min_span_duration_nanos <= d)
    }

    /// Serializes the value part of an index row (service, trace ID and start are in the key).
    pub fn encode_value(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.tags.bits.len() * 8);
        put_uvarint(&mut b, self.trace_duration_nanos);
        put_str(&mut b, &self.root_operation);
        b.push(u8::from(self.error));
        put_uvarint(&mut b, self.span_count.into());
        put_uvarint(&mut b, self.min_span_duration_nanos);
        put_uvarint(&mut b, self.max_span_duration_nanos);
        put_uvarint(&mut b, self.operations.len() as u64);
        for op in &self.operations {
            put_str(&mut b, op);
        }
        put_uvarint(&mut b, self.tags.bits.len() as u64);
        for w in &self.tags.bits {
            b.extend_from_slice(&w.to_le_bytes());
        }
        put_uvarint(&mut b, self.latest_start_unix_nanos.saturating_sub(self.start_unix_nanos));
        // Entries without process references (ScyllaDB, and older embedded data) end here.
        if !self.processes.is_empty() {
            put_uvarint(&mut b, self.processes.len() as u64);
            for h in &self.processes {
                b.extend_from_slice(&h.to_le_bytes());
            }
        }
        b
    }

    /// Parses an index row value.
    ///
    /// # Errors
    /// [`CodecError::Corrupt`] for a malformed value.
    pub fn decode_value(service: String, trace_id: TraceId, start: u64, v: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader { buf: v, pos: 0 };
        let trace_duration_nanos = r.uvarint()?;
        let root_operation = get_str(&mut r)?;
        let error = r.u8()? != 0;
        let span_count = u32::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("span count"))?;
        let min_span_duration_nanos = r.uvarint()?;
        let max_span_duration_nanos = r.uvarint()?;
        let n_ops = r.count()?;
        let mut operations = BTreeSet::new();
        for _ in 0..n_ops {
            operations.insert(get_str(&mut r)?);
        }
        let n_words = r.count()?;
        let mut bits = Vec::with_capacity(n_words);
        for _ in 0..n_words {
            bits.push(u64::from_le_bytes(r.array::<8>()?));
        }
        // Entries written before the latest start was recorded end here: their spans start at `start`.
        let spread = if r.pos < v.len() { r.uvarint()? } else { 0 };
        let mut processes = Vec::new();
        if r.pos < v.len() {
            for _ in 0..r.count()? {
                processes.push(u64::from_le_bytes(r.array::<8>()?));
            }
        }
        Ok(IndexEntry {
            service,
            trace_id,
            start_unix_nanos: start,
            latest_start_unix_nanos: start.saturating_add(spread),
            trace_duration_nanos,
            root_operation,
            error,
            span_count,
            min_span_duration_nanos,
            max_span_duration_nanos,
            operations,
            tags: TagFilter { nbits: bits.len() * 64, bits, exact: Vec::new() },
            processes,
            coarse: false,
        })
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_uvarint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

fn get_str(r: &mut Reader<'_>) -> Result<String, CodecError> {
    String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError::Corrupt("index string is not utf-8"))
}

/// Processes with fewer tags than this keep them in their entries' filters ([`StoreLayout::Packed`]): eight
/// tags cost about 80 filter bits, the 64-bit reference and its table row about as much.
const MIN_PROCESS_TABLE_PAIRS: usize = 8;

/// FNV-1a 64-bit over `key=value;` pairs.
fn hash_pairs(pairs: &[(String, String)]) -> u64 {
    pairs.iter().fold(FNV_OFFSET, |h, (k, v)| {
        fnv1a(h, k.bytes().chain(std::iter::once(b'=')).chain(v.bytes()).chain(std::iter::once(b';')))
    })
}

/// Builds one entry per service (and stretch of span starts) for a chunk of one trace, and, with
/// [`StoreLayout::Packed`], the process-level tags of each distinct process the entries reference.
pub(crate) fn entries_for_chunk(
    spans: &[Span],
    layout: StoreLayout,
    cache: &mut ProcessCache,
) -> (Vec<IndexEntry>, Vec<ProcessTags>) {
    let chunk_start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let chunk_end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);
    let root = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty() || s.parent_id().is_none())
        .min_by_key(|s| s.start_unix_nanos)
        .or_else(|| spans.iter().min_by_key(|s| s.start_unix_nanos))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut by_service: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for s in spans {
        by_service.entry(s.service_name()).or_default().push(s);
    }
    let mut out = Vec::with_capacity(by_service.len());
    let mut processes: Vec<ProcessTags> = Vec::new();
    for (service, mut spans) in by_service {
        spans.sort_by_key(|s| s.start_unix_nanos);
        let mut rest = spans.as_slice();
        while let Some(first) = rest.first() {
            let n = rest.partition_point(|s| s.start_unix_nanos - first.start_unix_nanos <= ENTRY_START_SPREAD_NANOS);
            let (stretch, tail) = rest.split_at(n);
            rest = tail;
            // Pair hashes, not owned strings: duplicates are removed once the stretch is done.
            let mut pairs: Vec<u64> = Vec::new();
            let mut refs: Vec<u64> = Vec::new();
            for s in stretch {
                let mut add = |k: &str, v: &str| pairs.push(hash_pair(k, v));
                match layout {
                    StoreLayout::PerTrace => for_each_process_tag(&s.resource, &s.scope, &mut add),
                    StoreLayout::Packed => {
                        let hash = match cache.get(&s.resource, &s.scope) {
                            Some((hash, pairs)) => {
                                if !processes.iter().any(|p| p.hash == hash && p.service == service) {
                                    processes.push(ProcessTags { service: service.to_string(), hash, pairs });
                                }
                                Some(hash)
                            }
                            None => None,
                        };
                        match hash {
                            Some(hash) if !refs.contains(&hash) => refs.push(hash),
                            Some(_) => {}
                            None => for_each_process_tag(&s.resource, &s.scope, &mut add),
                        }
                    }
                }
                for_each_span_level_tag(s, add);
            }
            out.push(IndexEntry {
                service: service.to_string(),
                trace_id: first.trace_id,
                start_unix_nanos: first.start_unix_nanos,
                latest_start_unix_nanos: stretch.last().map_or(first.start_unix_nanos, |s| s.start_unix_nanos),
                trace_duration_nanos: chunk_end.saturating_sub(chunk_start),
                root_operation: root.to_string(),
                error: stretch.iter().any(|s| s.is_error()),
                span_count: stretch.len() as u32,
                min_span_duration_nanos: stretch.iter().map(|s| s.duration_nanos()).min().unwrap_or(0),
                max_span_duration_nanos: stretch.iter().map(|s| s.duration_nanos()).max().unwrap_or(0),
                operations: stretch.iter().map(|s| s.name.to_string()).collect(),
                tags: match layout {
                    StoreLayout::PerTrace => {
                        pairs.sort_unstable();
                        pairs.dedup();
                        TagFilter::bloom(&pairs)
                    }
                    StoreLayout::Packed => TagFilter::exact(pairs),
                },
                processes: refs,
                coarse: false,
            });
        }
    }
    (out, processes)
}

/// The process tags of the processes (resource and scope) one write batch has seen, computed once per process:
/// keyed by the processes' `Arc`s, which are held, so an address cannot be reused by another process meanwhile.
#[derive(Default)]
pub(crate) struct ProcessCache {
    /// By resource and scope address: the `Arc`s and the process's hash and pairs (`None`: a small process,
    /// whose tags stay inline in its entries' filters).
    known: HashMap<(usize, usize), ProcessEntry>,
}

/// A process table row's hash and its `(key, value)` pairs, shared.
type HashedPairs = (u64, Arc<[(String, String)]>);

/// What a [`ProcessCache`] holds of one process: its `Arc`s and, for a process in the table, hash and pairs.
type ProcessEntry = (Arc<Resource>, Arc<Scope>, Option<HashedPairs>);

impl ProcessCache {
    /// The hash and pairs of the process of `resource` and `scope`; `None` for a process too small for the table
    /// ([`MIN_PROCESS_TABLE_PAIRS`]).
    fn get(&mut self, resource: &Arc<Resource>, scope: &Arc<Scope>) -> Option<HashedPairs> {
        let key = (Arc::as_ptr(resource) as usize, Arc::as_ptr(scope) as usize);
        let entry = self.known.entry(key).or_insert_with(|| {
            let mut list = Vec::new();
            for_each_process_tag(resource, scope, |k, v| list.push((k.to_string(), v.to_string())));
            // A small process costs fewer filter bits than a reference: it stays inline.
            let process = (list.len() >= MIN_PROCESS_TABLE_PAIRS).then(|| (hash_pairs(&list), list.into()));
            (resource.clone(), scope.clone(), process)
        });
        entry.2.clone()
    }
}

/// Encodes a process table row's value: count, then `key`, `value` strings.
pub(crate) fn encode_process_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>() + 2);
    put_uvarint(&mut b, pairs.len() as u64);
    for (k, v) in pairs {
        put_str(&mut b, k);
        put_str(&mut b, v);
    }
    b
}

/// Parses [`encode_process_pairs`] output.
///
/// # Errors
/// [`CodecError::Corrupt`] for a malformed row.
pub(crate) fn decode_process_pairs(v: &[u8]) -> Result<Vec<(String, String)>, CodecError> {
    let mut r = Reader { buf: v, pos: 0 };
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((get_str(&mut r)?, get_str(&mut r)?));
    }
    Ok(out)
}

/// A bloom filter over the trace IDs of one pack: 20 bits and 14 probes per trace, about one false positive in
/// 10,000 lookups, so a trace-by-ID lookup that tests every pack of a partition rarely opens a pack in vain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFilter {
    bits: Vec<u8>,
}

const TRACE_PROBES: u64 = 14;

/// SplitMix64's finalizer: trace IDs are not always random (64-bit Zipkin IDs leave half of them zero).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The two hashes of a trace ID that every [`TraceFilter`] probes with (double hashing), computed once per ID.
#[derive(Clone, Copy, Debug)]
pub struct TraceProbe(u64, u64);

impl TraceProbe {
    /// The hashes of `id`.
    pub fn new(id: TraceId) -> Self {
        let lo = u64::from_le_bytes(id.0[..8].try_into().unwrap_or_default());
        let hi = u64::from_le_bytes(id.0[8..].try_into().unwrap_or_default());
        let h1 = mix(lo ^ mix(hi));
        TraceProbe(h1, mix(h1) | 1)
    }
}

impl TraceFilter {
    /// A filter holding `ids`, 20 bits per ID (false positives about 1 in 10,000): a pack's filter.
    pub fn build(ids: impl ExactSizeIterator<Item = TraceId>) -> Self {
        Self::build_with(ids, 20)
    }

    /// A filter holding `ids` at `bits_per_id` bits per ID (with its 14 probes: 12 bits, about 1 in 200 false
    /// positives; 20 bits, about 1 in 10,000).
    pub fn build_with(ids: impl ExactSizeIterator<Item = TraceId>, bits_per_id: usize) -> Self {
        let bytes = (ids.len().max(1) * bits_per_id).div_ceil(8);
        let mut f = TraceFilter { bits: vec![0; bytes] };
        for id in ids {
            for p in f.positions(TraceProbe::new(id)) {
                f.bits[p / 8] |= 1 << (p % 8);
            }
        }
        f
    }

    fn positions(&self, probe: TraceProbe) -> impl Iterator<Item = usize> + use<> {
        let TraceProbe(h1, h2) = probe;
        let m = (self.bits.len() * 8) as u64;
        (0..TRACE_PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1)) as usize)
    }

    /// False when the trace `probe` was made from is certainly not in the pack.
    pub fn may_hold(&self, probe: TraceProbe) -> bool {
        !self.bits.is_empty() && self.positions(probe).all(|p| self.bits[p / 8] & (1 << (p % 8)) != 0)
    }

    /// The stored form.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bits
    }

    /// A filter from its stored form.
    pub fn from_bytes(bits: Vec<u8>) -> Self {
        TraceFilter { bits }
    }

    /// Bytes held.
    pub fn len_bytes(&self) -> usize {
        self.bits.len()
    }
}

/// Builds the packed index pages of one pack from its chunks' entries (`(trace-table ordinal, entry)`, each
/// entry's tags as [`TagFilter::exact`] hashes, as [`entries_for_chunk`] makes them for [`StoreLayout::Packed`]): one
/// page per service and stretch of entry starts of at most [`PAGE_SPAN_NANOS`], as `(service, newest entry start
/// ns, page)`.
///
/// # Errors
/// [`CodecError::Zstd`] when compression fails.
pub(crate) fn packed_pages(entries: &[(u32, &IndexEntry)]) -> Result<Vec<(String, u64, Vec<u8>)>, CodecError> {
    let mut by_service: BTreeMap<&str, Vec<(u32, &IndexEntry)>> = BTreeMap::new();
    for &(ordinal, e) in entries {
        by_service.entry(e.service.as_str()).or_default().push((ordinal, e));
    }
    let mut out = Vec::new();
    for (service, mut list) in by_service {
        list.sort_by(|a, b| b.1.start_unix_nanos.cmp(&a.1.start_unix_nanos).then(b.0.cmp(&a.0)));
        let mut rest = list.as_slice();
        while let Some(first) = rest.first() {
            let newest = first.1.start_unix_nanos;
            let n = rest.partition_point(|(_, e)| newest - e.start_unix_nanos <= PAGE_SPAN_NANOS);
            let (page, tail) = rest.split_at(n);
            rest = tail;
            out.push((service.to_string(), newest, encode_packed_page(newest, page)?));
        }
    }
    Ok(out)
}

/// Version byte of packed index pages.
const PACKED_PAGE_FORMAT: u8 = 1;

/// Log-scale bucket of a duration, ns: exact below 4, then four buckets per octave (each at most 25 % wide).
fn duration_bucket(d: u64) -> u64 {
    if d < 4 {
        return d;
    }
    let e = u64::from(63 - d.leading_zeros());
    4 + (e - 2) * 4 + ((d >> (e - 2)) & 3)
}

/// The smallest and largest duration, ns, of a [`duration_bucket`].
fn bucket_bounds(b: u64) -> (u64, u64) {
    if b < 4 {
        return (b, b);
    }
    let (shift, m) = (((b - 4) / 4).min(61) as u32, u128::from((b - 4) % 4));
    let clamp = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
    (clamp((4 + m) << shift), clamp(((5 + m) << shift) - 1))
}

/// Serializes one packed index page: the entries (`(ordinal, entry)`, newest first) of one service in one pack,
/// column by column under one zstd frame:
///
/// ```text
/// 1 | raw_len uvarint | zstd( n | operations: count, name hash u64 LE… | processes: count, hash u64 LE…
///       | common pairs: count, pair hash u64 LE…, then per pair a bitmap of the n entries (⌈n/8⌉ bytes)
///       | ordinal − previous ordinal (zigzag) × n | age − previous age × n | spread × n
///       | min duration bucket × n | max − min duration bucket × n | (op count, op#…) × n
///       | (process count, process#…) × n | (filter bytes len, bytes) × n )
/// ```
///
/// all integers uvarints, `#` an index into the page's list. Starts are kept on a 1 ms grid: `age` is
/// ⌈(newest − earliest start) / 1 ms⌉, `spread` ⌈(latest start − (newest − age ms)) / 1 ms⌉, so the decoded
/// interval holds the true one. Durations are [`duration_bucket`]s. Operation names are hashes ([`name_hash`]) of
/// names in the partition's operation table. A tag pair held by enough of the page's entries that a bitmap costs
/// less than its bloom bits is a common pair, listed once; the others go into each entry's bloom filter. The entry
/// fields search does not read (trace duration, root operation, error, span count) are not stored.
fn encode_packed_page(newest: u64, entries: &[(u32, &IndexEntry)]) -> Result<Vec<u8>, CodecError> {
    let n = entries.len();
    let mut ops: Vec<u64> = Vec::new();
    let mut procs: Vec<u64> = Vec::new();
    let mut pair_counts: HashMap<u64, usize> = HashMap::new();
    for (_, e) in entries {
        for op in &e.operations {
            let h = name_hash(op);
            if !ops.contains(&h) {
                ops.push(h);
            }
        }
        for h in &e.processes {
            if !procs.contains(h) {
                procs.push(*h);
            }
        }
        for &h in &e.tags.exact {
            *pair_counts.entry(h).or_default() += 1;
        }
    }
    // A common pair costs its hash and a bitmap; in the entries' bloom filters it would cost 10 bits per entry.
    let mut common: Vec<u64> =
        pair_counts.into_iter().filter(|&(_, count)| 64 + n < count * BITS_PER_PAIR).map(|(h, _)| h).collect();
    common.sort_unstable();
    let mut b = Vec::with_capacity(n * 16 + 64);
    put_uvarint(&mut b, n as u64);
    for list in [&ops, &procs, &common] {
        put_uvarint(&mut b, list.len() as u64);
        for h in list {
            b.extend_from_slice(&h.to_le_bytes());
        }
    }
    for h in &common {
        let mut bitmap = vec![0u8; n.div_ceil(8)];
        for (i, (_, e)) in entries.iter().enumerate() {
            if e.tags.exact.binary_search(h).is_ok() {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        b.extend_from_slice(&bitmap);
    }
    let grid = PAGE_TIME_GRID_NANOS;
    let mut previous = (0u32, 0u64);
    for (ordinal, _) in entries {
        put_ivarint(&mut b, i64::from(*ordinal) - i64::from(previous.0));
        previous.0 = *ordinal;
    }
    let ages: Vec<u64> =
        entries.iter().map(|(_, e)| newest.saturating_sub(e.start_unix_nanos).div_ceil(grid)).collect();
    for age in &ages {
        put_uvarint(&mut b, age.saturating_sub(previous.1));
        previous.1 = *age;
    }
    for ((_, e), age) in entries.iter().zip(&ages) {
        let start = newest.saturating_sub(age.saturating_mul(grid));
        put_uvarint(&mut b, e.latest_start_unix_nanos.saturating_sub(start).div_ceil(grid));
    }
    for (_, e) in entries {
        put_uvarint(&mut b, duration_bucket(e.min_span_duration_nanos));
    }
    for (_, e) in entries {
        let min = duration_bucket(e.min_span_duration_nanos);
        put_uvarint(&mut b, duration_bucket(e.max_span_duration_nanos).saturating_sub(min));
    }
    for (_, e) in entries {
        put_uvarint(&mut b, e.operations.len() as u64);
        for op in &e.operations {
            put_uvarint(&mut b, ops.iter().position(|&h| h == name_hash(op)).unwrap_or_default() as u64);
        }
    }
    for (_, e) in entries {
        put_uvarint(&mut b, e.processes.len() as u64);
        for h in &e.processes {
            put_uvarint(&mut b, procs.iter().position(|p| p == h).unwrap_or_default() as u64);
        }
    }
    for (_, e) in entries {
        let rare: Vec<u64> = e.tags.exact.iter().copied().filter(|h| common.binary_search(h).is_err()).collect();
        let bytes = TagFilter::compact_bloom(&rare).to_bytes();
        put_uvarint(&mut b, bytes.len() as u64);
        b.extend_from_slice(&bytes);
    }
    let z = zstd::bulk::compress(&b, skein_codec::ZSTD_LEVEL)?;
    let mut out = Vec::with_capacity(z.len() + 5);
    out.push(PACKED_PAGE_FORMAT);
    put_uvarint(&mut out, b.len() as u64);
    out.extend_from_slice(&z);
    Ok(out)
}

/// Largest decompressed packed page accepted, bytes.
const MAX_PAGE_BYTES: usize = 64 << 20;

/// Parses a packed index page of `service` whose newest entry starts at `newest` ns: `(ordinal, entry)`, newest
/// first. `operation_names` maps [`name_hash`] to the names of the service's operations (the partition's operation
/// table). Entries are [`IndexEntry::coarse`], carry a zero trace ID (the pack's trace table has it) and none of
/// the fields the page leaves out. Only the entries `keep` accepts, given each with its start and duration bounds
/// alone (as [`IndexEntry::within_bounds`] reads them), are built whole and returned; the others are read past.
///
/// # Errors
/// [`CodecError::Corrupt`] or [`CodecError::Zstd`] for a malformed page, or one naming an operation the table
/// does not hold.
pub(crate) fn decode_packed_page(
    service: &str,
    newest: u64,
    page: &[u8],
    operation_names: &HashMap<u64, String>,
    keep: &dyn Fn(&IndexEntry) -> bool,
) -> Result<Vec<(u32, IndexEntry)>, CodecError> {
    let mut head = Reader { buf: page, pos: 0 };
    if head.u8()? != PACKED_PAGE_FORMAT {
        return Err(CodecError::Corrupt("unknown packed index page format"));
    }
    let raw_len = head.count_any()?;
    if raw_len > MAX_PAGE_BYTES {
        return Err(CodecError::Corrupt("packed index page larger than the limit"));
    }
    let raw = zstd::bulk::decompress(&page[head.pos..], raw_len)?;
    let mut r = Reader { buf: &raw, pos: 0 };
    let n = r.count()?;
    let mut hashes = || (0..r.count()?).map(|_| r.array::<8>().map(u64::from_le_bytes)).collect::<Result<Vec<_>, _>>();
    let ops = hashes()?
        .into_iter()
        .map(|h| operation_names.get(&h).cloned().ok_or(CodecError::Corrupt("page operation not in the table")))
        .collect::<Result<Vec<_>, _>>()?;
    let procs = hashes()?;
    let common = hashes()?;
    let bitmaps = common.iter().map(|_| r.take(n.div_ceil(8))).collect::<Result<Vec<_>, _>>()?;
    let ordinal_deltas = (0..n).map(|_| r.ivarint()).collect::<Result<Vec<_>, _>>()?;
    let mut cols = [const { Vec::new() }; 4];
    for col in &mut cols {
        for _ in 0..n {
            col.push(r.uvarint()?);
        }
    }
    let [age_deltas, spreads, mins, ranges] = cols;
    let grid = PAGE_TIME_GRID_NANOS;
    let (mut ordinal, mut age) = (0i64, 0u64);
    // Kept entries with their place in the page; the others' operations, processes and tags are read past.
    let mut out: Vec<(usize, u32, IndexEntry)> = Vec::new();
    let columns = ordinal_deltas.into_iter().zip(age_deltas).zip(spreads).zip(mins).zip(ranges).enumerate();
    for (i, ((((ordinal_delta, age_delta), spread), min), range)) in columns {
        ordinal = ordinal.saturating_add(ordinal_delta);
        age = age.saturating_add(age_delta);
        let start = newest.saturating_sub(age.saturating_mul(grid));
        let ordinal = u32::try_from(ordinal).map_err(|_| CodecError::Corrupt("page entry ordinal"))?;
        let entry = IndexEntry {
            service: String::new(),
            trace_id: TraceId([0; 16]),
            start_unix_nanos: start,
            latest_start_unix_nanos: start.saturating_add(spread.saturating_mul(grid)),
            trace_duration_nanos: 0,
            root_operation: String::new(),
            error: false,
            span_count: 0,
            min_span_duration_nanos: bucket_bounds(min).0,
            max_span_duration_nanos: bucket_bounds(min.saturating_add(range)).1,
            operations: BTreeSet::new(),
            tags: TagFilter::default(),
            processes: Vec::new(),
            coarse: true,
        };
        if keep(&entry) {
            out.push((i, ordinal, entry));
        }
    }
    // Where each page place's entry sits in `out`, if it was kept.
    let mut slot = vec![None; n];
    for (at, (i, _, _)) in out.iter().enumerate() {
        slot[*i] = Some(at);
    }
    for at in &slot {
        for _ in 0..r.count()? {
            let op = ops.get(r.count_any()?).or_corrupt("page operation reference")?;
            if let Some(at) = *at {
                out[at].2.operations.insert(op.clone());
            }
        }
    }
    for at in &slot {
        for _ in 0..r.count()? {
            let hash = *procs.get(r.count_any()?).or_corrupt("page process reference")?;
            if let Some(at) = *at {
                out[at].2.processes.push(hash);
            }
        }
    }
    for (i, at) in slot.iter().enumerate() {
        let bloom = r.bytes()?;
        if let Some(at) = *at {
            let exact = common.iter().zip(&bitmaps).filter(|(_, b)| b[i / 8] & (1 << (i % 8)) != 0).map(|(h, _)| *h);
            let e = &mut out[at].2;
            e.tags = TagFilter::from_bytes(bloom, exact.collect());
            e.service = service.to_string();
        }
    }
    if r.pos != raw.len() {
        return Err(CodecError::Corrupt("trailing bytes in a packed index page"));
    }
    Ok(out.into_iter().map(|(_, ordinal, e)| (ordinal, e)).collect())
}

/// One entry of an index page: where an [`IndexEntry`] of one service points, and its encoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageEntry {
    /// The entry's search time (earliest start of the service's spans in the chunk), ns since the Unix epoch.
    pub start_unix_nanos: u64,
    /// Trace.
    pub trace_id: TraceId,
    /// The chunk's row key in the trace table.
    pub chunk_id: i64,
    /// [`IndexEntry::encode_value`].
    pub value: Vec<u8>,
}

/// Serializes a page of index entries (one service, one time bucket, one write batch): count, then per entry
/// `start_unix_nanos` uvarint, `trace_id [16]`, `chunk_id i64 LE`, value (len uvarint, bytes).
///
/// A page turns a write batch's index entries of one service into one row, where one row per entry made the index
/// most of a ScyllaDB backend's row writes.
pub fn encode_page(entries: &[PageEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(entries.iter().map(|e| e.value.len() + 36).sum());
    put_uvarint(&mut b, entries.len() as u64);
    for e in entries {
        put_uvarint(&mut b, e.start_unix_nanos);
        b.extend_from_slice(&e.trace_id.0);
        b.extend_from_slice(&e.chunk_id.to_le_bytes());
        put_uvarint(&mut b, e.value.len() as u64);
        b.extend_from_slice(&e.value);
    }
    b
}

/// Parses [`encode_page`] output.
///
/// # Errors
/// [`CodecError::Corrupt`] for a malformed page.
pub fn decode_page(b: &[u8]) -> Result<Vec<PageEntry>, CodecError> {
    let mut r = Reader { buf: b, pos: 0 };
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start_unix_nanos = r.uvarint()?;
        let trace_id = TraceId(r.array::<16>()?);
        let chunk_id = i64::from_le_bytes(r.array::<8>()?);
        let value = r.bytes()?.to_vec();
        out.push(PageEntry { start_unix_nanos, trace_id, chunk_id, value });
    }
    if r.pos != b.len() {
        return Err(CodecError::Corrupt("trailing bytes in an index page"));
    }
    Ok(out)
}

/// Merges index pages, read in descending `page_end` order (the newest entry start each holds), into entries
/// newest first overall — ties by ascending trace ID — so a search can stop at its limit after reading only the
/// pages that can hold newer entries than those already seen.
#[derive(Default)]
pub struct PageMerger {
    heap: std::collections::BinaryHeap<(u64, std::cmp::Reverse<TraceId>, i64, Vec<u8>)>,
}

impl PageMerger {
    /// True when a page whose newest entry starts at `page_end_unix_nanos` must be read before [`Self::pop`] can
    /// answer: no entry is buffered yet, or the page may hold one newer than the newest buffered.
    pub fn needs(&self, page_end_unix_nanos: u64) -> bool {
        self.heap.peek().is_none_or(|top| page_end_unix_nanos >= top.0)
    }

    /// Buffers a page's entries whose start lies in `[lo, hi]` (ns).
    pub fn push(&mut self, entries: Vec<PageEntry>, lo: u64, hi: u64) {
        for e in entries.into_iter().filter(|e| (lo..=hi).contains(&e.start_unix_nanos)) {
            self.heap.push((e.start_unix_nanos, std::cmp::Reverse(e.trace_id), e.chunk_id, e.value));
        }
    }

    /// The newest buffered entry.
    pub fn pop(&mut self) -> Option<PageEntry> {
        self.heap.pop().map(|(start_unix_nanos, std::cmp::Reverse(trace_id), chunk_id, value)| PageEntry {
            start_unix_nanos,
            trace_id,
            chunk_id,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TraceQuery;
    use skein_model::{KeyValue, SpanId, StatusCode, Value, service_resource};

    fn span(id: u8, service: &str, name: &str, dur: u64) -> Span {
        let mut s = Span::minimal(TraceId([7; 16]), SpanId([id; 8]), name, service_resource(service));
        s.start_unix_nanos = 1_000 + u64::from(id);
        s.end_unix_nanos = s.start_unix_nanos + dur;
        s
    }

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_positives() {
        let pairs: Vec<(String, String)> = (0..200).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        let f = TagFilter::build(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert!(pairs.iter().all(|(k, v)| f.may_contain(k, v)));
        let fp = (0..10_000).filter(|i| f.may_contain(&format!("x{i}"), "y")).count();
        assert!(fp < 300, "false positive rate too high: {fp}/10000");
    }

    #[test]
    fn trace_filters_hold_every_trace_and_few_others() {
        let id = |i: u64| {
            let mut b = [0u8; 16];
            b[8..].copy_from_slice(&i.to_le_bytes());
            TraceId(b)
        };
        // Zipkin-style 64-bit IDs (half the bytes zero) and a stored round trip.
        let held: Vec<TraceId> = (1..=500).map(id).collect();
        let f = TraceFilter::from_bytes(TraceFilter::build(held.iter().copied()).into_bytes());
        assert!(held.iter().all(|&t| f.may_hold(TraceProbe::new(t))));
        let fp = (1_000..101_000).filter(|&i| f.may_hold(TraceProbe::new(id(i)))).count();
        assert!(fp < 100, "false positives: {fp} of 100000");
        assert!(!TraceFilter::from_bytes(Vec::new()).may_hold(TraceProbe::new(id(1))), "an empty filter holds nothing");
    }

    #[test]
    fn entries_are_per_service_and_round_trip() {
        let mut a = span(1, "front", "GET /", 500);
        a.attributes.push(KeyValue::new("http.status_code", Value::Int(200)));
        let mut b = span(2, "db", "SELECT", 100);
        b.parent_span_id = vec![1; 8];
        b.status_code = StatusCode::ERROR;
        let (entries, processes) = entries_for_chunk(&[a, b], StoreLayout::PerTrace, &mut ProcessCache::default());
        assert!(processes.is_empty());
        assert_eq!(entries.len(), 2);
        let db = entries.iter().find(|e| e.service == "db").expect("db entry");
        assert!(db.error && db.tags.may_contain("error", "true"));
        assert_eq!(db.root_operation, "GET /");
        let front = entries.iter().find(|e| e.service == "front").expect("front entry");
        assert!(front.tags.may_contain("http.status_code", "200"));
        let back = IndexEntry::decode_value(
            front.service.clone(),
            front.trace_id,
            front.start_unix_nanos,
            &front.encode_value(),
        )
        .expect("decode");
        assert_eq!(&back, front);
        let q = TraceQuery {
            service: "front".into(),
            operation: Some("GET /".into()),
            tags: vec![("http.status_code".into(), "200".into())],
            start_max_unix_nanos: u64::MAX,
            duration_min_nanos: Some(400),
            ..TraceQuery::default()
        };
        assert!(front.may_match(&q));
        assert!(!front.may_match(&TraceQuery { duration_min_nanos: Some(501), ..q.clone() }));
        assert!(!front.may_match(&TraceQuery { operation: Some("POST".into()), ..q }));
    }

    #[test]
    fn process_tags_leave_the_filter_for_the_process_table() {
        let mut a = span(1, "front", "GET /", 500);
        a.attributes.push(KeyValue::new("http.route", Value::Str("/".into())));
        let mut resource = (*a.resource).clone();
        resource
            .attributes
            .extend((0..MIN_PROCESS_TABLE_PAIRS).map(|i| KeyValue::new(format!("k8s.{i}"), Value::Int(1))));
        a.resource = std::sync::Arc::new(resource);
        let b = span(2, "front", "GET /x", 100);
        // Two spans of one process (shared resource): one process row, referenced once.
        let b = Span { resource: a.resource.clone(), ..b };
        let (entries, processes) =
            entries_for_chunk(&[a.clone(), b], StoreLayout::Packed, &mut ProcessCache::default());
        assert_eq!(entries.len(), 1);
        assert_eq!(processes.len(), 1);
        // A process with few tags keeps them in the filter.
        let small = span(3, "db", "SELECT", 100);
        let (small_entries, small_processes) =
            entries_for_chunk(&[small], StoreLayout::Packed, &mut ProcessCache::default());
        assert!(small_processes.is_empty() && small_entries[0].processes.is_empty());
        assert!(small_entries[0].tags.may_contain("service.name", "db"));
        let p = &processes[0];
        let mut want = Vec::new();
        crate::for_each_process_tag(&a.resource, &a.scope, |k, v| want.push((k.to_string(), v.to_string())));
        assert_eq!(p.pairs.as_ref(), want.as_slice());
        assert_eq!(decode_process_pairs(&encode_process_pairs(&p.pairs)).expect("decode"), want);
        let e = &entries[0];
        assert_eq!(e.processes, vec![p.hash]);
        // A later chunk of the same batch (one cache) referencing the process shares its pairs: computed once.
        let mut cache = ProcessCache::default();
        let (_, first) = entries_for_chunk(std::slice::from_ref(&a), StoreLayout::Packed, &mut cache);
        let c = Span { trace_id: TraceId([9; 16]), ..a.clone() };
        let (later_entries, later) = entries_for_chunk(&[c], StoreLayout::Packed, &mut cache);
        assert!(std::sync::Arc::ptr_eq(&first[0].pairs, &later[0].pairs));
        assert_eq!((later[0].hash, later_entries[0].processes.clone()), (p.hash, vec![p.hash]));
        // A packed page keeps what search reads: operations, processes and tags exactly, starts and durations
        // as bounds.
        let newest = e.start_unix_nanos + 5;
        let names: HashMap<u64, String> = ["GET /", "GET /x"].map(|n| (name_hash(n), n.to_string())).into();
        let page = encode_packed_page(newest, &[(3, e)]).expect("encode");
        let decoded = decode_packed_page(&e.service, newest, &page, &names, &|_| true).expect("decode");
        let [(3, d)] = decoded.as_slice() else { panic!("one entry, ordinal 3: {decoded:?}") };
        assert!(d.coarse && d.operations == e.operations && d.processes == e.processes);
        assert!(d.tags.may_contain("http.route", "/"));
        assert!(
            decode_packed_page(&e.service, newest, &page, &HashMap::new(), &|_| true).is_err(),
            "unknown operation"
        );
        assert!(decode_packed_page(&e.service, newest, b"\x01\x05garbage", &names, &|_| true).is_err());
        // The span-level tag is in the filter; `service.name` only in the process row.
        assert!(e.tags.may_contain("http.route", "/"));
        let q = |k: &str, v: &str| TraceQuery {
            service: "front".into(),
            tags: vec![(k.into(), v.into())],
            start_max_unix_nanos: u64::MAX,
            ..TraceQuery::default()
        };
        let process_has = |_: usize, h: u64| h == p.hash;
        assert!(e.may_match_with(&q("service.name", "front"), process_has));
        assert!(!e.may_match_with(&q("service.name", "front"), |_, _| false));
        assert!(e.may_match_with(&q("http.route", "/"), |_, _| false));
    }

    #[test]
    fn duration_buckets_bound_each_duration_within_a_quarter_octave() {
        let mut d = 0u64;
        while d < u64::MAX / 3 {
            for x in [d, d + 1, d.saturating_mul(3) / 2] {
                let (lo, hi) = bucket_bounds(duration_bucket(x));
                assert!(lo <= x && x <= hi, "{x}: [{lo}, {hi}]");
                assert!(hi - lo <= x / 4, "{x}: [{lo}, {hi}] is wider than a quarter of it");
            }
            d = d * 2 + 1;
        }
        assert_eq!(bucket_bounds(duration_bucket(u64::MAX)).1, u64::MAX);
    }

    #[test]
    fn packed_pages_bound_every_entry_and_keep_its_tags() {
        // 300 one-service traces whose spans carry a pair shared by all (a common pair), one shared by every
        // third (common) and one of their own (a bloom filter pair).
        let mut entries = Vec::new();
        let mut names = HashMap::new();
        for t in 0..300u64 {
            let trace_id = TraceId([t as u8; 16]);
            let spans: Vec<Span> = (0..1 + t % 4)
                .map(|i| {
                    let op = format!("op{}", (t + i) % 5);
                    names.insert(name_hash(&op), op.clone());
                    let mut s = Span::minimal(trace_id, SpanId([i as u8 + 1; 8]), &op, service_resource("svc"));
                    s.start_unix_nanos = 1_700_000_000_000_000_000 + t * 7_777_777 + i * 1_234_567;
                    s.end_unix_nanos = s.start_unix_nanos + 1_000 * (t * 37 % 1_000 + i);
                    s.attributes.push(KeyValue::new("env", Value::Str("prod".into())));
                    s.attributes.push(KeyValue::new("shard", Value::Int((t % 3) as i64)));
                    s.attributes.push(KeyValue::new("request", Value::Int(t as i64)));
                    s
                })
                .collect();
            let (list, _) = entries_for_chunk(&spans, StoreLayout::Packed, &mut ProcessCache::default());
            entries.extend(list.into_iter().map(|e| (t as u32, e)));
        }
        let refs: Vec<(u32, &IndexEntry)> = entries.iter().map(|(o, e)| (*o, e)).collect();
        let pages = packed_pages(&refs).expect("pages");
        let mut decoded = Vec::new();
        for (service, newest, page) in &pages {
            decoded.extend(decode_packed_page(service, *newest, page, &names, &|_| true).expect("decode"));
        }
        assert_eq!(decoded.len(), entries.len());
        // Decoded with a filter on the bounds, a page returns exactly the entries the filter keeps, whole.
        let q =
            TraceQuery { start_max_unix_nanos: u64::MAX, duration_min_nanos: Some(500_000), ..TraceQuery::default() };
        let mut kept = Vec::new();
        for (service, newest, page) in &pages {
            kept.extend(decode_packed_page(service, *newest, page, &names, &|e| e.within_bounds(&q)).expect("decode"));
        }
        let want: Vec<&(u32, IndexEntry)> = decoded.iter().filter(|(_, e)| e.within_bounds(&q)).collect();
        assert!(!kept.is_empty() && kept.len() < decoded.len(), "the filter keeps some entries: {}", kept.len());
        assert_eq!(kept.iter().collect::<Vec<_>>(), want);
        let mut absent_hits = 0;
        for (ordinal, e) in &entries {
            let (_, d) = decoded.iter().find(|(o, _)| o == ordinal).expect("every entry comes back");
            assert!(d.start_unix_nanos <= e.start_unix_nanos && e.start_unix_nanos - d.start_unix_nanos < 1_000_000);
            assert!(d.latest_start_unix_nanos >= e.latest_start_unix_nanos);
            assert!(d.latest_start_unix_nanos - e.latest_start_unix_nanos < 2_000_000);
            assert!(d.min_span_duration_nanos <= e.min_span_duration_nanos);
            assert!(d.max_span_duration_nanos >= e.max_span_duration_nanos);
            assert_eq!(d.operations, e.operations);
            let t = u64::from(*ordinal);
            assert!(d.tags.may_contain("env", "prod"));
            assert!(d.tags.may_contain("shard", &(t % 3).to_string()));
            assert!(d.tags.may_contain("request", &t.to_string()));
            absent_hits += usize::from(d.tags.may_contain("request", &(t + 1).to_string()));
            absent_hits += usize::from(d.tags.may_contain("shard", &(t % 3 + 1).to_string()));
        }
        // Common pairs are exact; bloom filter pairs err about 1 % of the time.
        assert!(absent_hits < entries.len() / 20, "{absent_hits} false positives of {}", 2 * entries.len());
        // The shared pairs are listed once per page, not in 300 filters: the pages are far smaller than them.
        let page_bytes: usize = pages.iter().map(|p| p.2.len()).sum();
        assert!(page_bytes < entries.len() * 8, "{page_bytes} bytes for {} entries", entries.len());
    }

    #[test]
    fn pages_round_trip_and_merge_newest_first() {
        let entry = |start: u64, id: u8| PageEntry {
            start_unix_nanos: start,
            trace_id: TraceId([id; 16]),
            chunk_id: i64::from(id),
            value: vec![id; 3],
        };
        // Three overlapping pages (as concurrent writers and late chunks produce them).
        let pages = vec![
            vec![entry(100, 1), entry(70, 2), entry(40, 3)],
            vec![entry(90, 4), entry(90, 5), entry(10, 6)],
            vec![entry(60, 7), entry(5, 8)],
        ];
        for p in &pages {
            assert_eq!(&decode_page(&encode_page(p)).expect("decode"), p);
        }
        assert!(decode_page(&encode_page(&pages[0])[..20]).is_err());
        let mut by_end: Vec<(u64, Vec<PageEntry>)> =
            pages.iter().map(|p| (p.iter().map(|e| e.start_unix_nanos).max().unwrap_or(0), p.clone())).collect();
        by_end.sort_by_key(|p| std::cmp::Reverse(p.0));
        let (lo, hi) = (6, 95);
        let mut want: Vec<PageEntry> =
            pages.iter().flatten().filter(|e| (lo..=hi).contains(&e.start_unix_nanos)).cloned().collect();
        want.sort_by(|a, b| b.start_unix_nanos.cmp(&a.start_unix_nanos).then(a.trace_id.cmp(&b.trace_id)));
        let mut m = PageMerger::default();
        let mut next = by_end.into_iter().peekable();
        let mut got = Vec::new();
        let mut pages_read_before_first = 0;
        loop {
            while let Some((end, _)) = next.peek() {
                if !m.needs(*end) {
                    break;
                }
                let Some((_, entries)) = next.next() else { break };
                m.push(entries, lo, hi);
                if got.is_empty() {
                    pages_read_before_first += 1;
                }
            }
            match m.pop() {
                Some(e) => got.push(e),
                None => break,
            }
        }
        assert_eq!(got, want);
        // The newest in-window entry (90) needed the first two pages only.
        assert_eq!(pages_read_before_first, 2);
    }
}
