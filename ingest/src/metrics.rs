//! The ingest pipeline's Prometheus metrics (prefix `skein_`), registered in the process's one registry and served
//! on the admin port at `/metrics`.
//!
//! Everything the pipeline drops, rejects or sheds is counted here.

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

/// Labels `{protocol, reason}` for refused spans.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Receiver: `grpc`, `http` or `zipkin`.
    pub protocol: String,
    /// `inflight_bytes`, `wal_full`, `wal_error`, `shutting_down`.
    pub reason: String,
}

/// Labels `{result}` for cache lookups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Labels `{queue}` for queue depths.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `ingest` (requests waiting for the assembler) or `write` (trace chunks waiting for the writer).
    pub queue: String,
}

/// Labels `{protocol, result}` for remote-sampling requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SamplingLabels {
    /// `http` or `grpc`.
    pub protocol: String,
    /// `ok` or `bad_request`.
    pub result: String,
}

impl SamplingLabels {
    /// Builds the labels.
    pub fn new(protocol: &str, result: &str) -> Self {
        Self { protocol: protocol.to_string(), result: result.to_string() }
    }
}

/// Labels `{policy, decision}` for tail-sampling votes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policy name.
    pub policy: String,
    /// `sampled`, `not_sampled`, `inverted_sampled`, `inverted_not_sampled`, `dropped`.
    pub decision: String,
}

/// Labels `{sampled}`: the final tail-sampling decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SampledLabels {
    /// `true` or `false`.
    pub sampled: String,
}

/// Labels of the span (RED) metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedLabels {
    /// `service.name`.
    pub service_name: String,
    /// Span name.
    pub span_name: String,
    /// `SPAN_KIND_SERVER`, ….
    pub span_kind: String,
    /// `STATUS_CODE_UNSET`, `STATUS_CODE_OK`, `STATUS_CODE_ERROR`.
    pub status_code: String,
}

/// Labels of dependency-edge counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EdgeLabels {
    /// Calling service.
    pub parent: String,
    /// Called service.
    pub child: String,
}

/// The ingest pipeline's metrics (receivers, write-ahead log, assembly, sampling, writer, configuration reloads).
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
    /// Remote-sampling requests, by protocol and result.
    pub sampling_requests: Family<SamplingLabels, Counter>,
    /// Configuration reloads, by result (`applied`, `rejected`).
    pub config_reloads: Family<ReasonLabels, Counter>,
    /// Tail-sampling votes per policy (upstream `count_traces_sampled{policy,decision}`).
    pub sampling_policy_decisions: Family<PolicyLabels, Counter>,
    /// Final tail-sampling decisions (upstream `global_count_traces_sampled{sampled}`).
    pub traces_sampled: Family<SampledLabels, Counter>,
    /// Spans dropped by tail sampling (the trace was not sampled), including late spans of dropped traces.
    pub spans_sampled_out: Counter,
    /// Late spans that followed a cached decision, by decision.
    pub late_spans: Family<SampledLabels, Counter>,
    /// Spans of whole requests refused (overload, full write-ahead log, shutdown), by reason.
    pub spans_refused: Family<RefusedLabels, Counter>,
    /// Spans accepted (validated and logged), by receiver.
    pub spans_accepted: Family<ProtocolLabels, Counter>,
    /// Items waiting in the pipeline's bounded queues.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Bytes of export requests being processed (decoded, not yet in the write-ahead log and handed on).
    pub inflight_bytes: Gauge,
    /// Bytes in write-ahead-log segments on disk.
    pub wal_bytes: Gauge,
    /// Write-ahead-log segments on disk.
    pub wal_segments: Gauge,
    /// Records appended to the write-ahead log.
    pub wal_records: Counter,
    /// Write-ahead-log fsync latency, seconds (one per group commit).
    pub wal_fsync_seconds: Histogram,
    /// Spans replayed from the write-ahead log at start.
    pub wal_replayed_spans: Counter,
    /// Write-ahead-log records skipped at replay because they were torn or corrupt (never acknowledged).
    pub wal_corrupt_records: Counter,
    /// Resources and scopes of OTLP/gRPC requests by `{result}`: `hit` (taken decoded from the process cache) or
    /// `miss` (decoded).
    pub process_cache_lookups: Family<ResultLabels, Counter>,
    /// Bytes held by the process cache (bounded by `PROCESS_CACHE_BYTES`).
    pub process_cache_bytes: Gauge,
    /// Spans by service, operation, kind and status (RED: rate and errors), counted before tail sampling.
    pub span_calls: Family<RedLabels, Counter>,
    /// Span durations by service, operation, kind and status, seconds.
    pub span_duration_seconds: Family<RedLabels, Histogram>,
    /// RED series not created because the series limit was reached (their spans are not in the RED metrics).
    pub red_series_overflow: Counter,
    /// Service-dependency calls of kept traces, weighted by the rate the trace was kept at.
    pub dependency_calls: Family<EdgeLabels, Counter<f64>>,
}

impl Metrics {
    /// Creates every metric and registers it in `registry` (the process's one registry, prefix `skein`).
    pub fn register(registry: &mut Registry) -> Self {
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
            live_traces: Gauge::default(),
            pending_chunks: Gauge::default(),
            store_write_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sampling_requests: Family::default(),
            config_reloads: Family::default(),
            sampling_policy_decisions: Family::default(),
            traces_sampled: Family::default(),
            spans_sampled_out: Counter::default(),
            late_spans: Family::default(),
            spans_refused: Family::default(),
            spans_accepted: Family::default(),
            queue_depth: Family::default(),
            inflight_bytes: Gauge::default(),
            wal_bytes: Gauge::default(),
            wal_segments: Gauge::default(),
            wal_records: Counter::default(),
            wal_fsync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            wal_replayed_spans: Counter::default(),
            wal_corrupt_records: Counter::default(),
            process_cache_lookups: Family::default(),
            process_cache_bytes: Gauge::default(),
            span_calls: Family::default(),
            span_duration_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.5, 14))),
            red_series_overflow: Counter::default(),
            dependency_calls: Family::default(),
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
        registry.register("live_traces", "Traces held in the assembler", m.live_traces.clone());
        registry.register("pending_chunks", "Trace chunks waiting to be written", m.pending_chunks.clone());
        registry.register_with_unit(
            "store_write",
            "Storage write latency",
            prometheus_client::registry::Unit::Seconds,
            m.store_write_seconds.clone(),
        );
        registry.register(
            "sampling_requests",
            "Remote-sampling requests, by protocol and result",
            m.sampling_requests.clone(),
        );
        registry.register("config_reloads", "Configuration reloads, by result", m.config_reloads.clone());
        registry.register(
            "sampling_policy_decisions",
            "Tail-sampling votes, by policy and decision",
            m.sampling_policy_decisions.clone(),
        );
        registry.register("traces_sampled", "Final tail-sampling decisions", m.traces_sampled.clone());
        registry.register("spans_sampled_out", "Spans dropped by tail sampling", m.spans_sampled_out.clone());
        registry.register("late_spans", "Late spans that followed a cached decision", m.late_spans.clone());
        registry.register(
            "spans_refused",
            "Spans of refused requests, by receiver and reason",
            m.spans_refused.clone(),
        );
        registry.register("spans_accepted", "Spans accepted, by receiver", m.spans_accepted.clone());
        registry.register("queue_depth", "Items waiting in the pipeline's bounded queues", m.queue_depth.clone());
        registry.register_with_unit(
            "inflight",
            "Export-request bytes being processed",
            prometheus_client::registry::Unit::Bytes,
            m.inflight_bytes.clone(),
        );
        registry.register_with_unit(
            "wal",
            "Bytes in write-ahead-log segments",
            prometheus_client::registry::Unit::Bytes,
            m.wal_bytes.clone(),
        );
        registry.register("wal_segments", "Write-ahead-log segments on disk", m.wal_segments.clone());
        registry.register("wal_records", "Records appended to the write-ahead log", m.wal_records.clone());
        registry.register_with_unit(
            "wal_fsync",
            "Write-ahead-log fsync latency",
            prometheus_client::registry::Unit::Seconds,
            m.wal_fsync_seconds.clone(),
        );
        registry.register(
            "wal_replayed_spans",
            "Spans replayed from the write-ahead log",
            m.wal_replayed_spans.clone(),
        );
        registry.register(
            "wal_corrupt_records",
            "Torn or corrupt write-ahead-log records skipped at replay",
            m.wal_corrupt_records.clone(),
        );
        registry.register(
            "process_cache_lookups",
            "Resources and scopes of OTLP/gRPC requests found decoded in the process cache (hit) or decoded (miss)",
            m.process_cache_lookups.clone(),
        );
        registry.register("process_cache_bytes", "Bytes held by the process cache", m.process_cache_bytes.clone());
        registry.register("span_calls", "Spans by service, operation, kind and status", m.span_calls.clone());
        registry.register_with_unit(
            "span_duration",
            "Span durations by service, operation, kind and status",
            prometheus_client::registry::Unit::Seconds,
            m.span_duration_seconds.clone(),
        );
        registry.register(
            "red_series_overflow",
            "Spans left out of the RED metrics because the series limit was reached",
            m.red_series_overflow.clone(),
        );
        registry.register(
            "dependency_calls",
            "Service-dependency calls of kept traces, weighted by their sampling rate",
            m.dependency_calls.clone(),
        );
        m
    }

    /// Counts one rejection reason.
    pub fn reject_request(&self, reason: &str) {
        self.requests_rejected.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }
}

/// Unregistered metrics: they count, but nothing exports them (tests and benchmarks that do not scrape).
impl Default for Metrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

/// Metrics registered in a registry of their own, prefix `skein`, for tests that read the exported text.
#[cfg(test)]
pub(crate) fn registered() -> (std::sync::Arc<Metrics>, Registry) {
    let mut registry = Registry::with_prefix("skein");
    let metrics = std::sync::Arc::new(Metrics::register(&mut registry));
    (metrics, registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics() {
        let mut registry = Registry::with_prefix("skein");
        let m = Metrics::register(&mut registry);
        m.spans_rejected.get_or_create(&ReasonLabels { reason: "invalid_trace_id".into() }).inc_by(3);
        m.reject_request("malformed");
        let text = skein_testkit::render(&registry);
        assert!(text.contains(r#"skein_spans_rejected_total{reason="invalid_trace_id"} 3"#), "{text}");
        assert!(text.contains(r#"skein_requests_rejected_total{reason="malformed"} 1"#), "{text}");
    }

    /// Every field of [`Metrics`] is registered, so it is exported (a field only counted in memory is invisible).
    #[test]
    fn every_metric_field_is_exported() {
        let source = include_str!("metrics.rs");
        let (fields, missing) = skein_testkit::unregistered_fields(source, "Metrics");
        assert!(fields > 25, "{fields} fields");
        assert!(missing.is_empty(), "not registered: {missing:?}");
        let mut registry = Registry::with_prefix("skein");
        Metrics::register(&mut registry);
        assert!(skein_testkit::render(&registry).contains("# HELP skein_wal_fsync_seconds"));
    }
}
