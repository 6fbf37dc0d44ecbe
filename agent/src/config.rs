//! The agent's file configuration (`--config FILE`, YAML, unknown fields refused): redaction rules and head
//! sampling.
//!
//! ```yaml
//! redaction:
//!   - key: "(?i)^(password|passwd|secret)$"   # regex over attribute keys
//!     action: drop                            # mask | hash | drop
//!   - key: "(?i)authorization"
//!     action: mask
//! head_sampling:
//!   sampling_percentage: 25     # 0–100; traces kept by trace-ID hash
//!   hash_salt: ""               # the collector's `probabilistic` policy `hash_salt` (empty = upstream default)
//! ```

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a redaction rule does to a matching attribute.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RedactAction {
    /// Replace the value with the string `"****"`.
    Mask,
    /// Replace the value with `"sha256:"` + the hex SHA-256 of its string form (joinable, not reversible).
    Hash,
    /// Remove the attribute.
    Drop,
}

/// One redaction rule: attributes whose key matches `key` get `action`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedactionRule {
    /// Regular expression (Rust `regex` syntax) matched against attribute keys (unanchored; use `^…$`).
    pub key: String,
    /// What to do with a match.
    pub action: RedactAction,
}

impl RedactionRule {
    /// Checks that `key` compiles as a regular expression (the agent and the operator run this same check).
    ///
    /// # Errors
    /// [`ConfigError`] naming the key and the regex error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        regex::Regex::new(&self.key).map(drop).map_err(|e| ConfigError(format!("redaction key {:?}: {e}", self.key)))
    }
}

/// Head sampling: keep a trace when the FNV-1a hash of its trace ID is under the threshold for
/// `sampling_percentage` — the same function and salt as the collector's tail `probabilistic` policy
/// (`skein_proto::sampling`), so every agent keeps the same traces and traces stay whole across pods.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeadSampling {
    /// Percentage of traces kept, 0–100.
    pub sampling_percentage: f64,
    /// Hash salt; empty means the OpenTelemetry Collector's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash_salt: String,
}

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Redaction rules, applied in order to resource, scope, span, event and link attributes (and nested
    /// key-value lists); the first matching rule wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redaction: Vec<RedactionRule>,
    /// Head sampling; absent keeps every trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sampling: Option<HeadSampling>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("agent config: {0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Parses and checks YAML.
    ///
    /// # Errors
    /// Unknown fields, bad YAML, an invalid regex or a percentage outside 0–100.
    pub fn parse(yaml: &str) -> Result<Self, ConfigError> {
        let config: Self = if yaml.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml::from_str(yaml).map_err(|e| ConfigError(e.to_string()))?
        };
        for rule in &config.redaction {
            rule.validate()?;
        }
        if let Some(h) = &config.head_sampling
            && !(0.0..=100.0).contains(&h.sampling_percentage)
        {
            return Err(ConfigError(format!(
                "head_sampling.sampling_percentage must be within 0-100, got {}",
                h.sampling_percentage
            )));
        }
        Ok(config)
    }

    /// Reads and parses a file.
    ///
    /// # Errors
    /// The file cannot be read, or [`AgentConfig::parse`] fails.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = AgentConfig::parse(
            "redaction:\n  - key: \"(?i)^password$\"\n    action: drop\n  - key: auth\n    action: mask\n\
             head_sampling:\n  sampling_percentage: 25\n",
        )
        .expect("valid");
        assert_eq!(c.redaction.len(), 2);
        assert_eq!(c.redaction[1].action, RedactAction::Mask);
        assert_eq!(c.head_sampling.expect("set").sampling_percentage, 25.0);
        assert_eq!(AgentConfig::parse("").expect("empty"), AgentConfig::default());
    }

    #[test]
    fn rejects_bad_configs_with_the_reason() {
        let e = AgentConfig::parse("redaction:\n  - key: \"(\"\n    action: mask\n").expect_err("bad regex");
        assert!(e.to_string().contains("redaction key"), "{e}");
        let e = AgentConfig::parse("head_sampling:\n  sampling_percentage: 120\n").expect_err("range");
        assert!(e.to_string().contains("0-100"), "{e}");
        let e = AgentConfig::parse("redaction:\n  - key: a\n    action: erase\n").expect_err("action");
        assert!(e.to_string().contains("erase"), "{e}");
        assert!(AgentConfig::parse("sampling: {}\n").is_err(), "unknown field");
    }
}
