//! The collector's file configuration (`--config FILE`, YAML, unknown fields rejected), shared with the operator,
//! which embeds these types in the `TracingPipeline` CRD (they derive `JsonSchema`).
//!
//! ```yaml
//! tail_sampling:            # the OpenTelemetry Collector's processors.tail_sampling block, verbatim
//!   decision_wait: 10s
//!   policies:
//!     - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
//!     - {name: slow, type: latency, latency: {threshold_ms: 500}}
//!     - {name: ten-percent, type: probabilistic, probabilistic: {sampling_percentage: 10}}
//! sampling_strategies:      # Jaeger's strategies file, served on the remote-sampling API
//!   default_strategy: {type: probabilistic, param: 0.1}
//!   service_strategies:
//!     - {service: checkout, type: ratelimiting, param: 50}
//! ```
//!
//! The file is re-read when it changes ([`watch`]); a file that does not parse or validate is rejected with a
//! logged reason and the previous configuration stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::{Metrics, ReasonLabels};
use crate::sampling::remote::{SamplingStrategies, StrategyTable};
use crate::sampling::tail::{TailSampler, TailSamplingConfig};

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// Tail sampling; absent means every trace is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_sampling: Option<TailSamplingConfig>,
    /// Head-sampling strategies for the remote-sampling API; absent means Jaeger's default (probabilistic 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_strategies: Option<SamplingStrategies>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not match the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde_yaml's message, with line and column.
        message: String,
    },
    /// A tail-sampling policy is invalid.
    #[error("{0}")]
    Policy(#[from] crate::sampling::tail::PolicyError),
    /// The strategies are invalid.
    #[error("{0}")]
    Strategy(#[from] crate::sampling::remote::StrategyError),
}

/// A configuration checked to be usable, with its compiled parts.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The configuration as written.
    pub config: CollectorConfig,
    /// Resolved head-sampling strategies.
    pub strategies: StrategyTable,
}

impl CollectorConfig {
    /// Parses YAML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] with the YAML location of the problem.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Validates every part (compiles the policies, resolves the strategies).
    ///
    /// # Errors
    /// [`ConfigError::Policy`] or [`ConfigError::Strategy`] naming what is wrong.
    pub fn validate(self) -> Result<Loaded, ConfigError> {
        if let Some(t) = &self.tail_sampling {
            TailSampler::new(t)?;
        }
        let strategies = StrategyTable::new(&self.sampling_strategies.clone().unwrap_or_default())?;
        Ok(Loaded { config: self, strategies })
    }
}

/// Reads, parses and validates a configuration file.
///
/// # Errors
/// Any [`ConfigError`].
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&bytes, path)
}

/// Parses and validates configuration file contents.
fn parse(bytes: &[u8], path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: format!("not UTF-8: {e}") })?;
    CollectorConfig::from_yaml(text, path)?.validate()
}

/// Polls `path` every `every` and publishes each changed, valid configuration on the returned channel (which
/// starts with `initial`). Invalid files are logged, counted in `skein_config_reloads_total{reason="rejected"}`
/// and ignored; the task ends when every receiver is gone.
pub fn watch(path: PathBuf, initial: Loaded, every: Duration, metrics: Arc<Metrics>) -> watch::Receiver<Arc<Loaded>> {
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let now = std::fs::read(&path).ok();
            if now == last {
                continue;
            }
            last = now;
            let result = |r: &str| ReasonLabels { reason: r.to_string() };
            let loaded = match &last {
                Some(bytes) => parse(bytes, &path),
                None => load(&path),
            };
            match loaded {
                Ok(loaded) => {
                    tracing::info!(path = %path.display(), "configuration reloaded");
                    metrics.config_reloads.get_or_create(&result("applied")).inc();
                    let _ = tx.send(Arc::new(loaded));
                }
                Err(e) => {
                    tracing::error!(error = %e, "configuration change rejected; keeping the previous configuration");
                    metrics.config_reloads.get_or_create(&result("rejected")).inc();
                }
            }
        }
    });
    rx
}

/// The JSON Schema of the file (for editors and for the operator's CRD).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(CollectorConfig)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_example_is_valid() {
        let doc = r#"
tail_sampling:
  decision_wait: 10s
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 500}}
    - {name: ten-percent, type: probabilistic, probabilistic: {sampling_percentage: 10}}
sampling_strategies:
  default_strategy: {type: probabilistic, param: 0.1}
  service_strategies:
    - {service: checkout, type: ratelimiting, param: 50}
"#;
        let loaded = CollectorConfig::from_yaml(doc, Path::new("x.yaml")).expect("parse").validate().expect("valid");
        assert_eq!(loaded.config.tail_sampling.map(|t| t.policies.len()), Some(3));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = CollectorConfig::from_yaml("tail_samplin: {}", Path::new("c.yaml")).expect_err("typo");
        assert!(e.to_string().contains("unknown field `tail_samplin`"), "{e}");
        let e = CollectorConfig::from_yaml("tail_sampling: {policies: [{name: x, type: latency}]}", Path::new("c"))
            .expect("parses")
            .validate()
            .expect_err("no latency block");
        assert!(e.to_string().contains("\"x\""), "{e}");
    }

    #[test]
    fn schema_describes_policies() {
        let s = json_schema().to_string();
        assert!(s.contains("sampling_percentage") && s.contains("decision_wait") && s.contains("service_strategies"));
    }
}
