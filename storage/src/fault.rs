//! Fault injection for the chaos tests (feature `fault-injection`, off in release builds): stores that misbehave
//! on purpose.

use std::path::PathBuf;
use std::sync::Arc;

use skein_model::{Span, SpanKind, TraceId};

use crate::{DependencyLink, FoundTraces, Operation, StoreResult, TraceQuery, TraceStore, WriteBatch};

/// A store whose writes wait while a file exists: the chaos tests' stalled store (a disk or cluster that stops
/// answering). Reads pass through; a write starts once the file is gone, checked every 50 ms.
pub struct StallingStore {
    inner: Arc<dyn TraceStore>,
    stall_while: PathBuf,
}

impl StallingStore {
    /// Wraps `inner`; writes stall while `stall_while` exists.
    pub fn new(inner: Arc<dyn TraceStore>, stall_while: PathBuf) -> Self {
        Self { inner, stall_while }
    }
}

#[async_trait::async_trait]
impl TraceStore for StallingStore {
    fn partition_secs(&self) -> u64 {
        self.inner.partition_secs()
    }
    fn layout(&self) -> crate::StoreLayout {
        self.inner.layout()
    }
    async fn write(&self, batch: Arc<WriteBatch>) -> StoreResult<()> {
        while tokio::fs::try_exists(&self.stall_while).await.unwrap_or(false) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.inner.write(batch).await
    }
    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        self.inner.get_trace(trace_id).await
    }
    async fn find_traces(&self, query: TraceQuery) -> StoreResult<FoundTraces> {
        self.inner.find_traces(query).await
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
