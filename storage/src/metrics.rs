//! The storage metrics (prefix `skein_`), registered in the process's one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels `{tier}`: `standard` or `important` retention.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Retention tier.
    pub tier: String,
}

/// The storage metrics (the embedded store's retention and disk use).
pub struct StorageMetrics {
    /// Bytes the embedded store occupies on disk.
    pub storage_disk_bytes: Gauge,
    /// Open storage partitions, by retention tier.
    pub storage_partitions: Family<TierLabels, Gauge>,
    /// Partitions deleted by retention, by tier.
    pub partitions_expired: Family<TierLabels, Counter>,
}

impl StorageMetrics {
    /// Creates every metric and registers it in `registry` (the process's one registry, prefix `skein`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = StorageMetrics {
            storage_disk_bytes: Gauge::default(),
            storage_partitions: Family::default(),
            partitions_expired: Family::default(),
        };
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
        m
    }
}

/// Unregistered metrics: they count, but nothing exports them (tests).
impl Default for StorageMetrics {
    fn default() -> Self {
        Self::register(&mut Registry::default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_field_is_exported() {
        let (fields, missing) = skein_testkit::unregistered_fields(include_str!("metrics.rs"), "StorageMetrics");
        assert!(fields >= 3 && missing.is_empty(), "{fields} fields, not registered: {missing:?}");
    }
}
