//! The storage writer: turns assembled trace chunks into [`WriteBatch`]es and persists them.
//!
//! It batches chunks (up to [`MAX_BATCH_CHUNKS`] or [`BATCH_INTERVAL`]), deduplicates late chunks against the
//! stored trace (so a span exported twice, minutes apart, is still stored once) and resolves dependency edges across
//! chunks: a late span whose parent is stored, and stored spans whose parent arrives late. Encoding runs on the blocking pool, and is pipelined with storage: batch
//! N+1 is encoded while batch N is written (one write in flight; a batch with late chunks waits for it, so its
//! deduplication reads see every earlier write). A failed write is retried with exponential backoff; when storage
//! stays down for [`MAX_ATTEMPTS`] tries, the batch is given up and counted in `skein_spans_write_failed_total` —
//! with the write-ahead log on, its segments are kept (their references are not released) so the spans are
//! written when the log is replayed at the next start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::assembly::Chunk;
use crate::metrics::Metrics;
use crate::wal::SegmentRefs;
use skein_model::dependencies::{self, DependencyEdge, Earlier};
use skein_model::{Span, TraceId};
use skein_storage::{Dictionaries, ImportancePolicy, TraceStore, WriteBatch, prepare_batch};

/// Maximum chunks per storage write.
pub const MAX_BATCH_CHUNKS: usize = 512;
/// Maximum time a chunk waits for its batch to fill.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Write attempts before a batch is dropped.
pub const MAX_ATTEMPTS: u32 = 8;

/// Runs until `input` closes and every received chunk is written (or counted as failed).
pub async fn run(
    store: Arc<dyn TraceStore>,
    metrics: Arc<Metrics>,
    importance: ImportancePolicy,
    refs: Option<SegmentRefs>,
    mut input: mpsc::Receiver<Chunk>,
) {
    let w = Arc::new(Writer {
        dicts: Arc::new(Dictionaries::new(store.partition_secs())),
        store,
        metrics,
        importance,
        refs,
    });
    let mut pending: Vec<Chunk> = Vec::new();
    let mut inflight: Option<JoinHandle<bool>> = None;
    let depth = w.metrics.queue_depth.get_or_create(&crate::metrics::QueueLabels { queue: "write".into() }).clone();
    loop {
        depth.set(input.len() as i64);
        let closed = if pending.is_empty() {
            match input.recv().await {
                Some(c) => {
                    pending.push(c);
                    false
                }
                None => true,
            }
        } else {
            match tokio::time::timeout(BATCH_INTERVAL, input.recv()).await {
                Ok(Some(c)) => {
                    pending.push(c);
                    false
                }
                Ok(None) => true,
                Err(_) => {
                    w.submit(std::mem::take(&mut pending), &mut inflight).await;
                    continue;
                }
            }
        };
        while pending.len() < MAX_BATCH_CHUNKS {
            match input.try_recv() {
                Ok(c) => pending.push(c),
                Err(_) => break,
            }
        }
        if pending.len() >= MAX_BATCH_CHUNKS || closed {
            w.submit(std::mem::take(&mut pending), &mut inflight).await;
        }
        if closed {
            finish(&mut inflight).await;
            return;
        }
    }
}

/// Waits for the write in flight; true when there was none or it succeeded.
async fn finish(inflight: &mut Option<JoinHandle<bool>>) -> bool {
    match inflight.take() {
        Some(h) => h.await.unwrap_or(false),
        None => true,
    }
}

/// A chunk's spans, what its trace's stored chunks add to its dependency edges, and its tier.
/// A chunk's dependency edges: the assembler's (a chunk that is not late), or to compute against the trace's
/// stored spans (a late chunk).
enum Edges {
    Known(Vec<DependencyEdge>),
    Against(Earlier),
}

type ChunkInput = (Vec<Span>, Edges, bool);

/// The writer's state: the store, its shared dictionaries and the retention-tier policy.
struct Writer {
    store: Arc<dyn TraceStore>,
    metrics: Arc<Metrics>,
    dicts: Arc<Dictionaries>,
    importance: ImportancePolicy,
    refs: Option<SegmentRefs>,
}

impl Writer {
    /// Deduplicates and encodes one batch, then starts writing it once the previous write is done.
    async fn submit(self: &Arc<Self>, chunks: Vec<Chunk>, inflight: &mut Option<JoinHandle<bool>>) {
        if chunks.is_empty() {
            return;
        }
        let n = chunks.len() as i64;
        let seqs: Vec<u64> = chunks.iter().filter_map(|c| c.wal_seq).collect();
        if chunks.iter().any(|c| c.late) {
            finish(inflight).await;
        }
        let inputs = Arc::new(self.dedup(chunks).await);
        let span_count: usize = inputs.iter().map(|(s, _, _)| s.len()).sum();
        let mut encoded = if inputs.is_empty() { Ok(WriteBatch::default()) } else { self.encode(&inputs).await };
        if !finish(inflight).await && !inputs.is_empty() {
            // The previous batch was given up and the dictionaries reset: these blocks may name entries that never
            // reached storage, so encode them again.
            encoded = self.encode(&inputs).await;
        }
        let batch = match encoded {
            Ok(b) => b,
            Err(e) => {
                // Entries handed out for the chunks encoded before the failure will never be stored.
                self.dicts.reset();
                tracing::error!(error = %e, spans = span_count, "could not encode trace chunks; dropped");
                self.metrics.spans_write_failed.inc_by(span_count as u64);
                self.release(&seqs);
                self.metrics.pending_chunks.dec_by(n);
                return;
            }
        };
        let w = self.clone();
        *inflight = Some(tokio::spawn(async move {
            let stored = w.persist(batch, span_count).await;
            if stored {
                w.release(&seqs);
            }
            w.metrics.pending_chunks.dec_by(n);
            stored
        }));
    }

    fn release(&self, seqs: &[u64]) {
        if let Some(refs) = &self.refs {
            for &seq in seqs {
                refs.release(seq);
            }
        }
    }

    /// Drops spans of late chunks that are already stored; finds the services of their stored parents and the
    /// stored spans that were waiting for a parent (dependency edges in both directions).
    async fn dedup(&self, chunks: Vec<Chunk>) -> Vec<ChunkInput> {
        let mut out: Vec<ChunkInput> = Vec::with_capacity(chunks.len());
        // Spans of traces with a late chunk in this batch, taken by earlier chunks of the same batch: they are not
        // stored yet, but will be with this batch, so the late chunk is deduplicated and linked against them too.
        let late_traces: HashSet<TraceId> =
            chunks.iter().filter(|c| c.late).filter_map(|c| c.spans.first().map(|s| s.trace_id)).collect();
        let mut in_batch: HashMap<TraceId, Vec<Span>> = HashMap::new();
        for chunk in chunks {
            let Some(trace_id) = chunk.spans.first().map(|s| s.trace_id) else { continue };
            if !chunk.late {
                let important = self.importance.is_important(&chunk.spans);
                if late_traces.contains(&trace_id) {
                    in_batch.entry(trace_id).or_default().extend(chunk.spans.iter().cloned());
                }
                out.push((chunk.spans, Edges::Known(chunk.edges), important));
                continue;
            }
            let mut stored = match self.store.get_trace(trace_id).await {
                Ok(s) => s.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(%trace_id, error = %e, "could not read stored trace for a late chunk; writing it as is");
                    Vec::new()
                }
            };
            if let Some(taken) = in_batch.get(&trace_id) {
                stored.extend(taken.iter().cloned());
            }
            let keys: HashSet<_> = stored.iter().map(Span::dedup_key).collect();
            let earlier = Earlier::from_stored(&stored);
            let before = chunk.spans.len();
            let spans: Vec<Span> = chunk.spans.into_iter().filter(|s| !keys.contains(&s.dedup_key())).collect();
            self.metrics.spans_duplicate.inc_by((before - spans.len()) as u64);
            if !spans.is_empty() {
                let important = self.importance.is_important(stored.iter().chain(&spans));
                in_batch.entry(trace_id).or_default().extend(spans.iter().cloned());
                out.push((spans, Edges::Against(earlier), important));
            }
        }
        out
    }

    /// Encodes chunks on the blocking pool.
    async fn encode(&self, inputs: &Arc<Vec<ChunkInput>>) -> Result<WriteBatch, String> {
        let (dicts, inputs, layout) = (self.dicts.clone(), inputs.clone(), self.store.layout());
        let prepared = tokio::task::spawn_blocking(move || {
            let edges: Vec<Vec<DependencyEdge>> = inputs
                .iter()
                .map(|(spans, edges, _)| match edges {
                    Edges::Known(edges) => edges.clone(),
                    Edges::Against(earlier) => dependencies::edges(spans, earlier),
                })
                .collect();
            let chunks =
                inputs.iter().zip(edges).map(|((spans, _, important), edges)| (spans.as_slice(), edges, *important));
            prepare_batch(chunks, &dicts, layout)
        })
        .await;
        match prepared {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("encoder task failed: {e}")),
        }
    }

    /// Writes a batch, retrying; false when storage kept failing (the log segments must then be kept for replay).
    async fn persist(&self, batch: WriteBatch, span_count: usize) -> bool {
        let batch = Arc::new(batch);
        let n_chunks = batch.chunks.len() as u64;
        if n_chunks == 0 {
            return true;
        }
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=MAX_ATTEMPTS {
            let started = std::time::Instant::now();
            match self.store.write(batch.clone()).await {
                Ok(()) => {
                    self.metrics.store_write_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.chunks_written.inc_by(n_chunks);
                    self.metrics.spans_written.inc_by(span_count as u64);
                    return true;
                }
                Err(e) => {
                    self.metrics.store_write_errors.inc();
                    tracing::warn!(error = %e, attempt, "storage write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.dicts.reset();
        tracing::error!(
            spans = span_count,
            "storage kept failing; batch given up (kept in the write-ahead log when it is on, and written at replay)"
        );
        self.metrics.spans_write_failed.inc_by(span_count as u64);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_model::{SpanId, StatusCode, TraceId, service_resource};
    use skein_storage::embedded::{EmbeddedConfig, EmbeddedStore};

    /// Writes a trace's children, then (late) their parent, then (late) another child of the stored parent and a
    /// duplicate of the parent, with `pause` between the chunks (zero: they share one writer batch); returns the
    /// links and the stored span count.
    async fn late_parent(pause: Duration) -> (Vec<(String, String, u64, u64)>, Option<usize>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn TraceStore> = Arc::new(EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open"));
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(run(store.clone(), metrics, ImportancePolicy::default(), None, rx));
        let t = TraceId([7; 16]);
        let now = skein_model::now_nanos();
        let span = |id: u8, parent: Option<u8>, service: &str, error: bool| {
            let mut s = Span::minimal(t, SpanId([id; 8]), "op", service_resource(service));
            s.parent_span_id = parent.map(|p| vec![p; 8]).unwrap_or_default();
            s.start_unix_nanos = now - 10_000_000_000 + u64::from(id) * 1_000_000;
            s.end_unix_nanos = s.start_unix_nanos + 1_000_000;
            if error {
                s.status_code = StatusCode::ERROR;
            }
            s
        };
        let chunks = [
            (vec![span(2, Some(1), "db", false), span(3, Some(1), "db", true)], false),
            (vec![span(1, None, "gateway", false)], true),
            (vec![span(4, Some(1), "cache", false), span(1, None, "gateway", false)], true),
        ];
        for (spans, late) in chunks {
            let edges = dependencies::edges(&spans, &Earlier::default());
            tx.send(Chunk { spans, late, wal_seq: None, edges }).await.expect("send");
            tokio::time::sleep(pause).await;
        }
        drop(tx);
        writer.await.expect("writer");
        let mut links = store.dependencies(now + 60_000_000_000, 3_600_000_000_000).await.expect("dependencies");
        links.sort_by(|a, b| a.child.cmp(&b.child));
        let got = links.into_iter().map(|l| (l.parent, l.child, l.call_count, l.error_count)).collect();
        (got, store.get_trace(t).await.expect("read").map(|s| s.len()))
    }

    #[tokio::test]
    async fn edges_are_counted_once_whichever_side_of_a_call_arrives_late() {
        let want = vec![("gateway".into(), "cache".into(), 1, 0), ("gateway".into(), "db".into(), 2, 1)];
        // Chunks in separate writer batches (the parent read back from the store) and in one batch.
        for pause in [Duration::from_millis(300), Duration::ZERO] {
            assert_eq!(late_parent(pause).await, (want.clone(), Some(4)), "pause {pause:?}");
        }
    }
}
