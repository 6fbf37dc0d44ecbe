//! Configuration reload: the collector's `--config` file ([`CollectorConfig`]), loaded with its compiled parts and
//! re-read when it changes ([`watch`]); a file that does not parse or validate is rejected with a logged reason
//! and the previous configuration stays in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skein_config::{CollectorConfig, ConfigError};
use tokio::sync::watch;

use crate::metrics::{Metrics, ReasonLabels};
use crate::sampling::remote::StrategyTable;

/// A configuration checked to be usable, with its compiled parts.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The configuration as written.
    pub config: CollectorConfig,
    /// Resolved head-sampling strategies.
    pub strategies: StrategyTable,
}

impl Loaded {
    /// Resolves a validated configuration's parts.
    ///
    /// # Errors
    /// [`ConfigError::Strategy`] when the strategies do not validate.
    pub fn new(config: CollectorConfig) -> Result<Self, ConfigError> {
        let strategies = StrategyTable::new(&config.sampling_strategies.clone().unwrap_or_default())?;
        Ok(Self { config, strategies })
    }
}

/// Reads, parses and validates a configuration file.
///
/// # Errors
/// Any [`ConfigError`].
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    Loaded::new(CollectorConfig::load(path)?)
}

/// Parses and validates configuration file contents.
fn parse(bytes: &[u8], path: &Path) -> Result<Loaded, ConfigError> {
    Loaded::new(CollectorConfig::parse(bytes, path)?)
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
