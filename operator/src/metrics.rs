//! The operator's Prometheus metrics (prefix `skein_operator_`), served on `/metrics` of the health port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `result` label: `success` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Outcome.
    pub result: &'static str,
}

/// `error` label: [`crate::Error::metric_label`] or a condition reason such as `ScyllaUnreachable`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed.
    pub error: String,
}

/// Admission webhook labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `mutate-pods` or `validate-tracingpipelines`.
    pub webhook: &'static str,
    /// `injected`, `skipped`, `already_injected`, `not_requested`, `allowed`, `denied`, `bad_request`, `error`.
    pub outcome: &'static str,
}

/// Every metric of the operator.
#[derive(Debug)]
pub struct Metrics {
    /// `skein_operator_reconciles_total{result}`.
    pub reconciles: Family<ResultLabels, Counter>,
    /// `skein_operator_reconcile_errors_total{error}`: failed reconciles and failed storage steps.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// `skein_operator_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `skein_operator_leader`: 1 while this replica holds the leader Lease.
    pub leader: Gauge,
    /// `skein_operator_admissions_total{webhook, outcome}`.
    pub admissions: Family<AdmissionLabels, Counter>,
    /// `skein_operator_admission_duration_seconds`: time to answer an admission request (TLS excluded).
    pub admission_duration: Histogram,
    /// `skein_operator_events_dropped_total`: Warning Events not published (queue full or API error).
    pub events_dropped: Counter,
    /// `skein_operator_agent_rollouts_total`: workloads restarted onto a new agent configuration.
    pub agent_rollouts: Counter,
    /// `skein_operator_webhook_certificate_renewals_total`: serving certificates issued.
    pub certificate_renewals: Counter,
    /// `skein_operator_webhook_certificate_expiry_timestamp_seconds`: when the served certificate expires.
    pub certificate_expiry: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("skein_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let reconcile_duration = Histogram::new(buckets);
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register("reconcile_errors", "Failed reconciles and storage steps by cause", reconcile_errors.clone());
        registry.register_with_unit(
            "reconcile_duration",
            "Time per reconcile",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register("admissions", "Admission requests by webhook and outcome", admissions.clone());
        let admission_duration =
            Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5]);
        registry.register_with_unit(
            "admission_duration",
            "Time to answer an admission request",
            Unit::Seconds,
            admission_duration.clone(),
        );
        let events_dropped = Counter::default();
        registry.register("events_dropped", "Warning Events not published", events_dropped.clone());
        let agent_rollouts = Counter::default();
        registry.register(
            "agent_rollouts",
            "Workloads restarted onto a new agent configuration",
            agent_rollouts.clone(),
        );
        let certificate_renewals = Counter::default();
        registry.register(
            "webhook_certificate_renewals",
            "Webhook serving certificates issued",
            certificate_renewals.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "webhook_certificate_expiry_timestamp_seconds",
            "Expiry of the served webhook certificate, Unix seconds",
            certificate_expiry.clone(),
        );
        Self {
            reconciles,
            reconcile_errors,
            reconcile_duration,
            leader,
            admissions,
            admission_duration,
            events_dropped,
            agent_rollouts,
            certificate_renewals,
            certificate_expiry,
            registry,
        }
    }
}

impl Metrics {
    /// Counts a failure with `cause`.
    pub fn error(&self, cause: &str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { error: cause.to_string() }).inc();
    }

    /// Counts an admission request.
    pub fn admission(&self, webhook: &'static str, outcome: &'static str) {
        self.admissions.get_or_create(&AdmissionLabels { webhook, outcome }).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
