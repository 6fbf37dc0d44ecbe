//! Trace assembly and tail sampling: groups incoming spans by trace ID in memory, decides each trace with the
//! tail-sampling policies ([`crate::sampling::tail`]) and hands kept trace chunks to the writer.
//!
//! When a trace is decided:
//! - without tail sampling, after it has been idle (no new span) for `trace_idle_ms`; every trace is kept;
//! - with tail sampling, `decision_wait` after its first span, as the OpenTelemetry Collector does.
//!
//! Either way a trace is also decided early when it reaches `max_spans_per_trace`, or when the memory bound
//! (`max_live_traces`, or `num_traces` with tail sampling) is reached and a new trace arrives: the least recently
//! started/touched trace goes first, counted in `skein_traces_flushed_early_total`. Decisions are remembered
//! (kept: `recent_traces` or `decision_cache.sampled_cache_size`; dropped: `decision_cache.non_sampled_cache_size`)
//! so late spans follow their trace: late spans of a kept trace become a further *late* chunk (the writer
//! deduplicates it against what is stored), late spans of a dropped trace are dropped and counted. Exact
//! duplicates within a live trace are dropped here (counted).
//!
//! RED metrics (`skein_span_calls_total`, `skein_span_duration_seconds`) count every span before sampling;
//! `skein_dependency_calls_total` counts the edges of kept traces weighted by the rate they were kept at.
//!
//! Write-ahead log: every batch holds a reference on its log segment; a live trace holds one on the oldest segment
//! its spans came from, passed on to its chunk (released by the writer once stored) or released when the trace is
//! sampled out.
//!
//! Backpressure: the input and output channels are bounded; the assembler awaits the writer, and receivers await
//! the assembler, so a slow disk slows clients instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt as _, HashSet};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::{EdgeLabels, Metrics, PolicyLabels, ReasonLabels, RedLabels, SampledLabels};
use crate::sampling::tail::{TailSampler, TailSamplingConfig};
use crate::wal::SegmentRefs;
use skein_model::dependencies::{self, DependencyEdge};
use skein_model::{Span, SpanId, StatusCode, TraceId};

/// RED series (service × operation × kind × status) beyond which new series are not created (counted).
pub const RED_MAX_SERIES: usize = 10_000;

/// Assembly settings.
#[derive(Clone, Debug)]
pub struct AssemblyConfig {
    /// Without tail sampling, a trace is written after this long without a new span, milliseconds.
    pub trace_idle_ms: u64,
    /// Without tail sampling, maximum traces held in memory; the least recently touched is flushed early beyond
    /// this. With tail sampling, `num_traces` applies instead.
    pub max_live_traces: usize,
    /// A trace chunk is decided as soon as it holds this many spans.
    pub max_spans_per_trace: usize,
    /// How many kept trace IDs are remembered to mark later spans as late chunks (without tail sampling).
    pub recent_traces: usize,
}

impl Default for AssemblyConfig {
    fn default() -> Self {
        Self { trace_idle_ms: 5000, max_live_traces: 100_000, max_spans_per_trace: 10_000, recent_traces: 400_000 }
    }
}

/// Spans accepted together (one export request), on their way to the assembler.
#[derive(Debug, Default)]
pub struct Batch {
    /// The spans.
    pub spans: Vec<Span>,
    /// The write-ahead-log segment holding them (the batch holds a reference on it).
    pub wal_seq: Option<u64>,
    /// Replayed from the log at start: their traces may already be partly stored, so they are written as late
    /// chunks (deduplicated against storage).
    pub replayed: bool,
}

/// A kept piece of a trace on its way to storage.
#[derive(Debug)]
pub struct Chunk {
    /// The spans, all of one trace, without exact duplicates.
    pub spans: Vec<Span>,
    /// True when earlier chunks of this trace may already be stored.
    pub late: bool,
    /// The oldest write-ahead-log segment the spans came from; the writer releases it once they are stored.
    pub wal_seq: Option<u64>,
    /// Dependency edges among these spans alone, computed once here (for the dependency metrics) and stored as
    /// they are for a chunk that is not late; a late chunk's edges are computed again against the stored spans.
    pub edges: Vec<DependencyEdge>,
}

struct Live {
    spans: Vec<Span>,
    /// Dedup keys of the spans, built once the trace holds [`DEDUP_SET_FROM`] spans (smaller traces are scanned).
    keys: Option<HashSet<(SpanId, i32, u64, u64)>>,
    touched: Instant,
    late: bool,
    /// Already decided as kept (late spans of a kept trace).
    kept: bool,
    wal_seq: Option<u64>,
}

/// Spans per live trace from which exact-duplicate detection uses a hash set instead of a scan.
const DEDUP_SET_FROM: usize = 16;

impl Live {
    /// Records `span`'s dedup key; false when an identical span is already held.
    fn insert_key(&mut self, span: &Span) -> bool {
        let key = span.dedup_key();
        if let Some(set) = &mut self.keys {
            return set.insert(key);
        }
        if self.spans.iter().any(|s| s.dedup_key() == key) {
            return false;
        }
        if self.spans.len() + 1 >= DEDUP_SET_FROM {
            let mut set: HashSet<_> = self.spans.iter().map(Span::dedup_key).collect();
            set.insert(key);
            self.keys = Some(set);
        }
        true
    }
}

/// A bounded FIFO set of trace IDs (the decision caches).
#[derive(Default)]
struct IdCache {
    set: HashSet<TraceId>,
    order: VecDeque<TraceId>,
}

impl IdCache {
    fn insert(&mut self, id: TraceId, cap: usize) {
        if cap == 0 {
            return;
        }
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: &TraceId) -> bool {
        self.set.contains(id)
    }
}

/// One RED series: span kind, status code and the metric handles.
type RedSeries = (i32, i32, Counter, Histogram);

/// Cached metric handles per (service, operation, kind, status), so counting a span allocates nothing.
#[derive(Default)]
struct Red {
    by_service: HashMap<String, HashMap<String, Vec<RedSeries>>>,
    series: usize,
}

fn kind_label(k: i32) -> &'static str {
    match k {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_label(c: StatusCode) -> &'static str {
    match c {
        StatusCode::OK => "STATUS_CODE_OK",
        StatusCode::ERROR => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

impl Red {
    fn observe(&mut self, metrics: &Metrics, s: &Span) {
        let service = s.service_name();
        let (kind, status) = (s.kind.0, s.status_code.0);
        let found = self
            .by_service
            .get(service)
            .and_then(|ops| ops.get(s.name.as_str()))
            .and_then(|v| v.iter().find(|e| e.0 == kind && e.1 == status));
        let seconds = s.duration_nanos() as f64 / 1e9;
        if let Some((_, _, calls, hist)) = found {
            calls.inc();
            hist.observe(seconds);
            return;
        }
        if self.series >= RED_MAX_SERIES {
            metrics.red_series_overflow.inc();
            return;
        }
        let labels = RedLabels {
            service_name: service.to_string(),
            span_name: s.name.to_string(),
            span_kind: kind_label(kind).to_string(),
            status_code: status_label(s.status_code).to_string(),
        };
        let calls = metrics.span_calls.get_or_create(&labels).clone();
        let hist = metrics.span_duration_seconds.get_or_create(&labels).clone();
        calls.inc();
        hist.observe(seconds);
        self.series += 1;
        self.by_service
            .entry(service.to_string())
            .or_default()
            .entry(s.name.to_string())
            .or_default()
            .push((kind, status, calls, hist));
    }
}

/// Tail sampling in force: the compiled policies, the settings around them and cached metric handles.
struct Tail {
    sampler: TailSampler,
    config: TailSamplingConfig,
    /// Per (policy index, decision label): the `skein_sampling_policy_decisions_total` counter.
    votes: HashMap<(usize, &'static str), Counter>,
    /// `skein_traces_sampled_total{sampled="false"|"true"}`.
    outcome: Option<[Counter; 2]>,
}

/// The assembler state; driven by [`run`].
pub struct Assembler {
    config: AssemblyConfig,
    tail: Option<Tail>,
    live: HashMap<TraceId, Live>,
    /// Touch log for deadlines and eviction order; entries whose time no longer matches are stale.
    touches: VecDeque<(Instant, TraceId)>,
    kept: IdCache,
    dropped: IdCache,
    refs: Option<SegmentRefs>,
    red: Red,
    metrics: Arc<Metrics>,
}

impl Assembler {
    /// Creates an empty assembler without tail sampling and without a write-ahead log.
    pub fn new(config: AssemblyConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            tail: None,
            live: HashMap::new(),
            touches: VecDeque::new(),
            kept: IdCache::default(),
            dropped: IdCache::default(),
            refs: None,
            red: Red::default(),
            metrics,
        }
    }

    /// Tracks write-ahead-log segment references.
    pub fn with_wal_refs(mut self, refs: SegmentRefs) -> Self {
        self.refs = Some(refs);
        self
    }

    /// Sets (or clears) the tail-sampling configuration; held traces stay and are decided with the new policies.
    ///
    /// # Errors
    /// The policy error when the configuration does not compile (the previous policies stay in force).
    pub fn set_tail_sampling(
        &mut self,
        config: Option<TailSamplingConfig>,
    ) -> Result<(), crate::sampling::tail::PolicyError> {
        self.tail = match config {
            Some(config) => {
                Some(Tail { sampler: TailSampler::new(&config)?, config, votes: HashMap::new(), outcome: None })
            }
            None => None,
        };
        Ok(())
    }

    /// Number of traces held.
    pub fn live_traces(&self) -> usize {
        self.live.len()
    }

    fn max_live(&self) -> usize {
        match &self.tail {
            Some(t) => usize::try_from(t.config.num_traces).unwrap_or(usize::MAX),
            None => self.config.max_live_traces,
        }
        .max(1)
    }

    fn wait(&self) -> Duration {
        match &self.tail {
            Some(t) => Duration::from_nanos(t.config.decision_wait.0),
            None => Duration::from_millis(self.config.trace_idle_ms),
        }
    }

    fn kept_cap(&self) -> usize {
        match &self.tail {
            Some(t) => t.config.decision_cache.sampled_cache_size,
            None => self.config.recent_traces,
        }
    }

    fn release(&self, seq: Option<u64>) {
        if let (Some(refs), Some(seq)) = (&self.refs, seq) {
            refs.release(seq);
        }
    }

    /// Adds a batch; returns kept chunks that must be written now (span cap reached or memory bound hit).
    /// `wall_nanos` is the Unix time used by rate-limiting policies.
    pub fn add(&mut self, batch: Batch, now: Instant, wall_nanos: u64) -> Vec<Chunk> {
        let mut out = Vec::new();
        let fixed_deadline = self.tail.is_some();
        for span in batch.spans {
            let trace_id = span.trace_id;
            if !self.live.contains_key(&trace_id) {
                if self.dropped.contains(&trace_id) {
                    self.red.observe(&self.metrics, &span);
                    self.metrics.late_spans.get_or_create(&SampledLabels { sampled: "false".into() }).inc();
                    self.metrics.spans_sampled_out.inc();
                    continue;
                }
                let was_kept = self.kept.contains(&trace_id);
                if was_kept && self.tail.is_some() {
                    self.metrics.late_spans.get_or_create(&SampledLabels { sampled: "true".into() }).inc();
                }
                if self.live.len() >= self.max_live()
                    && let Some(chunk) = self.evict_oldest(wall_nanos)
                {
                    out.push(chunk);
                }
                let live = Live {
                    spans: Vec::new(),
                    keys: None,
                    touched: now,
                    late: was_kept || batch.replayed,
                    kept: was_kept,
                    wal_seq: None,
                };
                self.live.insert(trace_id, live);
                self.touches.push_back((now, trace_id));
            }
            let Some(live) = self.live.get_mut(&trace_id) else { continue };
            if !live.insert_key(&span) {
                self.metrics.spans_duplicate.inc();
                continue;
            }
            if let Some(seq) = batch.wal_seq
                && live.wal_seq.is_none_or(|held| seq < held)
                && let Some(refs) = &self.refs
            {
                refs.acquire(seq);
                if let Some(old) = live.wal_seq.replace(seq) {
                    refs.release(old);
                }
            }
            self.red.observe(&self.metrics, &span);
            live.spans.push(span);
            if !fixed_deadline && live.touched != now {
                live.touched = now;
                self.touches.push_back((now, trace_id));
            }
            if live.spans.len() >= self.config.max_spans_per_trace.max(1) {
                self.count_early("span_cap");
                if let Some(chunk) = self.take(trace_id, wall_nanos) {
                    out.push(chunk);
                }
            }
        }
        self.release(batch.wal_seq);
        self.metrics.live_traces.set(self.live.len() as i64);
        out
    }

    /// Decides every trace whose deadline has passed at `now` (idle for `trace_idle_ms`, or `decision_wait` after
    /// its first span with tail sampling); returns the kept chunks.
    pub fn flush_idle(&mut self, now: Instant, wall_nanos: u64) -> Vec<Chunk> {
        let wait = self.wait();
        let mut out = Vec::new();
        while let Some(&(t, trace_id)) = self.touches.front() {
            if now.saturating_duration_since(t) < wait {
                break;
            }
            self.touches.pop_front();
            if self.live.get(&trace_id).is_some_and(|l| l.touched == t)
                && let Some(chunk) = self.take(trace_id, wall_nanos)
            {
                out.push(chunk);
            }
        }
        self.metrics.live_traces.set(self.live.len() as i64);
        out
    }

    /// Decides every held trace (shutdown) — or drops them with `drop_pending_traces_on_shutdown`, counted.
    pub fn flush_all(&mut self, wall_nanos: u64) -> Vec<Chunk> {
        let ids: Vec<TraceId> = self.live.keys().copied().collect();
        self.touches.clear();
        let drop_pending = self.tail.as_ref().is_some_and(|t| t.config.drop_pending_traces_on_shutdown);
        let mut out = Vec::new();
        for id in ids {
            if drop_pending {
                if let Some(live) = self.live.remove(&id) {
                    self.metrics.spans_sampled_out.inc_by(live.spans.len() as u64);
                    self.count_early("dropped_on_shutdown");
                    self.release(live.wal_seq);
                }
            } else if let Some(chunk) = self.take(id, wall_nanos) {
                out.push(chunk);
            }
        }
        self.metrics.live_traces.set(0);
        out
    }

    fn evict_oldest(&mut self, wall_nanos: u64) -> Option<Chunk> {
        while let Some((t, trace_id)) = self.touches.pop_front() {
            if self.live.get(&trace_id).is_some_and(|l| l.touched == t) {
                self.count_early("live_traces_full");
                return self.take(trace_id, wall_nanos);
            }
        }
        None
    }

    /// Decides one live trace: a kept chunk, or `None` when it was sampled out (counted, reference released).
    fn take(&mut self, trace_id: TraceId, wall_nanos: u64) -> Option<Chunk> {
        let live = self.live.remove(&trace_id)?;
        let (sampled, weight) = match (&mut self.tail, live.kept) {
            (Some(tail), false) => {
                let v = tail.sampler.decide(&live.spans, wall_nanos);
                for (i, d) in &v.votes {
                    let names = tail.sampler.names();
                    let metrics = &self.metrics;
                    tail.votes
                        .entry((*i, d.label()))
                        .or_insert_with(|| {
                            let policy = names.get(*i).cloned().unwrap_or_default();
                            metrics
                                .sampling_policy_decisions
                                .get_or_create(&PolicyLabels { policy, decision: d.label().to_string() })
                                .clone()
                        })
                        .inc();
                }
                let metrics = &self.metrics;
                let outcome = tail.outcome.get_or_insert_with(|| {
                    [false, true].map(|b| {
                        metrics.traces_sampled.get_or_create(&SampledLabels { sampled: b.to_string() }).clone()
                    })
                });
                outcome[usize::from(v.sampled)].inc();
                (v.sampled, v.weight)
            }
            _ => (true, 1.0),
        };
        if !sampled {
            let cap = self.tail.as_ref().map_or(0, |t| t.config.decision_cache.non_sampled_cache_size);
            self.dropped.insert(trace_id, cap);
            self.metrics.spans_sampled_out.inc_by(live.spans.len() as u64);
            self.release(live.wal_seq);
            return None;
        }
        let cap = self.kept_cap();
        self.kept.insert(trace_id, cap);
        let edges = dependencies::edges(&live.spans, &dependencies::Earlier::default());
        for e in &edges {
            self.metrics
                .dependency_calls
                .get_or_create(&EdgeLabels { parent: e.parent.clone(), child: e.child.clone() })
                .inc_by(e.calls as f64 * weight);
        }
        Some(Chunk { spans: live.spans, late: live.late, wal_seq: live.wal_seq, edges })
    }

    fn count_early(&self, reason: &str) {
        self.metrics.traces_flushed_early.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}

/// Runs the assembler until `input` closes, then decides every held trace and returns (closing `output`).
///
/// `tail` carries the tail-sampling configuration; a new value (config reload) replaces the policies without
/// touching held traces, and one that does not compile is logged and ignored.
pub async fn run(
    config: AssemblyConfig,
    metrics: Arc<Metrics>,
    refs: Option<SegmentRefs>,
    mut tail: watch::Receiver<Option<TailSamplingConfig>>,
    mut input: mpsc::Receiver<Batch>,
    output: mpsc::Sender<Chunk>,
) {
    let mut assembler = Assembler::new(config, metrics);
    if let Some(refs) = refs {
        assembler = assembler.with_wal_refs(refs);
    }
    if let Err(e) = assembler.set_tail_sampling(tail.borrow_and_update().clone()) {
        tracing::error!(error = %e, "tail sampling disabled: invalid policies");
    }
    let tick_for = |wait: Duration| (wait / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick_every = tick_for(assembler.wait());
    let mut interval = tokio::time::interval(tick_every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watching = true;
    let depth =
        assembler.metrics.queue_depth.get_or_create(&crate::metrics::QueueLabels { queue: "ingest".into() }).clone();
    loop {
        depth.set(input.len() as i64);
        let chunks = tokio::select! {
            batch = input.recv() => match batch {
                Some(batch) => assembler.add(batch, Instant::now(), skein_model::now_nanos()),
                None => break,
            },
            _ = interval.tick() => assembler.flush_idle(Instant::now(), skein_model::now_nanos()),
            changed = tail.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                } else if let Err(e) = assembler.set_tail_sampling(tail.borrow_and_update().clone()) {
                    tracing::error!(error = %e, "new tail-sampling policies rejected; keeping the previous ones");
                } else {
                    tracing::info!(held = assembler.live_traces(), "tail-sampling policies replaced");
                    let every = tick_for(assembler.wait());
                    if every != tick_every {
                        tick_every = every;
                        interval = tokio::time::interval(every);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Vec::new()
            }
        };
        for chunk in chunks {
            assembler.metrics.pending_chunks.inc();
            if output.send(chunk).await.is_err() {
                tracing::error!("trace writer stopped; assembler exiting");
                return;
            }
        }
    }
    let rest = assembler.flush_all(skein_model::now_nanos());
    tracing::info!(traces = rest.len(), "assembler draining held traces");
    for chunk in rest {
        assembler.metrics.pending_chunks.inc();
        if output.send(chunk).await.is_err() {
            tracing::error!("trace writer stopped during drain");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_model::service_resource;

    fn span(trace: u8, id: u8) -> Span {
        let mut s = Span::minimal(TraceId([trace; 16]), SpanId([id; 8]), "op", service_resource("svc"));
        s.start_unix_nanos = u64::from(id);
        s.end_unix_nanos = u64::from(id) + 10;
        s
    }

    fn b(spans: Vec<Span>) -> Batch {
        Batch { spans, ..Batch::default() }
    }

    fn cfg() -> AssemblyConfig {
        AssemblyConfig { trace_idle_ms: 100, max_live_traces: 2, max_spans_per_trace: 3, recent_traces: 10 }
    }

    #[test]
    fn flushes_idle_traces_and_marks_late_chunks() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::default()));
        let t0 = Instant::now();
        assert!(a.add(b(vec![span(1, 1), span(1, 2)]), t0, 0).is_empty());
        assert!(a.add(b(vec![span(2, 1)]), t0 + Duration::from_millis(60), 0).is_empty());
        let first = a.flush_idle(t0 + Duration::from_millis(100), 0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].spans.len(), 2);
        assert!(!first[0].late);
        assert_eq!(a.live_traces(), 1);
        // A late span for trace 1 becomes a late chunk.
        a.add(b(vec![span(1, 3)]), t0 + Duration::from_millis(120), 0);
        let rest = a.flush_idle(t0 + Duration::from_millis(300), 0);
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().any(|c| c.late && c.spans[0].span_id == SpanId([3; 8])));
    }

    #[test]
    fn touching_a_trace_postpones_its_flush() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::default()));
        let t0 = Instant::now();
        a.add(b(vec![span(1, 1)]), t0, 0);
        a.add(b(vec![span(1, 2)]), t0 + Duration::from_millis(80), 0);
        assert!(a.flush_idle(t0 + Duration::from_millis(150), 0).is_empty());
        assert_eq!(a.flush_idle(t0 + Duration::from_millis(180), 0).len(), 1);
    }

    #[test]
    fn bounds_are_enforced_and_counted() {
        let (metrics, registry) = crate::metrics::registered();
        let mut a = Assembler::new(cfg(), metrics.clone());
        let t0 = Instant::now();
        let capped = a.add(b(vec![span(1, 1), span(1, 2), span(1, 3), span(1, 4)]), t0, 0);
        assert_eq!(capped.len(), 1, "span cap flushes a chunk of 3");
        assert_eq!(capped[0].spans.len(), 3);
        a.add(b(vec![span(2, 1)]), t0 + Duration::from_millis(1), 0);
        let evicted = a.add(b(vec![span(3, 1)]), t0 + Duration::from_millis(2), 0);
        assert_eq!(evicted.len(), 1, "third live trace evicts the oldest");
        assert_eq!(evicted[0].spans[0].span_id, SpanId([4; 8]));
        assert!(a.live_traces() <= 2);
        let text = skein_testkit::render(&registry);
        assert!(text.contains(r#"skein_traces_flushed_early_total{reason="span_cap"} 1"#), "{text}");
        assert!(text.contains(r#"skein_traces_flushed_early_total{reason="live_traces_full"} 1"#), "{text}");
    }

    #[test]
    fn exact_duplicates_are_dropped_but_shared_span_ids_kept() {
        let (metrics, registry) = crate::metrics::registered();
        let mut a = Assembler::new(cfg(), metrics.clone());
        let t0 = Instant::now();
        let mut server = span(1, 1);
        server.kind = skein_model::SpanKind::SERVER;
        a.add(b(vec![span(1, 1), span(1, 1), server]), t0, 0);
        let chunks = a.flush_all(0);
        assert_eq!(chunks[0].spans.len(), 2, "Zipkin-style shared span ID with another kind is kept");
        assert!(skein_testkit::render(&registry).contains("skein_spans_duplicate_total 1"));
    }

    fn tail(yaml: &str) -> TailSamplingConfig {
        serde_yaml::from_str(yaml).expect("tail yaml")
    }

    const ERRORS_ONLY: &str = "decision_wait: 100ms\nnum_traces: 3\npolicies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]";

    fn err_span(trace: u8, id: u8) -> Span {
        let mut s = span(trace, id);
        s.status_code = StatusCode::ERROR;
        s
    }

    #[test]
    fn tail_sampling_decides_after_decision_wait_and_late_spans_follow() {
        let (metrics, registry) = crate::metrics::registered();
        let mut a = Assembler::new(cfg(), metrics.clone());
        a.set_tail_sampling(Some(tail(ERRORS_ONLY))).expect("valid");
        let t0 = Instant::now();
        a.add(b(vec![span(1, 1), err_span(2, 1)]), t0, 0);
        // Touching does not postpone the decision: decision_wait counts from the first span.
        a.add(b(vec![span(1, 2), span(2, 2)]), t0 + Duration::from_millis(90), 0);
        assert!(a.flush_idle(t0 + Duration::from_millis(99), 0).is_empty());
        let kept = a.flush_idle(t0 + Duration::from_millis(100), 0);
        assert_eq!(kept.len(), 1, "only the trace with an error is kept");
        assert_eq!(kept[0].spans[0].trace_id, TraceId([2; 16]));
        assert_eq!(a.live_traces(), 0);
        // Late spans: the dropped trace's are dropped at once, the kept trace's form a late chunk.
        assert!(a.add(b(vec![span(1, 3), span(2, 3)]), t0 + Duration::from_millis(150), 0).is_empty());
        assert_eq!(a.live_traces(), 1);
        let late = a.flush_idle(t0 + Duration::from_millis(300), 0);
        assert_eq!(late.len(), 1);
        assert!(late[0].late);
        assert_eq!(late[0].spans[0].span_id, SpanId([3; 8]));
        let text = skein_testkit::render(&registry);
        assert!(text.contains(r#"skein_late_spans_total{sampled="false"} 1"#), "{text}");
        assert!(text.contains(r#"skein_late_spans_total{sampled="true"} 1"#), "{text}");
        assert!(text.contains(r#"skein_spans_sampled_out_total 3"#), "{text}");
        assert!(text.contains(r#"skein_sampling_policy_decisions_total{policy="errors",decision="sampled"} 1"#));
        assert!(text.contains(r#"skein_traces_sampled_total{sampled="false"} 1"#), "{text}");
        // RED counts every span, kept or not.
        assert!(text.contains(r#"skein_span_calls_total{service_name="svc",span_name="op",span_kind="SPAN_KIND_UNSPECIFIED",status_code="STATUS_CODE_UNSET"} 5"#), "{text}");
    }

    #[test]
    fn num_traces_overflow_decides_the_oldest_early_and_bounds_memory() {
        let (metrics, registry) = crate::metrics::registered();
        let mut a = Assembler::new(cfg(), metrics.clone());
        a.set_tail_sampling(Some(tail(ERRORS_ONLY))).expect("valid");
        let t0 = Instant::now();
        let mut kept = 0;
        for i in 0..200u8 {
            let s = if i % 2 == 0 { err_span(i, 1) } else { span(i, 1) };
            kept += a.add(b(vec![s]), t0 + Duration::from_micros(u64::from(i)), 0).len();
            assert!(a.live_traces() <= 3, "num_traces bounds memory");
        }
        kept += a.flush_all(0).len();
        assert_eq!(kept, 100, "every error trace kept, decided early or not");
        let text = skein_testkit::render(&registry);
        assert!(text.contains(r#"skein_traces_flushed_early_total{reason="live_traces_full"} 197"#), "{text}");
    }

    #[test]
    fn reload_replaces_policies_without_losing_held_traces() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::default()));
        a.set_tail_sampling(Some(tail(ERRORS_ONLY))).expect("valid");
        let t0 = Instant::now();
        a.add(b(vec![span(1, 1), span(2, 1)]), t0, 0);
        // An invalid configuration is refused and the old one stays.
        assert!(a.set_tail_sampling(Some(tail("policies: [{name: x, type: latency}]"))).is_err());
        assert_eq!(a.live_traces(), 2);
        a.set_tail_sampling(Some(tail("decision_wait: 100ms\npolicies: [{name: all, type: always_sample}]")))
            .expect("valid");
        assert_eq!(a.live_traces(), 2, "held traces survive the reload");
        assert_eq!(a.flush_idle(t0 + Duration::from_millis(100), 0).len(), 2, "decided by the new policies");
    }

    #[test]
    fn wal_references_follow_traces_to_chunks_or_are_released() {
        let refs = SegmentRefs::default();
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::default())).with_wal_refs(refs.clone());
        a.set_tail_sampling(Some(tail(ERRORS_ONLY))).expect("valid");
        let t0 = Instant::now();
        // Two batches from segments 5 and 7 (each acquired by the log), one trace kept and one dropped.
        refs.acquire(5);
        a.add(Batch { spans: vec![span(1, 1), err_span(2, 1)], wal_seq: Some(5), replayed: false }, t0, 0);
        refs.acquire(7);
        a.add(Batch { spans: vec![span(2, 2)], wal_seq: Some(7), replayed: false }, t0, 0);
        assert_eq!(refs.oldest(), Some(5), "live traces hold segment 5");
        let kept = a.flush_idle(t0 + Duration::from_millis(100), 0);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].wal_seq, Some(5), "the kept chunk carries its oldest segment");
        assert_eq!(refs.oldest(), Some(5));
        refs.release(5);
        assert_eq!(refs.oldest(), None, "dropped trace released its reference, batch refs released");
    }

    #[test]
    fn replayed_batches_become_late_chunks() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::default()));
        let t0 = Instant::now();
        a.add(Batch { spans: vec![span(1, 1)], wal_seq: None, replayed: true }, t0, 0);
        let c = a.flush_all(0);
        assert!(c[0].late, "replayed traces are deduplicated against storage");
    }

    #[test]
    fn duplicates_are_found_below_and_above_the_set_threshold() {
        let (metrics, registry) = crate::metrics::registered();
        let mut config = cfg();
        config.max_spans_per_trace = 1000;
        let mut a = Assembler::new(config, metrics.clone());
        let t0 = Instant::now();
        let spans: Vec<Span> = (1..=40u8).map(|i| span(1, i)).collect();
        a.add(b(spans.clone()), t0, 0);
        a.add(b(vec![span(1, 3), span(1, 39), span(1, 41)]), t0, 0);
        let chunks = a.flush_all(0);
        assert_eq!(chunks[0].spans.len(), 41);
        assert!(skein_testkit::render(&registry).contains("skein_spans_duplicate_total 2"));
    }
}
