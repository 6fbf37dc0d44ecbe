//! Sampling: tail sampling with the OpenTelemetry Collector's policy set ([`tail`]) and head-sampling strategies
//! served on Jaeger's remote-sampling API ([`remote`]).

pub mod remote;
pub mod tail;
