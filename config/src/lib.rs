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
//! The collector re-reads the file when it changes (`skein-ingest`'s `reload`); a file that does not parse or
//! validate is rejected with a logged reason and the previous configuration stays in force.
//!
//! This crate holds every configuration type the collector and the operator share — the file ([`CollectorConfig`]),
//! tail-sampling policies ([`tail`]), head-sampling strategies ([`strategies`]), Go durations ([`GoDuration`]) and
//! ScyllaDB settings ([`scylla`]) — with their validation. It must not import any other Skein crate, nor a network
//! or storage library: the operator links it to validate `TracingPipeline`s.

pub mod duration;
pub mod scylla;
pub mod strategies;
pub mod tail;

use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::{GoDuration, parse_go_duration};
use strategies::SamplingStrategies;
use tail::TailSamplingConfig;

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
    Policy(#[from] tail::PolicyError),
    /// The strategies are invalid.
    #[error("{0}")]
    Strategy(#[from] strategies::StrategyError),
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

    /// Validates every part (compiles the policies, checks the strategies).
    ///
    /// # Errors
    /// [`ConfigError::Policy`] or [`ConfigError::Strategy`] naming what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.tail_sampling {
            t.validate()?;
        }
        if let Some(s) = &self.sampling_strategies {
            s.validate()?;
        }
        Ok(())
    }

    /// Parses and validates configuration file contents read from `path` (named in errors).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for text that is not UTF-8 or not the schema; [`ConfigError::Policy`] or
    /// [`ConfigError::Strategy`] for a configuration that does not validate.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: format!("not UTF-8: {e}") })?;
        let config = Self::from_yaml(text, path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, else as [`CollectorConfig::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&bytes, path)
    }
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
        let config = CollectorConfig::parse(doc.as_bytes(), Path::new("x.yaml")).expect("valid");
        let policies = doc.lines().filter(|l| l.trim_start().starts_with("- {name:")).count();
        assert_eq!(config.tail_sampling.map(|t| t.policies.len()), Some(policies));
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
