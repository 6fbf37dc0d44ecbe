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
        Self { reconciles, reconcile_errors, reconcile_duration, leader, registry }
    }
}

impl Metrics {
    /// Counts a failure with `cause`.
    pub fn error(&self, cause: &str) {
        self.reconcile_errors.get_or_create(&ErrorLabels { error: cause.to_string() }).inc();
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
