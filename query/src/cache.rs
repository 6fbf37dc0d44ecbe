//! The query service's hot-trace cache: a [`TraceStore`] wrapper that keeps recently read, settled traces in
//! memory, so the trace view, its analysis and a skew-adjusted reload cost one storage read instead of three.
//!
//! - Bounded by spans (`--query-cache-spans`), not entries: quick_cache's S3-FIFO with a span-count weighter, so
//!   one 100,000-span trace cannot hide behind an entry count.
//! - Only settled traces are cached: the newest span ended at least [`SETTLED_NANOS`] ago. A trace still
//!   receiving spans is always read from the store.
//! - Entries expire after [`TTL`]: a late chunk of a settled trace (a slow async job, a replayed agent spill) is
//!   visible after at most that long.
//! - Hits and misses are counted in `skein_query_cache_requests_total{result}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{CacheLabels, QueryMetrics};
use skein_model::{Span, SpanKind, TraceId};
use skein_storage::{DependencyLink, FoundTraces, Operation, StoreResult, TraceQuery, TraceStore, WriteBatch};

/// How long a cached trace is served before it is read again.
pub const TTL: Duration = Duration::from_secs(30);
/// A trace is cached only when its newest span ended at least this long ago, ns.
pub const SETTLED_NANOS: u64 = 60_000_000_000;

#[derive(Clone)]
struct SpanWeight;

impl quick_cache::Weighter<TraceId, (Instant, Arc<Vec<Span>>)> for SpanWeight {
    fn weight(&self, _: &TraceId, value: &(Instant, Arc<Vec<Span>>)) -> u64 {
        value.1.len().max(1) as u64
    }
}

/// A [`TraceStore`] whose `get_trace` is served from memory for hot, settled traces; everything else passes
/// through.
pub struct CachedStore {
    inner: Arc<dyn TraceStore>,
    cache: quick_cache::sync::Cache<TraceId, (Instant, Arc<Vec<Span>>), SpanWeight>,
    metrics: Arc<QueryMetrics>,
    now_unix_nanos: fn() -> u64,
}

impl CachedStore {
    /// Wraps `inner` with room for `max_spans` cached spans.
    pub fn new(inner: Arc<dyn TraceStore>, max_spans: u64, metrics: Arc<QueryMetrics>) -> Self {
        Self::with_clock(inner, max_spans, metrics, skein_model::now_nanos)
    }

    fn with_clock(inner: Arc<dyn TraceStore>, max_spans: u64, metrics: Arc<QueryMetrics>, now: fn() -> u64) -> Self {
        // An estimate of items for quick_cache's sizing: traces of about 50 spans.
        let items = (max_spans / 50).max(16) as usize;
        Self {
            inner,
            cache: quick_cache::sync::Cache::with_weighter(items, max_spans.max(1), SpanWeight),
            metrics,
            now_unix_nanos: now,
        }
    }
}

#[async_trait::async_trait]
impl TraceStore for CachedStore {
    fn partition_secs(&self) -> u64 {
        self.inner.partition_secs()
    }

    fn layout(&self) -> skein_storage::StoreLayout {
        self.inner.layout()
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> StoreResult<()> {
        self.inner.write(batch).await
    }

    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        if let Some((at, spans)) = self.cache.get(&trace_id)
            && at.elapsed() < TTL
        {
            self.metrics.query_cache_requests.get_or_create(&CacheLabels { result: "hit".into() }).inc();
            return Ok(Some(spans.as_ref().clone()));
        }
        self.metrics.query_cache_requests.get_or_create(&CacheLabels { result: "miss".into() }).inc();
        let spans = self.inner.get_trace(trace_id).await?;
        if let Some(spans) = &spans {
            let newest = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);
            if (self.now_unix_nanos)().saturating_sub(newest) >= SETTLED_NANOS {
                self.cache.insert(trace_id, (Instant::now(), Arc::new(spans.clone())));
            } else {
                self.cache.remove(&trace_id);
            }
        }
        Ok(spans)
    }

    async fn find_traces(&self, query: TraceQuery) -> StoreResult<FoundTraces> {
        self.inner.find_traces(query).await
    }

    async fn find_trace_summaries(&self, query: TraceQuery) -> StoreResult<skein_storage::FoundSummaries> {
        self.inner.find_trace_summaries(query).await
    }

    async fn services(&self) -> StoreResult<Vec<String>> {
        self.inner.services().await
    }

    async fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        self.inner.operations(service, kind).await
    }

    async fn dependencies(&self, end_unix_nanos: u64, lookback_nanos: u64) -> StoreResult<Vec<DependencyLink>> {
        self.inner.dependencies(end_unix_nanos, lookback_nanos).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_model::{SpanId, service_resource};
    use skein_storage::embedded::{EmbeddedConfig, EmbeddedStore};

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn now() -> u64 {
        NOW
    }

    fn trace(id: u8, spans: u64, ended_ago_nanos: u64) -> Vec<Span> {
        (0..spans)
            .map(|i| {
                let mut s =
                    Span::minimal(TraceId([id; 16]), SpanId((i + 1).to_be_bytes()), "op", service_resource("a"));
                s.end_unix_nanos = NOW - ended_ago_nanos;
                s.start_unix_nanos = s.end_unix_nanos - 1000;
                s
            })
            .collect()
    }

    async fn store_with(traces: &[Vec<Span>]) -> (tempfile::TempDir, Arc<dyn TraceStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open");
        let dicts = skein_storage::Dictionaries::new(store.partition_secs());
        let inputs =
            traces.iter().map(|t| (t.as_slice(), skein_model::dependencies::edges(t, &Default::default()), false));
        let batch = skein_storage::prepare_batch(inputs, &dicts, store.layout()).expect("prepare");
        store.write(Arc::new(batch)).await.expect("write");
        (dir, Arc::new(store))
    }

    fn counted(m: &QueryMetrics, result: &str) -> u64 {
        m.query_cache_requests.get_or_create(&CacheLabels { result: result.into() }).get()
    }

    #[tokio::test]
    async fn settled_traces_are_served_from_memory_within_the_span_budget() {
        let settled = trace(1, 10, 2 * SETTLED_NANOS);
        let fresh = trace(2, 10, 1_000);
        let big = trace(3, 500, 2 * SETTLED_NANOS);
        let (_dir, inner) = store_with(&[settled.clone(), fresh.clone(), big.clone()]).await;
        let metrics = Arc::new(QueryMetrics::default());
        let cached = CachedStore::with_clock(inner, 100, metrics.clone(), now);

        let first = cached.get_trace(TraceId([1; 16])).await.expect("read").expect("found");
        let second = cached.get_trace(TraceId([1; 16])).await.expect("read").expect("found");
        assert_eq!(first.len(), 10);
        assert_eq!(first, second, "the cached copy is the stored trace");
        assert_eq!((counted(&metrics, "miss"), counted(&metrics, "hit")), (1, 1));

        // A trace still receiving spans is never cached; one over the whole budget is not kept either.
        for id in [2, 2, 3, 3] {
            assert!(cached.get_trace(TraceId([id; 16])).await.expect("read").is_some());
        }
        assert_eq!((counted(&metrics, "miss"), counted(&metrics, "hit")), (5, 1));
        assert!(cached.get_trace(TraceId([9; 16])).await.expect("read").is_none());
    }
}
