//! Trace assembly: groups incoming spans by trace ID in memory and hands finished trace chunks to the writer.
//!
//! A trace is flushed when it has been idle (no new span) for `trace_idle_ms`, when it reaches
//! `max_spans_per_trace`, or early when `max_live_traces` are held and a new trace arrives (the least recently
//! touched trace goes first; counted). Spans arriving for a trace flushed recently become a further, *late* chunk
//! of it; the writer deduplicates late chunks against what is stored. Exact duplicates within a live trace are
//! dropped here (counted).
//!
//! Backpressure: the input and output channels are bounded; the assembler awaits the writer, and receivers await
//! the assembler, so a slow disk slows clients instead of growing memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::{Metrics, ReasonLabels};
use crate::model::{Span, SpanId, TraceId};

/// Assembly settings.
#[derive(Clone, Debug)]
pub struct AssemblyConfig {
    /// A trace is written after this long without a new span, milliseconds.
    pub trace_idle_ms: u64,
    /// Maximum traces held in memory; the least recently touched is flushed early beyond this.
    pub max_live_traces: usize,
    /// A trace chunk is flushed as soon as it holds this many spans.
    pub max_spans_per_trace: usize,
    /// How many flushed trace IDs are remembered to mark later spans as late chunks.
    pub recent_traces: usize,
}

impl Default for AssemblyConfig {
    fn default() -> Self {
        Self { trace_idle_ms: 5000, max_live_traces: 100_000, max_spans_per_trace: 10_000, recent_traces: 400_000 }
    }
}

/// A finished piece of a trace on its way to storage.
#[derive(Debug)]
pub struct Chunk {
    /// The spans, all of one trace, without exact duplicates.
    pub spans: Vec<Span>,
    /// True when earlier chunks of this trace may already be stored.
    pub late: bool,
}

struct Live {
    spans: Vec<Span>,
    keys: HashSet<(SpanId, i32, u64, u64)>,
    touched: Instant,
    late: bool,
}

/// The assembler state; driven by [`run`].
pub struct Assembler {
    config: AssemblyConfig,
    live: HashMap<TraceId, Live>,
    /// Touch log for idle detection and eviction order; entries whose time no longer matches are stale.
    touches: VecDeque<(Instant, TraceId)>,
    recent: HashSet<TraceId>,
    recent_order: VecDeque<TraceId>,
    metrics: Arc<Metrics>,
}

impl Assembler {
    /// Creates an empty assembler.
    pub fn new(config: AssemblyConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            live: HashMap::new(),
            touches: VecDeque::new(),
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            metrics,
        }
    }

    /// Number of traces held.
    pub fn live_traces(&self) -> usize {
        self.live.len()
    }

    /// Adds spans; returns chunks that must be written now (span cap reached or memory bound hit).
    pub fn add(&mut self, spans: Vec<Span>, now: Instant) -> Vec<Chunk> {
        let mut out = Vec::new();
        for span in spans {
            let trace_id = span.trace_id;
            if !self.live.contains_key(&trace_id) {
                if self.live.len() >= self.config.max_live_traces.max(1)
                    && let Some(chunk) = self.evict_oldest()
                {
                    self.count_early("live_traces_full");
                    out.push(chunk);
                }
                let late = self.recent.contains(&trace_id);
                self.live.insert(trace_id, Live { spans: Vec::new(), keys: HashSet::new(), touched: now, late });
            }
            let Some(live) = self.live.get_mut(&trace_id) else { continue };
            if !live.keys.insert(span.dedup_key()) {
                self.metrics.spans_duplicate.inc();
                continue;
            }
            live.spans.push(span);
            if live.touched != now || live.spans.len() == 1 {
                live.touched = now;
                self.touches.push_back((now, trace_id));
            }
            if live.spans.len() >= self.config.max_spans_per_trace.max(1)
                && let Some(chunk) = self.take(trace_id)
            {
                self.count_early("span_cap");
                out.push(chunk);
            }
        }
        self.metrics.live_traces.set(self.live.len() as i64);
        out
    }

    /// Returns every trace idle for at least `trace_idle_ms` at `now`.
    pub fn flush_idle(&mut self, now: Instant) -> Vec<Chunk> {
        let idle = Duration::from_millis(self.config.trace_idle_ms);
        let mut out = Vec::new();
        while let Some(&(t, trace_id)) = self.touches.front() {
            if now.saturating_duration_since(t) < idle {
                break;
            }
            self.touches.pop_front();
            if self.live.get(&trace_id).is_some_and(|l| l.touched == t)
                && let Some(chunk) = self.take(trace_id)
            {
                out.push(chunk);
            }
        }
        self.metrics.live_traces.set(self.live.len() as i64);
        out
    }

    /// Returns every held trace (shutdown).
    pub fn flush_all(&mut self) -> Vec<Chunk> {
        let ids: Vec<TraceId> = self.live.keys().copied().collect();
        self.touches.clear();
        let out = ids.into_iter().filter_map(|id| self.take(id)).collect();
        self.metrics.live_traces.set(0);
        out
    }

    fn evict_oldest(&mut self) -> Option<Chunk> {
        while let Some((t, trace_id)) = self.touches.pop_front() {
            if self.live.get(&trace_id).is_some_and(|l| l.touched == t) {
                return self.take(trace_id);
            }
        }
        None
    }

    fn take(&mut self, trace_id: TraceId) -> Option<Chunk> {
        let live = self.live.remove(&trace_id)?;
        if self.recent.insert(trace_id) {
            self.recent_order.push_back(trace_id);
            while self.recent_order.len() > self.config.recent_traces {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
        Some(Chunk { spans: live.spans, late: live.late })
    }

    fn count_early(&self, reason: &str) {
        self.metrics.traces_flushed_early.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}

/// Runs the assembler until `input` closes, then flushes every held trace and returns (closing `output`).
pub async fn run(
    config: AssemblyConfig,
    metrics: Arc<Metrics>,
    mut input: mpsc::Receiver<Vec<Span>>,
    output: mpsc::Sender<Chunk>,
) {
    let tick = Duration::from_millis((config.trace_idle_ms / 4).clamp(10, 1000));
    let mut assembler = Assembler::new(config, metrics);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let chunks = tokio::select! {
            batch = input.recv() => match batch {
                Some(spans) => assembler.add(spans, Instant::now()),
                None => break,
            },
            _ = interval.tick() => assembler.flush_idle(Instant::now()),
        };
        for chunk in chunks {
            assembler.metrics.pending_chunks.inc();
            if output.send(chunk).await.is_err() {
                tracing::error!("trace writer stopped; assembler exiting");
                return;
            }
        }
    }
    let rest = assembler.flush_all();
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
    use crate::model::service_resource;

    fn span(trace: u8, id: u8) -> Span {
        let mut s = Span::minimal(TraceId([trace; 16]), SpanId([id; 8]), "op", service_resource("svc"));
        s.start_unix_nanos = u64::from(id);
        s.end_unix_nanos = u64::from(id) + 10;
        s
    }

    fn cfg() -> AssemblyConfig {
        AssemblyConfig { trace_idle_ms: 100, max_live_traces: 2, max_spans_per_trace: 3, recent_traces: 10 }
    }

    #[test]
    fn flushes_idle_traces_and_marks_late_chunks() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::new()));
        let t0 = Instant::now();
        assert!(a.add(vec![span(1, 1), span(1, 2)], t0).is_empty());
        assert!(a.add(vec![span(2, 1)], t0 + Duration::from_millis(60)).is_empty());
        let first = a.flush_idle(t0 + Duration::from_millis(100));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].spans.len(), 2);
        assert!(!first[0].late);
        assert_eq!(a.live_traces(), 1);
        // A late span for trace 1 becomes a late chunk.
        a.add(vec![span(1, 3)], t0 + Duration::from_millis(120));
        let rest = a.flush_idle(t0 + Duration::from_millis(300));
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().any(|c| c.late && c.spans[0].span_id == SpanId([3; 8])));
    }

    #[test]
    fn touching_a_trace_postpones_its_flush() {
        let mut a = Assembler::new(cfg(), Arc::new(Metrics::new()));
        let t0 = Instant::now();
        a.add(vec![span(1, 1)], t0);
        a.add(vec![span(1, 2)], t0 + Duration::from_millis(80));
        assert!(a.flush_idle(t0 + Duration::from_millis(150)).is_empty());
        assert_eq!(a.flush_idle(t0 + Duration::from_millis(180)).len(), 1);
    }

    #[test]
    fn bounds_are_enforced_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let mut a = Assembler::new(cfg(), metrics.clone());
        let t0 = Instant::now();
        let capped = a.add(vec![span(1, 1), span(1, 2), span(1, 3), span(1, 4)], t0);
        assert_eq!(capped.len(), 1, "span cap flushes a chunk of 3");
        assert_eq!(capped[0].spans.len(), 3);
        a.add(vec![span(2, 1)], t0 + Duration::from_millis(1));
        let evicted = a.add(vec![span(3, 1)], t0 + Duration::from_millis(2));
        assert_eq!(evicted.len(), 1, "third live trace evicts the oldest");
        assert_eq!(evicted[0].spans[0].span_id, SpanId([4; 8]));
        assert!(a.live_traces() <= 2);
        let text = metrics.render();
        assert!(text.contains(r#"skein_traces_flushed_early_total{reason="span_cap"} 1"#), "{text}");
        assert!(text.contains(r#"skein_traces_flushed_early_total{reason="live_traces_full"} 1"#), "{text}");
    }

    #[test]
    fn exact_duplicates_are_dropped_but_shared_span_ids_kept() {
        let metrics = Arc::new(Metrics::new());
        let mut a = Assembler::new(cfg(), metrics.clone());
        let t0 = Instant::now();
        let mut server = span(1, 1);
        server.kind = crate::model::SpanKind::SERVER;
        a.add(vec![span(1, 1), span(1, 1), server], t0);
        let chunks = a.flush_all();
        assert_eq!(chunks[0].spans.len(), 2, "Zipkin-style shared span ID with another kind is kept");
        assert!(metrics.render().contains("skein_spans_duplicate_total 1"));
    }
}
