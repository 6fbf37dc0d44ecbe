//! The storage writer: turns assembled trace chunks into [`WriteBatch`]es and persists them.
//!
//! It batches chunks (up to [`MAX_BATCH_CHUNKS`] or [`BATCH_INTERVAL`]), deduplicates late chunks against the
//! stored trace (so a span exported twice, minutes apart, is still stored once) and resolves parents that live in
//! earlier chunks for dependency edges. Encoding runs on the blocking pool. A failed write is retried with
//! exponential backoff; when storage stays down for [`MAX_ATTEMPTS`] tries, the batch is given up and counted in
//! `skein_spans_write_failed_total` — with the write-ahead log on, its segments are kept (their references are not
//! released) so the spans are written when the log is replayed at the next start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::assembly::Chunk;
use crate::metrics::Metrics;
use crate::model::Span;
use crate::storage::{Dictionaries, ImportancePolicy, TraceStore, WriteBatch, prepare_chunk};
use crate::wal::SegmentRefs;

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
    let w = Writer { dicts: Arc::new(Dictionaries::new(store.partition_secs())), store, metrics, importance, refs };
    let mut pending: Vec<Chunk> = Vec::new();
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
                    w.write(std::mem::take(&mut pending)).await;
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
            w.write(std::mem::take(&mut pending)).await;
        }
        if closed {
            return;
        }
    }
}

/// The writer's state: the store, its shared dictionaries and the retention-tier policy.
struct Writer {
    store: Arc<dyn TraceStore>,
    metrics: Arc<Metrics>,
    dicts: Arc<Dictionaries>,
    importance: ImportancePolicy,
    refs: Option<SegmentRefs>,
}

impl Writer {
    /// Deduplicates, encodes and writes one batch of chunks, retrying on failure.
    async fn write(&self, chunks: Vec<Chunk>) {
        let n = chunks.len() as i64;
        let seqs: Vec<u64> = chunks.iter().filter_map(|c| c.wal_seq).collect();
        let stored = write_inner(self, chunks).await;
        if stored && let Some(refs) = &self.refs {
            for seq in seqs {
                refs.release(seq);
            }
        }
        self.metrics.pending_chunks.dec_by(n);
    }
}

/// Returns false only when storage kept failing (the chunks' log segments must then be kept for replay).
async fn write_inner(w: &Writer, chunks: Vec<Chunk>) -> bool {
    let (store, metrics) = (&*w.store, &*w.metrics);
    if chunks.is_empty() {
        return true;
    }
    /// A chunk's spans, the services of parents stored in earlier chunks (span ID → service), and its tier.
    type ChunkInput = (Vec<Span>, HashMap<[u8; 8], String>, bool);
    let mut prepared_inputs: Vec<ChunkInput> = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        if !chunk.late {
            let important = w.importance.is_important(&chunk.spans);
            prepared_inputs.push((chunk.spans, HashMap::new(), important));
            continue;
        }
        let Some(trace_id) = chunk.spans.first().map(|s| s.trace_id) else { continue };
        let stored = match store.get_trace(trace_id).await {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%trace_id, error = %e, "could not read stored trace for a late chunk; writing it as is");
                Vec::new()
            }
        };
        let keys: HashSet<_> = stored.iter().map(Span::dedup_key).collect();
        let parents: HashMap<[u8; 8], String> =
            stored.iter().map(|s| (s.span_id.0, s.service_name().to_string())).collect();
        let before = chunk.spans.len();
        let spans: Vec<Span> = chunk.spans.into_iter().filter(|s| !keys.contains(&s.dedup_key())).collect();
        metrics.spans_duplicate.inc_by((before - spans.len()) as u64);
        if !spans.is_empty() {
            let important = w.importance.is_important(stored.iter().chain(&spans));
            prepared_inputs.push((spans, parents, important));
        }
    }
    if prepared_inputs.is_empty() {
        return true;
    }
    let span_count: usize = prepared_inputs.iter().map(|(s, _, _)| s.len()).sum();
    let dicts = w.dicts.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepared_inputs
            .iter()
            .map(|(spans, parents, important)| prepare_chunk(spans, parents, Some(&dicts), *important))
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let batch = match prepared {
        Ok(Ok(chunks)) => WriteBatch { chunks },
        Ok(Err(e)) => {
            // Entries handed out for the chunks encoded before the failure will never be stored.
            w.dicts.reset();
            tracing::error!(error = %e, spans = span_count, "could not encode trace chunks; dropped");
            metrics.spans_write_failed.inc_by(span_count as u64);
            return true;
        }
        Err(e) => {
            w.dicts.reset();
            tracing::error!(error = %e, spans = span_count, "encoder task failed; chunks dropped");
            metrics.spans_write_failed.inc_by(span_count as u64);
            return true;
        }
    };
    let n_chunks = batch.chunks.len() as u64;
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=MAX_ATTEMPTS {
        let started = std::time::Instant::now();
        match store.write(batch.clone()).await {
            Ok(()) => {
                metrics.store_write_seconds.observe(started.elapsed().as_secs_f64());
                metrics.chunks_written.inc_by(n_chunks);
                metrics.spans_written.inc_by(span_count as u64);
                return true;
            }
            Err(e) => {
                metrics.store_write_errors.inc();
                tracing::warn!(error = %e, attempt, "storage write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    w.dicts.reset();
    tracing::error!(
        spans = span_count,
        "storage kept failing; batch given up (kept in the write-ahead log when it is on, and written at replay)"
    );
    metrics.spans_write_failed.inc_by(span_count as u64);
    false
}
