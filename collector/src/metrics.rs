//! Prometheus metrics (text format, prefix `skein_`), served on the admin port at `/metrics`.
//!
//! Everything dropped, rejected or shed is counted here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming the receiving protocol.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `grpc` or `http`.
    pub protocol: String,
}

/// Label set naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: String,
}

/// Labels `{tier}`: `standard` or `important` retention.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Retention tier.
    pub tier: String,
}

/// All collector metrics.
pub struct Metrics {
    /// Spans received, by protocol (before validation).
    pub spans_received: Family<ProtocolLabels, Counter>,
    /// Spans rejected by validation, by reason.
    pub spans_rejected: Family<ReasonLabels, Counter>,
    /// Whole requests refused (malformed body, unsupported encoding, overload), by reason.
    pub requests_rejected: Family<ReasonLabels, Counter>,
    /// Exact duplicate spans dropped (stored once).
    pub spans_duplicate: Counter,
    /// Traces (chunks) flushed from the assembler before going idle, by reason (`span_cap`, `live_traces_full`).
    pub traces_flushed_early: Family<ReasonLabels, Counter>,
    /// Trace chunks written to storage.
    pub chunks_written: Counter,
    /// Spans written to storage.
    pub spans_written: Counter,
    /// Spans lost because storage failed after retries.
    pub spans_write_failed: Counter,
    /// Storage write failures (each retried).
    pub store_write_errors: Counter,
    /// Traces held in the assembler.
    pub live_traces: Gauge,
    /// Trace chunks handed to the writer and not yet written (or given up on).
    pub pending_chunks: Gauge,
    /// Storage write latency, seconds.
    pub store_write_seconds: Histogram,
    /// Bytes the embedded store occupies on disk.
    pub storage_disk_bytes: Gauge,
    /// Open storage partitions, by retention tier.
    pub storage_partitions: Family<TierLabels, Gauge>,
    /// Partitions deleted by retention, by tier.
    pub partitions_expired: Family<TierLabels, Counter>,
    /// Stored trace blocks that failed to decode when read (the trace answers an error).
    pub blocks_corrupt: Counter,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skein");
        let m = Metrics {
            spans_received: Family::default(),
            spans_rejected: Family::default(),
            requests_rejected: Family::default(),
            spans_duplicate: Counter::default(),
            traces_flushed_early: Family::default(),
            chunks_written: Counter::default(),
            spans_written: Counter::default(),
            spans_write_failed: Counter::default(),
            store_write_errors: Counter::default(),
            storage_disk_bytes: Gauge::default(),
            storage_partitions: Family::default(),
            partitions_expired: Family::default(),
            blocks_corrupt: Counter::default(),
            live_traces: Gauge::default(),
            pending_chunks: Gauge::default(),
            store_write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register("spans_received", "Spans received, by protocol", m.spans_received.clone());
        registry.register("spans_rejected", "Spans rejected by validation, by reason", m.spans_rejected.clone());
        registry.register("requests_rejected", "Export requests refused, by reason", m.requests_rejected.clone());
        registry.register("spans_duplicate", "Exact duplicate spans dropped", m.spans_duplicate.clone());
        registry.register(
            "traces_flushed_early",
            "Trace chunks flushed before going idle, by reason",
            m.traces_flushed_early.clone(),
        );
        registry.register("chunks_written", "Trace chunks written to storage", m.chunks_written.clone());
        registry.register("spans_written", "Spans written to storage", m.spans_written.clone());
        registry.register(
            "spans_write_failed",
            "Spans lost because storage kept failing",
            m.spans_write_failed.clone(),
        );
        registry.register("store_write_errors", "Storage write failures", m.store_write_errors.clone());
        registry.register(
            "storage_disk_bytes",
            "Bytes the embedded store occupies on disk",
            m.storage_disk_bytes.clone(),
        );
        registry.register("storage_partitions", "Open storage partitions, by tier", m.storage_partitions.clone());
        registry.register(
            "partitions_expired",
            "Partitions deleted by retention, by tier",
            m.partitions_expired.clone(),
        );
        registry.register("blocks_corrupt", "Stored trace blocks that failed to decode", m.blocks_corrupt.clone());
        registry.register("live_traces", "Traces held in the assembler", m.live_traces.clone());
        registry.register("pending_chunks", "Trace chunks waiting to be written", m.pending_chunks.clone());
        registry.register_with_unit(
            "store_write",
            "Storage write latency",
            prometheus_client::registry::Unit::Seconds,
            m.store_write_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one rejection reason.
    pub fn reject_request(&self, reason: &str) {
        self.requests_rejected.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Renders the OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics() {
        let m = Metrics::new();
        m.spans_rejected.get_or_create(&ReasonLabels { reason: "invalid_trace_id".into() }).inc_by(3);
        m.reject_request("malformed");
        let text = m.render();
        assert!(text.contains(r#"skein_spans_rejected_total{reason="invalid_trace_id"} 3"#), "{text}");
        assert!(text.contains(r#"skein_requests_rejected_total{reason="malformed"} 1"#), "{text}");
    }
}
