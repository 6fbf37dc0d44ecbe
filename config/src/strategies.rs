//! Head-sampling strategies as configuration: Jaeger's strategies-file format (`default_strategy`,
//! `service_strategies`, per-operation `operation_strategies`; `type` `probabilistic` with `param` 0..1 or
//! `ratelimiting` with `param` traces/s) and its validation. Resolving and serving them is `skein-ingest`'s
//! `sampling::remote`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Jaeger's probability when no strategy is configured (`file/constants.go`).
pub const DEFAULT_SAMPLING_PROBABILITY: f64 = 0.001;

/// A strategy type in Jaeger's strategies file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StrategyType {
    /// `param` is a probability, 0..1.
    Probabilistic,
    /// `param` is traces per second.
    Ratelimiting,
}

/// One operation's strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationStrategy {
    /// Operation (span) name.
    pub operation: String,
    /// Strategy type (operations support only `probabilistic`; `ratelimiting` falls back to the default
    /// probability, as in Jaeger).
    #[serde(rename = "type")]
    pub strategy_type: StrategyType,
    /// Probability or traces/s.
    pub param: f64,
}

/// The default strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultStrategy {
    /// Strategy type.
    #[serde(rename = "type")]
    pub strategy_type: StrategyType,
    /// Probability or traces/s.
    pub param: f64,
    /// Per-operation strategies every service inherits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_strategies: Vec<OperationStrategy>,
}

/// One service's strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceStrategy {
    /// Service name (`service.name`).
    pub service: String,
    /// Strategy type.
    #[serde(rename = "type")]
    pub strategy_type: StrategyType,
    /// Probability or traces/s.
    pub param: f64,
    /// Per-operation strategies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operation_strategies: Vec<OperationStrategy>,
}

/// Jaeger's strategies file (`sampling_strategies` in Skein's config).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingStrategies {
    /// Strategy for services not listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_strategy: Option<DefaultStrategy>,
    /// Per-service strategies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_strategies: Vec<ServiceStrategy>,
}

/// A strategies file that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("sampling_strategies: {0}")]
pub struct StrategyError(pub String);

fn check(what: &str, t: StrategyType, param: f64) -> Result<(), StrategyError> {
    let ok = match t {
        StrategyType::Probabilistic => (0.0..=1.0).contains(&param),
        StrategyType::Ratelimiting => param >= 0.0 && param <= f64::from(i32::MAX),
    };
    if ok {
        Ok(())
    } else {
        Err(StrategyError(format!("{what}: param {param} out of range (probability 0..1, or traces/s ≥ 0)")))
    }
}

impl SamplingStrategies {
    /// Checks every strategy as Jaeger's file provider does before serving it.
    ///
    /// # Errors
    /// [`StrategyError`] for a probability outside 0..1, a negative rate, or a service listed twice.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if let Some(d) = &self.default_strategy {
            check("default_strategy", d.strategy_type, d.param)?;
            for o in &d.operation_strategies {
                check(&format!("default_strategy operation {:?}", o.operation), o.strategy_type, o.param)?;
            }
        }
        let mut seen = std::collections::HashSet::new();
        for svc in &self.service_strategies {
            check(&format!("service {:?}", svc.service), svc.strategy_type, svc.param)?;
            for o in &svc.operation_strategies {
                check(&format!("service {:?} operation {:?}", svc.service, o.operation), o.strategy_type, o.param)?;
            }
            if !seen.insert(svc.service.as_str()) {
                return Err(StrategyError(format!("service {:?} is listed twice", svc.service)));
            }
        }
        Ok(())
    }
}
