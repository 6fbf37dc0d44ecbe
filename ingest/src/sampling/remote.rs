//! Head-sampling strategies served on Jaeger's remote-sampling API, so OpenTelemetry SDKs with the
//! `jaeger_remote` / `parentbased_jaeger_remote` sampler (and Skein's agent) fetch their per-service rates.
//!
//! - Configuration: Jaeger's strategies-file format (`default_strategy`, `service_strategies`, per-operation
//!   `operation_strategies`; `type` `probabilistic` with `param` 0..1 or `ratelimiting` with `param` traces/s),
//!   resolved exactly as Jaeger's file provider does (`internal/sampling/samplingstrategy/file/provider.go`):
//!   per-operation rate limiting falls back to the default probability, a service without operation strategies
//!   inherits the default's (with its own probability as the default), the default's operations are merged into a
//!   service's, and with no strategies at all every service gets probabilistic 0.001.
//! - HTTP (port 5778): `GET <any path>?service=NAME` (so `/sampling` and `/api/sampling` both work) answering
//!   Jaeger's proto-JSON (`strategyType` always present); a missing or repeated `service` is a 400 with
//!   `'service' parameter must be provided once`, as Jaeger's v2 `remote_sampling` extension answers.
//! - gRPC (port 5779): `jaeger.api_v2.SamplingManager/GetSamplingStrategy` (wire-compatible proto in `proto/`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use skein_config::strategies::{
    DEFAULT_SAMPLING_PROBABILITY, OperationStrategy, SamplingStrategies, StrategyError, StrategyType,
};
use skein_proto::jaeger_sampling as pb;

use crate::metrics::Metrics;

fn strategy(t: StrategyType, param: f64) -> pb::SamplingStrategyResponse {
    match t {
        StrategyType::Probabilistic => pb::SamplingStrategyResponse {
            strategy_type: pb::SamplingStrategyType::Probabilistic as i32,
            probabilistic_sampling: Some(pb::ProbabilisticSamplingStrategy { sampling_rate: param }),
            ..Default::default()
        },
        StrategyType::Ratelimiting => pb::SamplingStrategyResponse {
            strategy_type: pb::SamplingStrategyType::RateLimiting as i32,
            rate_limiting_sampling: Some(pb::RateLimitingSamplingStrategy { max_traces_per_second: param as i32 }),
            ..Default::default()
        },
    }
}

fn with_operations(mut resp: pb::SamplingStrategyResponse, ops: &[OperationStrategy]) -> pb::SamplingStrategyResponse {
    if ops.is_empty() {
        return resp;
    }
    let default_probability =
        resp.probabilistic_sampling.as_ref().map_or(DEFAULT_SAMPLING_PROBABILITY, |p| p.sampling_rate);
    let per_operation_strategies = ops
        .iter()
        .map(|o| pb::OperationSamplingStrategy {
            operation: o.operation.clone(),
            probabilistic_sampling: Some(pb::ProbabilisticSamplingStrategy {
                sampling_rate: match o.strategy_type {
                    StrategyType::Probabilistic => o.param,
                    StrategyType::Ratelimiting => default_probability,
                },
            }),
        })
        .collect();
    resp.operation_sampling = Some(pb::PerOperationSamplingStrategies {
        default_sampling_probability: default_probability,
        per_operation_strategies,
        ..Default::default()
    });
    resp
}

/// The resolved strategies, one response per service plus the default.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyTable {
    default: pb::SamplingStrategyResponse,
    services: HashMap<String, pb::SamplingStrategyResponse>,
}

impl StrategyTable {
    /// Resolves a strategies file as Jaeger's file provider does.
    ///
    /// # Errors
    /// [`StrategyError`] for a probability outside 0..1, a negative rate, or a service listed twice.
    pub fn new(s: &SamplingStrategies) -> Result<Self, StrategyError> {
        s.validate()?;
        let default = match &s.default_strategy {
            Some(d) => with_operations(strategy(d.strategy_type, d.param), &d.operation_strategies),
            None => strategy(StrategyType::Probabilistic, DEFAULT_SAMPLING_PROBABILITY),
        };
        let mut services = HashMap::new();
        for svc in &s.service_strategies {
            let mut resp = with_operations(strategy(svc.strategy_type, svc.param), &svc.operation_strategies);
            match (&mut resp.operation_sampling, &default.operation_sampling) {
                (None, Some(d)) => {
                    let mut inherited = d.clone();
                    if let Some(p) = &resp.probabilistic_sampling {
                        inherited.default_sampling_probability = p.sampling_rate;
                    }
                    resp.operation_sampling = Some(inherited);
                }
                (Some(own), Some(d)) => {
                    for op in &d.per_operation_strategies {
                        if !own.per_operation_strategies.iter().any(|o| o.operation == op.operation) {
                            own.per_operation_strategies.push(op.clone());
                        }
                    }
                }
                _ => {}
            }
            services.insert(svc.service.clone(), resp);
        }
        Ok(Self { default, services })
    }

    /// The strategy for `service` (the default when it has none of its own).
    pub fn get(&self, service: &str) -> &pb::SamplingStrategyResponse {
        self.services.get(service).unwrap_or(&self.default)
    }
}

impl Default for StrategyTable {
    fn default() -> Self {
        Self { default: strategy(StrategyType::Probabilistic, DEFAULT_SAMPLING_PROBABILITY), services: HashMap::new() }
    }
}

/// Jaeger's proto-JSON for a strategy response (camelCase, enum names, `strategyType` always present).
pub fn to_json(r: &pb::SamplingStrategyResponse) -> serde_json::Value {
    use serde_json::json;
    let mut out = serde_json::Map::new();
    let ty = if r.strategy_type == pb::SamplingStrategyType::RateLimiting as i32 {
        "RATE_LIMITING"
    } else {
        "PROBABILISTIC"
    };
    out.insert("strategyType".into(), json!(ty));
    if let Some(p) = &r.probabilistic_sampling {
        out.insert("probabilisticSampling".into(), json!({ "samplingRate": p.sampling_rate }));
    }
    if let Some(p) = &r.rate_limiting_sampling {
        out.insert("rateLimitingSampling".into(), json!({ "maxTracesPerSecond": p.max_traces_per_second }));
    }
    if let Some(o) = &r.operation_sampling {
        let ops: Vec<_> = o
            .per_operation_strategies
            .iter()
            .map(|s| {
                json!({
                    "operation": s.operation,
                    "probabilisticSampling": {
                        "samplingRate": s.probabilistic_sampling.as_ref().map_or(0.0, |p| p.sampling_rate)
                    }
                })
            })
            .collect();
        out.insert(
            "operationSampling".into(),
            json!({
                "defaultSamplingProbability": o.default_sampling_probability,
                "defaultLowerBoundTracesPerSecond": o.default_lower_bound_traces_per_second,
                "perOperationStrategies": ops,
                "defaultUpperBoundTracesPerSecond": o.default_upper_bound_traces_per_second,
            }),
        );
    }
    serde_json::Value::Object(out)
}

/// The live strategy table, swapped on config reload.
#[derive(Clone, Default)]
pub struct Strategies(Arc<RwLock<Arc<StrategyTable>>>);

impl Strategies {
    /// Wraps a table.
    pub fn new(table: StrategyTable) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(table))))
    }

    /// Replaces the table (config reload).
    pub fn replace(&self, table: StrategyTable) {
        if let Ok(mut g) = self.0.write() {
            *g = Arc::new(table);
        }
    }

    /// The current table.
    pub fn current(&self) -> Arc<StrategyTable> {
        self.0.read().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Counts one remote-sampling request in `skein_sampling_requests_total{protocol,result}`.
fn count(metrics: &Metrics, protocol: &str, result: &str) {
    metrics.sampling_requests.get_or_create(&crate::metrics::SamplingLabels::new(protocol, result)).inc();
}

#[derive(Clone)]
struct HttpState {
    strategies: Strategies,
    metrics: Arc<Metrics>,
}

/// The HTTP remote-sampling API: any `GET` path with `?service=NAME`.
pub fn http_router(strategies: Strategies, metrics: Arc<Metrics>) -> Router {
    Router::new().fallback(http_get).with_state(HttpState { strategies, metrics })
}

async fn http_get(State(st): State<HttpState>, method: axum::http::Method, RawQuery(q): RawQuery) -> Response {
    if method != axum::http::Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "use GET").into_response();
    }
    let services: Vec<String> = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "service")
        .map(|(_, v)| v.into_owned())
        .collect();
    let [service] = services.as_slice() else {
        count(&st.metrics, "http", "bad_request");
        return (StatusCode::BAD_REQUEST, "'service' parameter must be provided once").into_response();
    };
    count(&st.metrics, "http", "ok");
    let body = to_json(st.strategies.current().get(service)).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The gRPC `jaeger.api_v2.SamplingManager` service.
#[derive(Clone)]
pub struct SamplingGrpc {
    strategies: Strategies,
    metrics: Arc<Metrics>,
}

impl SamplingGrpc {
    /// Creates the service over the live table.
    pub fn new(strategies: Strategies, metrics: Arc<Metrics>) -> Self {
        Self { strategies, metrics }
    }

    /// The tonic server wrapper.
    pub fn server(self) -> pb::sampling_manager_server::SamplingManagerServer<Self> {
        pb::sampling_manager_server::SamplingManagerServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::sampling_manager_server::SamplingManager for SamplingGrpc {
    async fn get_sampling_strategy(
        &self,
        request: tonic::Request<pb::SamplingStrategyParameters>,
    ) -> Result<tonic::Response<pb::SamplingStrategyResponse>, tonic::Status> {
        let service = request.into_inner().service_name;
        if service.is_empty() {
            count(&self.metrics, "grpc", "bad_request");
            return Err(tonic::Status::invalid_argument("serviceName must be set"));
        }
        count(&self.metrics, "grpc", "ok");
        Ok(tonic::Response::new(self.strategies.current().get(&service).clone()))
    }
}

/// The remote-sampling component: serves `strategies` over HTTP on `http` and gRPC on `grpc` until the returned
/// servers are shut down.
pub fn start(
    strategies: Strategies,
    metrics: Arc<Metrics>,
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
) -> skein_runtime::Servers {
    let mut servers = skein_runtime::Servers::default();
    let http_server =
        axum::serve(http, http_router(strategies.clone(), metrics.clone())).with_graceful_shutdown(servers.stopping());
    servers.spawn("remote sampling HTTP", async move { http_server.await });
    let grpc_server = tonic::transport::Server::builder()
        .add_service(SamplingGrpc::new(strategies, metrics).server())
        .serve_with_incoming_shutdown(skein_proto::otlp_grpc::nodelay_incoming(grpc), servers.stopping());
    servers.spawn("remote sampling gRPC", async move { grpc_server.await.map_err(std::io::Error::other) });
    servers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jaeger's `operation_strategies.json` fixture, in YAML.
    const FIXTURE: &str = r#"
default_strategy: {type: probabilistic, param: 0.5, operation_strategies: [{operation: op0, type: probabilistic, param: 0.2}, {operation: op6, type: probabilistic, param: 0}]}
service_strategies:
  - service: foo
    type: probabilistic
    param: 0.8
    operation_strategies:
      - {operation: op6, type: probabilistic, param: 0.5}
      - {operation: op2, type: ratelimiting, param: 10}
  - {service: bar, type: ratelimiting, param: 5}
  - {service: baz, type: probabilistic, param: 0.3}
"#;

    fn table() -> StrategyTable {
        StrategyTable::new(&serde_yaml::from_str(FIXTURE).expect("yaml")).expect("valid")
    }

    #[test]
    fn service_with_operations_merges_the_defaults() {
        let t = table();
        let foo = to_json(t.get("foo"));
        assert_eq!(foo["strategyType"], "PROBABILISTIC");
        assert_eq!(foo["probabilisticSampling"]["samplingRate"], 0.8);
        let ops = &foo["operationSampling"];
        assert_eq!(ops["defaultSamplingProbability"], 0.8);
        assert_eq!(ops["defaultLowerBoundTracesPerSecond"], 0.0);
        let list = ops["perOperationStrategies"].as_array().expect("array");
        let rate = |name: &str| {
            list.iter().find(|o| o["operation"] == name).map(|o| o["probabilisticSampling"]["samplingRate"].clone())
        };
        assert_eq!(rate("op6"), Some(serde_json::json!(0.5)), "service's own op wins");
        assert_eq!(rate("op2"), Some(serde_json::json!(0.8)), "ratelimiting op falls back to the default probability");
        assert_eq!(rate("op0"), Some(serde_json::json!(0.2)), "default's ops merged in");
    }

    #[test]
    fn rate_limited_and_inheriting_services() {
        let t = table();
        let bar = to_json(t.get("bar"));
        assert_eq!(bar["strategyType"], "RATE_LIMITING");
        assert_eq!(bar["rateLimitingSampling"]["maxTracesPerSecond"], 5);
        assert_eq!(bar["operationSampling"]["defaultSamplingProbability"], 0.5, "keeps the default's probability");
        let baz = to_json(t.get("baz"));
        assert_eq!(baz["operationSampling"]["defaultSamplingProbability"], 0.3);
        let unknown = to_json(t.get("nobody"));
        assert_eq!(unknown["probabilisticSampling"]["samplingRate"], 0.5);
    }

    #[test]
    fn no_strategies_means_jaeger_default() {
        let t = StrategyTable::new(&SamplingStrategies::default()).expect("empty is fine");
        assert_eq!(
            to_json(t.get("x")),
            serde_json::json!({"strategyType": "PROBABILISTIC", "probabilisticSampling": {"samplingRate": 0.001}})
        );
    }

    #[test]
    fn bad_params_are_rejected() {
        let bad = "service_strategies: [{service: a, type: probabilistic, param: 1.5}]";
        assert!(StrategyTable::new(&serde_yaml::from_str(bad).expect("yaml")).is_err());
        let dup = "service_strategies: [{service: a, type: probabilistic, param: 0.5}, {service: a, type: ratelimiting, param: 1}]";
        assert!(StrategyTable::new(&serde_yaml::from_str(dup).expect("yaml")).is_err());
        assert!(serde_yaml::from_str::<SamplingStrategies>("default_strategy: {type: adaptive, param: 1}").is_err());
    }
}
