//! The query service's Prometheus metrics (prefix `skein_`), registered in the process's one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of the query cache's requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `hit` or `miss`.
    pub result: String,
}

/// Label set naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// The query service's metrics.
pub struct QueryMetrics {
    /// Stored trace blocks that failed to decode when read (the trace answers an error).
    pub blocks_corrupt: Counter,
    /// gRPC query streams stopped because the client went away.
    pub query_grpc_streams_cancelled: Counter,
    /// `TracesData` chunks sent on gRPC query streams.
    pub query_grpc_chunks_sent: Counter,
    /// Trace reads of the query service's hot-trace cache, by result.
    pub query_cache_requests: Family<CacheLabels, Counter>,
    /// Queries answered 504 / DEADLINE_EXCEEDED after `--query-timeout`.
    pub query_timeouts: Counter,
    /// Query requests refused by `--query-auth-token-file`, by reason (`missing`, `invalid`).
    pub query_auth_failures: Family<ReasonLabels, Counter>,
}

impl QueryMetrics {
    /// Creates every metric and registers it in `registry` (the process's one registry, prefix `skein`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = QueryMetrics {
            blocks_corrupt: Counter::default(),
            query_grpc_streams_cancelled: Counter::default(),
            query_grpc_chunks_sent: Counter::default(),
            query_cache_requests: Family::default(),
            query_timeouts: Counter::default(),
            query_auth_failures: Family::default(),
        };
        registry.register("blocks_corrupt", "Stored trace blocks that failed to decode", m.blocks_corrupt.clone());
        registry.register(
            "query_grpc_streams_cancelled",
            "gRPC query streams stopped because the client went away",
            m.query_grpc_streams_cancelled.clone(),
        );
        registry.register(
            "query_grpc_chunks_sent",
            "TracesData chunks sent on gRPC query streams",
            m.query_grpc_chunks_sent.clone(),
        );
        registry.register(
            "query_cache_requests",
            "Trace reads of the query service's hot-trace cache, by result (hit, miss)",
            m.query_cache_requests.clone(),
        );
        registry.register(
            "query_timeouts",
            "Queries stopped after --query-timeout (HTTP 504, gRPC DEADLINE_EXCEEDED)",
            m.query_timeouts.clone(),
        );
        registry.register(
            "query_auth_failures",
            "Query requests refused for a missing or invalid bearer token, by reason",
            m.query_auth_failures.clone(),
        );
        m
    }
}

/// Unregistered metrics: they count, but nothing exports them (tests).
impl Default for QueryMetrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_field_is_exported() {
        let (fields, missing) = skein_testkit::unregistered_fields(include_str!("metrics.rs"), "QueryMetrics");
        assert!(fields >= 6 && missing.is_empty(), "{fields} fields, not registered: {missing:?}");
    }
}
