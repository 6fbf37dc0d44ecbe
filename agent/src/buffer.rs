//! The agent's buffer: a memory queue bounded in bytes in front of the optional on-disk [`Spill`] queue.
//!
//! Order is kept end to end: every entry on disk is older than every entry in memory, so the forwarder sends disk
//! first, then memory. Memory overflows to disk oldest-first; while no collector is reachable ("spill mode")
//! everything goes to disk at once, so an agent restart loses nothing that was accepted. Without a spill
//! directory, or when the disk is full too, the drop policy applies: the oldest non-error spans go first, error
//! spans last, each one counted in `skein_agent_spans_dropped_total{reason="buffer_full"}`.
//!
//! The app's export call only ever waits for this lock and, when spilling, a buffered file write.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use crate::entry::Entry;
use crate::metrics::Metrics;
use crate::spill::Spill;

/// Entries taken by the forwarder; hand them back with [`Buffer::complete`].
#[derive(Debug, Default)]
pub struct Taken {
    /// The entries, oldest first.
    pub entries: Vec<Entry>,
    segment: Option<u64>,
}

struct Inner {
    mem: VecDeque<(Entry, Instant)>,
    mem_bytes: usize,
    mem_spans: u64,
    spill: Option<Spill>,
    spill_mode: bool,
    inflight_spans: u64,
}

/// The buffer shared by the receivers (producers) and the forwarder (consumer).
pub struct Buffer {
    inner: Mutex<Inner>,
    mem_max_bytes: usize,
    notify: Notify,
    metrics: Arc<Metrics>,
}

impl Buffer {
    /// A buffer of at most `mem_max_bytes` in memory, spilling to `spill_dir` (at most `spill_max_bytes`) when
    /// given. Segments left by a previous run are queued first.
    ///
    /// # Errors
    /// The spill directory cannot be created or read.
    pub fn new(mem_max_bytes: usize, spill: Option<(&Path, u64)>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let spill = match spill {
            Some((dir, max)) => {
                let (spill, corrupt) = Spill::open(dir, max)?;
                metrics.spill_corrupt_records.inc_by(corrupt);
                if spill.spans() > 0 {
                    tracing::info!(spans = spill.spans(), bytes = spill.bytes(), "replaying spilled spans");
                }
                Some(spill)
            }
            None => None,
        };
        let me = Self {
            inner: Mutex::new(Inner {
                mem: VecDeque::new(),
                mem_bytes: 0,
                mem_spans: 0,
                spill,
                spill_mode: false,
                inflight_spans: 0,
            }),
            mem_max_bytes,
            notify: Notify::new(),
            metrics,
        };
        me.publish(&me.lock());
        Ok(me)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the queue half-updated in a way worse than losing the
        // entry being moved, so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, inner: &Inner) {
        self.metrics.set_buffer("memory", inner.mem_bytes as u64, inner.mem_spans);
        let (bytes, spans) = inner.spill.as_ref().map_or((0, 0), |s| (s.bytes(), s.spans()));
        self.metrics.set_buffer("disk", bytes, spans);
        self.metrics.inflight_spans.set(inner.inflight_spans as i64);
    }

    fn spill_one(&self, inner: &mut Inner, entry: Entry) {
        let Some(spill) = inner.spill.as_mut() else { return };
        let spans = entry.spans;
        match spill.append(entry) {
            Ok(out) => {
                self.metrics.drop_spans("buffer_full", out.dropped_spans);
                self.metrics.spilled_bytes.inc_by(out.written_bytes);
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing the spill queue failed; spans dropped");
                self.metrics.drop_spans("spill_error", u64::from(spans));
            }
        }
    }

    /// Moves memory entries to disk, oldest first, until `keep_bytes` or less stay in memory.
    fn spill_memory(&self, inner: &mut Inner, keep_bytes: usize) {
        while inner.spill.is_some() && inner.mem_bytes > keep_bytes {
            let Some((e, _)) = inner.mem.pop_front() else { break };
            inner.mem_bytes -= e.mem_bytes();
            inner.mem_spans -= u64::from(e.spans);
            self.spill_one(inner, e);
        }
    }

    /// Drop policy in memory: strip the oldest entry that still has non-error spans to its error spans; when
    /// only error spans are left, remove the oldest entry.
    fn shed_memory(&self, inner: &mut Inner) {
        while inner.mem_bytes > self.mem_max_bytes {
            let idx = inner.mem.iter().position(|(e, _)| e.spans > e.error_spans);
            let (i, replacement) = match idx {
                Some(i) => (i, inner.mem[i].0.errors_only()),
                None => (0, None),
            };
            let Some((old, at)) = inner.mem.remove(i) else { break };
            inner.mem_bytes -= old.mem_bytes();
            inner.mem_spans -= u64::from(old.spans);
            let kept = replacement.as_ref().map_or(0, |e| e.spans);
            self.metrics.drop_spans("buffer_full", u64::from(old.spans - kept));
            if let Some(e) = replacement {
                inner.mem_bytes += e.mem_bytes();
                inner.mem_spans += u64::from(e.spans);
                inner.mem.insert(i, (e, at));
            }
        }
    }

    /// Accepts an entry from a receiver. Never fails: what cannot be kept is dropped by policy and counted.
    pub fn push(&self, entry: Entry) {
        if entry.spans == 0 {
            return;
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.spill.is_some() && (inner.spill_mode || entry.mem_bytes() > self.mem_max_bytes) {
            self.spill_memory(inner, 0);
            self.spill_one(inner, entry);
        } else {
            if inner.spill.is_some() {
                self.spill_memory(inner, self.mem_max_bytes.saturating_sub(entry.mem_bytes()));
            }
            inner.mem_bytes += entry.mem_bytes();
            inner.mem_spans += u64::from(entry.spans);
            inner.mem.push_back((entry, Instant::now()));
            self.shed_memory(inner);
        }
        self.publish(inner);
        drop(guard);
        self.notify.notify_one();
    }

    /// Turns spill mode on (no collector reachable: memory moves to disk now, new entries go straight there) or
    /// off. Without a spill directory this only records the state.
    pub fn set_spill_mode(&self, on: bool) {
        let mut inner = self.lock();
        if inner.spill_mode != on {
            tracing::info!(spill_mode = on, "collector reachability changed");
        }
        inner.spill_mode = on;
        if on {
            self.spill_memory(&mut inner, 0);
            self.publish(&inner);
        }
    }

    /// How long until a batch is due: zero when the disk has a segment or memory holds `max_spans` spans or
    /// `max_bytes` bytes; the rest of `timeout` since the oldest memory entry arrived otherwise; `None` when
    /// empty.
    pub fn due_in(&self, max_spans: u64, max_bytes: usize, timeout: Duration) -> Option<Duration> {
        let inner = self.lock();
        if inner.spill.as_ref().is_some_and(Spill::has_queued) {
            return Some(Duration::ZERO);
        }
        let (_, oldest) = inner.mem.front()?;
        if inner.mem_spans >= max_spans || inner.mem_bytes >= max_bytes {
            return Some(Duration::ZERO);
        }
        Some(timeout.saturating_sub(oldest.elapsed()))
    }

    /// Waits for the next [`Buffer::push`].
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }

    /// Takes the next batch: the oldest disk segment if any, else memory entries up to `max_spans` spans and
    /// `max_bytes` bytes (at least one entry).
    pub fn take(&self, max_spans: u64, max_bytes: usize) -> Taken {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut taken = Taken::default();
        if let Some(spill) = inner.spill.as_mut() {
            match spill.take() {
                Ok(Some((seq, entries))) => {
                    taken = Taken { entries, segment: Some(seq) };
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading the spill queue failed"),
            }
        }
        if taken.segment.is_none() {
            let (mut spans, mut bytes) = (0u64, 0usize);
            while let Some((e, _)) = inner.mem.front() {
                if !taken.entries.is_empty()
                    && (spans + u64::from(e.spans) > max_spans || bytes + e.mem_bytes() > max_bytes)
                {
                    break;
                }
                let Some((e, _)) = inner.mem.pop_front() else { break };
                spans += u64::from(e.spans);
                bytes += e.mem_bytes();
                inner.mem_bytes -= e.mem_bytes();
                inner.mem_spans -= u64::from(e.spans);
                taken.entries.push(e);
            }
        }
        inner.inflight_spans += taken.entries.iter().map(|e| u64::from(e.spans)).sum::<u64>();
        self.publish(inner);
        taken
    }

    /// Finishes a taken batch: `requeue` (what could not be delivered, oldest first) goes back to the head of
    /// the queue — on disk when there is a spill directory — and the batch's disk segment is deleted.
    pub fn complete(&self, taken: Taken, requeue: Vec<Entry>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.inflight_spans -= taken.entries.iter().map(|e| u64::from(e.spans)).sum::<u64>();
        match inner.spill.as_mut() {
            Some(spill) => {
                let spans: u64 = requeue.iter().map(|e| u64::from(e.spans)).sum();
                match spill.requeue_front(&requeue) {
                    Ok(()) => {
                        let dropped = spill.enforce_budget().unwrap_or_else(|e| {
                            tracing::warn!(error = %e, "enforcing the spill budget failed");
                            0
                        });
                        self.metrics.drop_spans("buffer_full", dropped);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "requeueing to the spill queue failed; spans dropped");
                        self.metrics.drop_spans("spill_error", spans);
                    }
                }
                if let Some(seq) = taken.segment {
                    spill.ack(seq);
                }
            }
            None => {
                for e in requeue.into_iter().rev() {
                    inner.mem_bytes += e.mem_bytes();
                    inner.mem_spans += u64::from(e.spans);
                    inner.mem.push_front((e, Instant::now()));
                }
                self.shed_memory(inner);
            }
        }
        self.publish(inner);
    }

    /// At shutdown: moves what is left in memory to disk (or counts it dropped with reason `shutdown`).
    pub fn persist(&self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.spill.is_some() {
            self.spill_memory(inner, 0);
        } else {
            self.metrics.drop_spans("shutdown", inner.mem_spans);
            inner.mem.clear();
            inner.mem_bytes = 0;
            inner.mem_spans = 0;
        }
        self.publish(inner);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::entry::testing::{entry, id_of};

    fn metric(m: &Metrics, sample: &str) -> f64 {
        skein_testkit::metric_in(&m.render(), sample)
    }

    #[test]
    fn memory_only_buffer_sheds_non_error_spans_first_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::new(20 * 1100, None, metrics.clone()).expect("buffer");
        for i in 0..200u32 {
            b.push(entry(i as u8, 10, u32::from(i % 20 == 0)));
            assert!(b.lock().mem_bytes <= 20 * 1100);
        }
        let dropped = metric(&metrics, "skein_agent_spans_dropped_total{reason=\"buffer_full\"}");
        let taken = b.take(u64::MAX, usize::MAX);
        let kept: u64 = taken.entries.iter().map(|e| u64::from(e.spans)).sum();
        assert_eq!(dropped as u64 + kept, 2000);
        let errors: u32 = taken.entries.iter().map(|e| e.error_spans).sum();
        assert_eq!(errors, 10, "every error span is kept");
    }

    #[test]
    fn memory_overflows_to_disk_in_order_and_disk_is_sent_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::new(5 * 1100, Some((dir.path(), 1 << 20)), metrics.clone()).expect("buffer");
        for i in 0..20 {
            b.push(entry(i, 1, 0));
        }
        assert!(metric(&metrics, "skein_agent_spilled_bytes_total") > 0.0);
        let mut order = Vec::new();
        loop {
            let t = b.take(3, usize::MAX);
            if t.entries.is_empty() {
                break;
            }
            order.extend(t.entries.iter().map(id_of));
            b.complete(t, Vec::new());
        }
        assert_eq!(order, (0..20).collect::<Vec<u8>>());
        assert_eq!(metric(&metrics, "skein_agent_buffer_bytes{tier=\"disk\"}"), 0.0);
    }

    #[test]
    fn spill_mode_moves_everything_to_disk_and_a_restart_replays_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::new(1 << 20, Some((dir.path(), 1 << 20)), metrics.clone()).expect("buffer");
        b.push(entry(1, 2, 0));
        b.set_spill_mode(true);
        b.push(entry(2, 2, 0));
        assert_eq!(metric(&metrics, "skein_agent_buffer_bytes{tier=\"memory\"}"), 0.0);
        // A batch fails to send and is requeued in front.
        let t = b.take(u64::MAX, usize::MAX);
        let back = t.entries.clone();
        b.complete(t, back);
        drop(b);
        let b = Buffer::new(1 << 20, Some((dir.path(), 1 << 20)), Arc::new(Metrics::new())).expect("reopen");
        let t = b.take(u64::MAX, usize::MAX);
        assert_eq!(t.entries.iter().map(id_of).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn batches_are_due_by_count_bytes_or_age() {
        let b = Buffer::new(1 << 20, None, Arc::new(Metrics::new())).expect("buffer");
        let t = Duration::from_secs(60);
        assert_eq!(b.due_in(10, 1 << 20, t), None);
        b.push(entry(1, 5, 0));
        assert!(b.due_in(10, 1 << 20, t).expect("pending") > Duration::from_secs(50));
        assert_eq!(b.due_in(10, 1000, t), Some(Duration::ZERO), "bytes");
        b.push(entry(2, 5, 0));
        assert_eq!(b.due_in(10, 1 << 20, t), Some(Duration::ZERO), "count");
        assert_eq!(b.due_in(100, 1 << 20, Duration::ZERO), Some(Duration::ZERO), "age");
        assert_eq!(b.take(5, usize::MAX).entries.len(), 1, "span limit");
    }
}
