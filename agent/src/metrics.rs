//! The agent's Prometheus metrics (text format, prefix `skein_agent_`), served with `/healthz` on the admin port
//! (14271). Everything dropped, rejected or shed is counted here, by reason.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why.
    pub reason: String,
}

/// Labels `{protocol}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Protocol {
    /// `grpc` or `http`.
    pub protocol: String,
}

/// Labels `{tier}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tier {
    /// `memory` or `disk`.
    pub tier: String,
}

/// Labels `{endpoint}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Endpoint {
    /// Collector address `ip:port`.
    pub endpoint: String,
}

/// Labels `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome.
    pub result: String,
}

/// All agent metrics.
pub struct Metrics {
    registry: Registry,
    /// Spans accepted from the app, by receiver.
    pub spans_received: Family<Protocol, Counter>,
    /// Spans removed by head sampling.
    pub spans_sampled_out: Counter,
    /// Spans acknowledged by a collector.
    pub spans_forwarded: Counter,
    /// Spans dropped, by reason: `buffer_full`, `rejected_by_collector`, `spill_corrupt`, `shutdown`.
    pub spans_dropped: Family<Reason, Counter>,
    /// App requests refused, by reason: `malformed`, `unsupported_media_type`.
    pub requests_rejected: Family<Reason, Counter>,
    /// Bytes written to the spill directory.
    pub spilled_bytes: Counter,
    /// Spill records found torn or corrupt at start-up and cut off (their spans are lost).
    pub spill_corrupt_records: Counter,
    /// Bytes buffered, by tier (`memory`, `disk`).
    pub buffer_bytes: Family<Tier, Gauge>,
    /// Spans buffered, by tier (`memory`, `disk`; disk includes batches being sent from it).
    pub buffer_spans: Family<Tier, Gauge>,
    /// Spans taken from the buffer and not yet acknowledged or requeued.
    pub inflight_spans: Gauge,
    /// 1 when the endpoint's circuit is closed (or half-open), 0 when open.
    pub endpoint_healthy: Family<Endpoint, Gauge>,
    /// Known collector endpoints.
    pub endpoints: Gauge,
    /// Export retries, by reason (`unavailable`, `resource_exhausted`, `deadline_exceeded`, …).
    pub retries: Family<Reason, Counter>,
    /// Export requests sent to collectors, by result (`ok`, `retryable`, `rejected`).
    pub export_requests: Family<ResultLabel, Counter>,
    /// Spans moved to another collector because their first choice was unhealthy.
    pub spans_rerouted: Counter,
    /// Collector connections that could not be set up (TLS files missing or unreadable, bad address); retried.
    pub endpoint_setup_failures: Counter,
    /// Attributes masked, hashed or dropped by redaction rules.
    pub attributes_redacted: Counter,
    /// Remote-sampling proxy requests, by result (`ok`, `bad_request`, `unavailable`), and background refreshes
    /// of a cached strategy that failed (`refresh_failed`: the last answer keeps being served).
    pub sampling_requests: Family<ResultLabel, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("skein_agent");
        let m = Self {
            spans_received: Family::default(),
            spans_sampled_out: Counter::default(),
            spans_forwarded: Counter::default(),
            spans_dropped: Family::default(),
            requests_rejected: Family::default(),
            spilled_bytes: Counter::default(),
            spill_corrupt_records: Counter::default(),
            buffer_bytes: Family::default(),
            buffer_spans: Family::default(),
            inflight_spans: Gauge::default(),
            endpoint_healthy: Family::default(),
            endpoints: Gauge::default(),
            retries: Family::default(),
            export_requests: Family::default(),
            spans_rerouted: Counter::default(),
            endpoint_setup_failures: Counter::default(),
            attributes_redacted: Counter::default(),
            sampling_requests: Family::default(),
            registry: Registry::default(),
        };
        registry.register("spans_received", "Spans accepted from the app", m.spans_received.clone());
        registry.register("spans_sampled_out", "Spans removed by head sampling", m.spans_sampled_out.clone());
        registry.register("spans_forwarded", "Spans acknowledged by a collector", m.spans_forwarded.clone());
        registry.register("spans_dropped", "Spans dropped, by reason", m.spans_dropped.clone());
        registry.register("requests_rejected", "App export requests refused, by reason", m.requests_rejected.clone());
        registry.register("spilled_bytes", "Bytes written to the spill directory", m.spilled_bytes.clone());
        registry.register(
            "spill_corrupt_records",
            "Torn or corrupt spill records cut off at start-up",
            m.spill_corrupt_records.clone(),
        );
        registry.register("buffer_bytes", "Bytes buffered, by tier", m.buffer_bytes.clone());
        registry.register("buffer_spans", "Spans buffered, by tier", m.buffer_spans.clone());
        registry.register("inflight_spans", "Spans being sent", m.inflight_spans.clone());
        registry.register("endpoint_healthy", "1 if the collector endpoint is usable", m.endpoint_healthy.clone());
        registry.register("endpoints", "Known collector endpoints", m.endpoints.clone());
        registry.register("retries", "Export retries, by reason", m.retries.clone());
        registry.register("export_requests", "Export requests to collectors, by result", m.export_requests.clone());
        registry.register("spans_rerouted", "Spans sent to their next-choice collector", m.spans_rerouted.clone());
        registry.register(
            "endpoint_setup_failures",
            "Collector connections that could not be set up (retried)",
            m.endpoint_setup_failures.clone(),
        );
        registry.register("attributes_redacted", "Attributes redacted", m.attributes_redacted.clone());
        registry.register("sampling_requests", "Remote-sampling proxy requests", m.sampling_requests.clone());
        Self { registry, ..m }
    }

    /// Counts `n` dropped spans for `reason`.
    pub fn drop_spans(&self, reason: &str, n: u64) {
        if n > 0 {
            self.spans_dropped.get_or_create(&Reason { reason: reason.to_string() }).inc_by(n);
        }
    }

    /// Counts one refused app request.
    pub fn reject_request(&self, reason: &str) {
        self.requests_rejected.get_or_create(&Reason { reason: reason.to_string() }).inc();
    }

    /// Sets the buffer gauges of one tier.
    pub fn set_buffer(&self, tier: &str, bytes: u64, spans: u64) {
        let t = Tier { tier: tier.to_string() };
        self.buffer_bytes.get_or_create(&t).set(bytes as i64);
        self.buffer_spans.get_or_create(&t).set(spans as i64);
    }

    /// Counts an export request result.
    pub fn export_result(&self, result: &str) {
        self.export_requests.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    /// Counts a remote-sampling proxy request.
    pub fn sampling_result(&self, result: &str) {
        self.sampling_requests.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
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
    fn renders_prefixed_metrics_with_reasons() {
        let m = Metrics::new();
        m.drop_spans("buffer_full", 3);
        m.drop_spans("buffer_full", 0);
        m.set_buffer("disk", 10, 2);
        let text = m.render();
        assert!(text.contains("skein_agent_spans_dropped_total{reason=\"buffer_full\"} 3"), "{text}");
        assert!(text.contains("skein_agent_buffer_bytes{tier=\"disk\"} 10"), "{text}");
    }
}
