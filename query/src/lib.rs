//! The query service: Jaeger's classic JSON API and api_v3 over HTTP, over any [`TraceStore`].
//!
//! Routes (REFERENCE §1–2): `GET /api/services`, `/api/services/{service}/operations`,
//! `/api/operations?service=&spanKind=`, `/api/traces?service=&operation=&tag=&tags=&minDuration=&maxDuration=
//! &start=&end=&limit=&lookback=` (and multi-get with `traceID=`), `/api/traces/{traceID}`,
//! `/api/traces/{traceID}/analysis` (critical path, skew, missing parents, summary: [`analysis`]; `?adjust=skew` on
//! the trace itself), `/api/dependencies?endTs=&lookback=` (Jaeger's `{parent, child, callCount}` plus Skein's
//! `errorCount`, calls whose child span has ERROR status). api_v3: `GET /api/v3/traces/{traceID}`,
//! `/api/v3/traces?query.serviceName=&…` (search, [`params::v3_trace_query`]), `/api/v3/trace-summaries?…`,
//! `/api/v3/services`, `/api/v3/operations?service=&spanKind=` (or `span_kind`). The web UI at `/`: [`ui`]. Classic responses use Jaeger's
//! envelope `{data,total,limit,offset,errors}` and errors repeat the HTTP status in `errors[0].code`; api_v3
//! answers `{"result": TracesData}` and errors as `{"error": {"httpCode", "message"}}`, an empty search as 404.
//!
//! [`start`] runs it as a component. This crate reads through `skein_storage::TraceStore` only: it must not import
//! `skein-ingest` or the server binaries' code, and knows no storage engine.

pub mod analysis;
pub mod auth;
pub mod cache;
pub mod grpc;
pub mod jaeger;
pub mod metrics;
pub mod params;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use skein_proto::otlp_trace::TracesData;

use crate::metrics::QueryMetrics;
use skein_model::otlp::to_otlp;
use skein_model::{SpanKind, TraceId};
use skein_storage::{StoreError, TraceStore, TraceSummary};

/// An error answered in Jaeger's envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    /// A 400 with a message saying what was wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// A 401: no accepted bearer token ([`auth`]).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: message.into() }
    }

    fn not_found(message: &str) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.to_string() }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failed while answering a query");
        match e {
            StoreError::Engine(_) | StoreError::Io(_) | StoreError::Task(_) => {
                Self { status: StatusCode::SERVICE_UNAVAILABLE, message: "storage unavailable".into() }
            }
            StoreError::Codec(e) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("a stored trace block could not be decoded: {e}"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        (
            self.status,
            axum::Json(json!({
                "data": Json::Null, "total": 0, "limit": 0, "offset": 0,
                "errors": [{ "code": code, "msg": self.message }],
            })),
        )
            .into_response()
    }
}

type Store = Arc<dyn TraceStore>;
type Meters = axum::Extension<Arc<QueryMetrics>>;

/// Reads one trace; a block that fails to decode is logged, counted in `skein_blocks_corrupt_total` and answered
/// as an HTTP 500 naming the trace, without affecting any other trace.
async fn read_trace(
    store: &Store,
    metrics: &QueryMetrics,
    trace_id: TraceId,
) -> Result<Option<Vec<skein_model::Span>>, ApiError> {
    match store.get_trace(trace_id).await {
        Ok(t) => Ok(t),
        Err(StoreError::Codec(e)) => {
            metrics.blocks_corrupt.inc();
            tracing::error!(%trace_id, error = %e, "stored trace block is corrupt");
            Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("trace {trace_id}: stored block is corrupt: {e}"),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Answers 504 (Jaeger's error envelope, which api_v3 clients also read as an error) when a query takes longer
/// than `timeout`; the handler's future is dropped, which stops its storage reads. Counted in
/// `skein_query_timeouts_total`.
async fn time_limit(
    State((timeout, metrics)): State<(std::time::Duration, Arc<QueryMetrics>)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics.query_timeouts.inc();
            ApiError {
                status: StatusCode::GATEWAY_TIMEOUT,
                message: format!(
                    "the query took longer than --query-timeout ({timeout:?}); narrow the time range or add filters"
                ),
            }
            .into_response()
        }
    }
}

/// Logs and counts (`skein_blocks_corrupt_total`) the traces a search left out because a block failed to decode.
fn report_corrupt(metrics: &QueryMetrics, corrupt: &[(TraceId, String)]) {
    for (trace_id, e) in corrupt {
        metrics.blocks_corrupt.inc();
        tracing::error!(%trace_id, error = %e, "stored trace block is corrupt; left out of search results");
    }
}

/// The query router; every request is limited to `timeout`, and with `tokens` every `/api` request needs an
/// accepted bearer token (the UI's page and static files stay public: they hold no trace data).
pub fn router(
    store: Store,
    metrics: Arc<QueryMetrics>,
    timeout: std::time::Duration,
    tokens: Option<Arc<auth::TokenFile>>,
) -> Router {
    let limit = axum::middleware::from_fn_with_state((timeout, metrics.clone()), time_limit);
    let api = Router::new()
        .route("/api/services", get(services))
        .route("/api/services/{service}/operations", get(service_operations))
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/traces/{trace_id}/analysis", get(get_analysis))
        .route("/api/dependencies", get(dependencies))
        .route("/api/v3/traces/{trace_id}", get(v3_get_trace))
        .route("/api/v3/traces", get(v3_find_traces))
        .route("/api/v3/trace-summaries", get(v3_trace_summaries))
        .route("/api/v3/services", get(v3_services))
        .route("/api/v3/operations", get(v3_operations));
    let api = match tokens {
        Some(tokens) => api.layer(axum::middleware::from_fn_with_state(tokens, auth::require_token)),
        None => api,
    };
    api.merge(ui::routes()).layer(axum::Extension(metrics)).layer(limit).with_state(store)
}

/// Jaeger's response envelope (`structuredResponse`): `data`, `total`, `limit`, `offset`, `errors`.
#[derive(serde::Serialize)]
struct Envelope<T> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<Json>>,
}

/// A 200 JSON response of `value`, written into one buffer of at least `size_hint_bytes` (a search's answer
/// runs to megabytes; growing a small buffer step by step cost a tenth of its time).
fn json_body<T: serde::Serialize>(value: &T, size_hint_bytes: usize) -> Response {
    let mut buf = Vec::with_capacity(size_hint_bytes.max(256));
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => ([(axum::http::header::CONTENT_TYPE, "application/json")], buf).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not serialize a response");
            (StatusCode::INTERNAL_SERVER_ERROR, "response serialization failed").into_response()
        }
    }
}

/// Bytes of JSON a trace of `spans` spans usually takes in Jaeger's or OTLP's shape (about 1.5 KB a span).
fn json_size_hint(spans: usize) -> usize {
    spans.saturating_mul(1536)
}

fn envelope(data: Json, total: usize) -> Response {
    json_body(&Envelope { data, total, limit: 0, offset: 0, errors: None }, 0)
}

async fn services(State(store): State<Store>) -> Result<Response, ApiError> {
    let s = store.services().await?;
    let n = s.len();
    Ok(envelope(json!(s), n))
}

async fn service_operations(State(store): State<Store>, Path(service): Path<String>) -> Result<Response, ApiError> {
    let mut names: Vec<String> = store.operations(&service, None).await?.into_iter().map(|o| o.name).collect();
    names.dedup();
    let n = names.len();
    Ok(envelope(json!(names), n))
}

fn span_kind_param(p: &params::Pairs, key: &str) -> Result<Option<SpanKind>, ApiError> {
    params::get(p, key)
        .map(|k| {
            SpanKind::from_jaeger_name(&k.to_ascii_lowercase()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unsupported span kind {k:?}: use server, client, producer, consumer or internal"
                ))
            })
        })
        .transpose()
}

async fn operations(State(store): State<Store>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = params::pairs(raw.as_deref());
    let service = params::get(&p, "service").ok_or_else(|| ApiError::bad_request("parameter 'service' is required"))?;
    let kind_key = if params::get(&p, "spanKind").is_some() { "spanKind" } else { "span_kind" };
    let kind = span_kind_param(&p, kind_key)?;
    let ops = store.operations(service, kind).await?;
    let data: Vec<Json> = ops.iter().map(|o| json!({ "name": o.name, "spanKind": o.kind.jaeger_name() })).collect();
    let n = data.len();
    Ok(envelope(json!(data), n))
}

/// A trace ID path or query value: hex, or a pasted `traceparent` / B3 header ([`TraceId::from_lookup`]).
fn parse_trace_id(s: &str) -> Result<TraceId, ApiError> {
    TraceId::from_lookup(s).map_err(ApiError::bad_request)
}

/// Parses `adjust=`: a comma-separated list of adjustments (`skew`), or `none`. `default` applies when absent.
///
/// # Errors
/// An unknown adjustment, naming the supported ones.
fn skew_wanted(p: &params::Pairs, default: bool) -> Result<bool, ApiError> {
    let Some(value) = params::get(p, "adjust") else { return Ok(default) };
    let mut skew = false;
    for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match a {
            "skew" => skew = true,
            "none" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "adjust: unknown adjustment {other:?} (supported: skew, none)"
                )));
            }
        }
    }
    Ok(skew)
}

/// The trace `id` names and whether `adjust=` asks for clock-skew adjustment (`skew_by_default` when absent).
///
/// # Errors
/// 400 for a bad ID or adjustment, 404 when no span of the trace is stored, the store's error.
async fn trace_and_adjustment(
    store: &Store,
    metrics: &QueryMetrics,
    id: &str,
    raw: Option<&str>,
    skew_by_default: bool,
) -> Result<(TraceId, Vec<skein_model::Span>, bool), ApiError> {
    let trace_id = parse_trace_id(id)?;
    let skew = skew_wanted(&params::pairs(raw), skew_by_default)?;
    let spans = read_trace(store, metrics, trace_id).await?.ok_or_else(|| ApiError::not_found("trace not found"))?;
    Ok((trace_id, spans, skew))
}

/// `GET /api/traces/{id}[?adjust=skew]`: the trace in Jaeger's JSON; with `adjust=skew`, clock skew adjusted
/// ([`analysis::adjust_skew`]) and each moved span carrying a warning with its offset and original start.
async fn get_trace(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, mut spans, skew) = trace_and_adjustment(&store, &metrics, &id, raw.as_deref(), false).await?;
    if skew {
        analysis::adjust_skew(&mut spans);
    }
    Ok(json_body(
        &Envelope { data: [jaeger::trace(&spans)], total: 0, limit: 0, offset: 0, errors: None },
        json_size_hint(spans.len()),
    ))
}

/// `GET /api/traces/{id}/analysis[?adjust=none]`: [`analysis::Analysis`] in Jaeger's envelope — summary, critical
/// path with self times, missing-parent placeholders, warnings — computed on skew-adjusted times unless
/// `adjust=none` (the adjustments are listed).
async fn get_analysis(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (trace_id, mut spans, skew) = trace_and_adjustment(&store, &metrics, &id, raw.as_deref(), true).await?;
    // Deep and wide traces take a while to analyze: off the async workers.
    let analysis = tokio::task::spawn_blocking(move || {
        if skew { analysis::analyze_skew_adjusted(&mut spans) } else { analysis::analyze(&spans, Vec::new()) }
    })
    .await
    .map_err(|e| ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("analysis failed: {e}") })?;
    let mut data = json!(analysis);
    data["traceID"] = json!(jaeger::trace_id_text(&trace_id));
    Ok(envelope(data, 0))
}

async fn find_traces(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = params::pairs(raw.as_deref());
    let ids = params::all(&p, "traceID");
    if !ids.is_empty() {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        for id in ids {
            let trace_id = parse_trace_id(id)?;
            match read_trace(&store, &metrics, trace_id).await {
                Ok(Some(spans)) => found.push(spans),
                Ok(None) => errors.push(json!({ "code": 404, "msg": "trace not found", "traceID": id })),
                Err(e) => errors.push(json!({ "code": e.status.as_u16(), "msg": e.message, "traceID": id })),
            }
        }
        let hint = json_size_hint(found.iter().map(Vec::len).sum());
        let data: Vec<_> = found.iter().map(|t| jaeger::trace(t)).collect();
        let errors = (!errors.is_empty()).then_some(errors);
        return Ok(json_body(&Envelope { data, total: 0, limit: 0, offset: 0, errors }, hint));
    }
    let query = params::trace_query(&p, skein_model::now_nanos()).map_err(ApiError::bad_request)?;
    let found = store.find_traces(query).await?;
    let hint = json_size_hint(found.traces.iter().map(Vec::len).sum());
    let data: Vec<_> = found.traces.iter().map(|t| jaeger::trace(t)).collect();
    if found.corrupt.is_empty() {
        return Ok(json_body(&Envelope { data, total: 0, limit: 0, offset: 0, errors: None }, hint));
    }
    report_corrupt(&metrics, &found.corrupt);
    let errors: Vec<Json> = found
        .corrupt
        .iter()
        .map(|(trace_id, e)| {
            json!({ "code": 500, "msg": format!("trace {trace_id}: stored block is corrupt: {e}"), "traceID": trace_id.to_string() })
        })
        .collect();
    Ok(json_body(&Envelope { data, total: 0, limit: 0, offset: 0, errors: Some(errors) }, hint))
}

async fn dependencies(State(store): State<Store>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = params::pairs(raw.as_deref());
    let (end, lookback) = params::dependencies(&p, skein_model::now_nanos()).map_err(ApiError::bad_request)?;
    let links = store.dependencies(end, lookback).await?;
    let service = params::get(&p, "service");
    let data: Vec<Json> = links
        .iter()
        .filter(|l| service.is_none_or(|s| l.parent == s || l.child == s))
        .map(
            |l| json!({ "parent": l.parent, "child": l.child, "callCount": l.call_count, "errorCount": l.error_count }),
        )
        .collect();
    Ok(envelope(json!(data), 0))
}

/// api_v3's `{"result": …}` answer, serialized straight into the body.
#[derive(serde::Serialize)]
struct V3Result<T> {
    result: T,
}

fn v3_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "httpCode": status.as_u16(), "message": message } }))).into_response()
}

async fn v3_get_trace(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    Path(id): Path<String>,
) -> Response {
    let trace_id = match TraceId::from_lookup(&id) {
        Ok(t) => t,
        Err(e) => return v3_error(StatusCode::BAD_REQUEST, &e),
    };
    match read_trace(&store, &metrics, trace_id).await {
        Ok(Some(spans)) => {
            json_body(&V3Result { result: TracesData { resource_spans: to_otlp(&spans) } }, json_size_hint(spans.len()))
        }
        Ok(None) => v3_error(StatusCode::NOT_FOUND, "trace not found"),
        Err(e) => v3_error(e.status, &e.message),
    }
}

/// Runs an api_v3 search with `search` (full traces or summaries): the parameters' 400, the store's error, or what
/// was found (corrupt blocks logged and left out, as the classic search does); an empty answer is api_v3's 404.
async fn v3_search<T, Fut>(
    metrics: &QueryMetrics,
    raw: Option<&str>,
    search: impl FnOnce(skein_storage::TraceQuery) -> Fut,
) -> Result<Vec<T>, Response>
where
    Fut: std::future::Future<Output = skein_storage::StoreResult<(Vec<T>, Vec<(TraceId, String)>)>>,
{
    let query = params::v3_trace_query(&params::pairs(raw)).map_err(|e| v3_error(StatusCode::BAD_REQUEST, &e))?;
    let (found, corrupt) = search(query).await.map_err(|e| {
        let e = ApiError::from(e);
        v3_error(e.status, &e.message)
    })?;
    report_corrupt(metrics, &corrupt);
    if found.is_empty() {
        // api_v3 answers an empty search with 404, unlike the classic API (Jaeger PR #9260).
        return Err(v3_error(StatusCode::NOT_FOUND, "No traces found"));
    }
    Ok(found)
}

/// `GET /api/v3/traces?query.serviceName=&…`: every trace found, as one OTLP `TracesData` in `result`.
async fn v3_find_traces(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    RawQuery(raw): RawQuery,
) -> Response {
    let search = |q| async move { store.find_traces(q).await.map(|f| (f.traces, f.corrupt)) };
    match v3_search(&metrics, raw.as_deref(), search).await {
        Ok(traces) => {
            let hint = json_size_hint(traces.iter().map(Vec::len).sum());
            let resource_spans = traces.iter().flat_map(|t| to_otlp(t)).collect();
            json_body(&V3Result { result: TracesData { resource_spans } }, hint)
        }
        Err(response) => response,
    }
}

/// One trace's api_v3 summary (`FindTraceSummaries`): root service and operation, time range, span and error
/// counts, per-service counts (in order of first appearance).
fn v3_summary(t: &TraceSummary) -> V3Summary<'_> {
    V3Summary {
        trace_id: t.trace_id.to_hex(),
        root_service_name: &t.root_service,
        root_operation_name: &t.root_operation,
        min_start_time_unix_nano: t.start_unix_nanos.to_string(),
        max_end_time_unix_nano: t.end_unix_nanos.to_string(),
        span_count: t.span_count,
        error_span_count: t.error_span_count,
        services: t
            .services
            .iter()
            .map(|(name, span_count, error_span_count)| V3ServiceCount {
                name,
                span_count: *span_count,
                error_span_count: *error_span_count,
            })
            .collect(),
    }
}

/// One api_v3 trace summary in JSON (serialized straight from the summary, no JSON tree built).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct V3Summary<'a> {
    trace_id: String,
    root_service_name: &'a str,
    root_operation_name: &'a str,
    min_start_time_unix_nano: String,
    max_end_time_unix_nano: String,
    span_count: u64,
    error_span_count: u64,
    services: Vec<V3ServiceCount<'a>>,
}

/// Spans and error spans of one service in a [`V3Summary`].
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct V3ServiceCount<'a> {
    name: &'a str,
    span_count: u64,
    error_span_count: u64,
}

/// `GET /api/v3/trace-summaries?query.serviceName=&…`: the same search as `/api/v3/traces`, one summary per trace,
/// from the store's summary search (which decodes no span attributes of the traces it returns).
async fn v3_trace_summaries(
    State(store): State<Store>,
    axum::Extension(metrics): Meters,
    RawQuery(raw): RawQuery,
) -> Response {
    let search = |q| async move { store.find_trace_summaries(q).await.map(|f| (f.summaries, f.corrupt)) };
    match v3_search(&metrics, raw.as_deref(), search).await {
        Ok(summaries) => json_body(&json!({ "summaries": summaries.iter().map(v3_summary).collect::<Vec<_>>() }), 0),
        Err(response) => response,
    }
}

async fn v3_services(State(store): State<Store>) -> Result<Response, ApiError> {
    Ok(axum::Json(json!({ "services": store.services().await? })).into_response())
}

async fn v3_operations(State(store): State<Store>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let p = params::pairs(raw.as_deref());
    let service = params::get(&p, "service")
        .or_else(|| params::get(&p, "query.serviceName"))
        .ok_or_else(|| ApiError::bad_request("parameter 'service' is required"))?;
    let kind_key = if params::get(&p, "spanKind").is_some() { "spanKind" } else { "span_kind" };
    let kind = span_kind_param(&p, kind_key)?;
    let ops = store.operations(service, kind).await?;
    let data: Vec<Json> = ops.iter().map(|o| json!({ "name": o.name, "spanKind": o.kind.jaeger_name() })).collect();
    Ok(axum::Json(json!({ "operations": data })).into_response())
}

/// Settings of the query component.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// Longest a query may take (HTTP 504, gRPC DEADLINE_EXCEEDED after it).
    pub timeout: std::time::Duration,
    /// Spans the hot-trace cache holds (0: no cache).
    pub cache_spans: u64,
    /// Bearer tokens the query APIs require ([`auth`]); `None`: open.
    pub auth_token_file: Option<std::path::PathBuf>,
}

/// Every trace the query component answers with, after Jaeger's span-ID deduplication
/// ([`analysis::dedupe_span_ids`]), which Jaeger's query service applies to every trace it reads.
struct SpanIdDeduped(Arc<dyn TraceStore>);

#[async_trait::async_trait]
impl TraceStore for SpanIdDeduped {
    fn partition_secs(&self) -> u64 {
        self.0.partition_secs()
    }

    fn layout(&self) -> skein_storage::StoreLayout {
        self.0.layout()
    }

    async fn write(&self, batch: Arc<skein_storage::WriteBatch>) -> skein_storage::StoreResult<()> {
        self.0.write(batch).await
    }

    async fn get_trace(&self, trace_id: TraceId) -> skein_storage::StoreResult<Option<Vec<skein_model::Span>>> {
        let mut trace = self.0.get_trace(trace_id).await?;
        if let Some(spans) = &mut trace {
            analysis::dedupe_span_ids(spans);
        }
        Ok(trace)
    }

    async fn find_traces(
        &self,
        query: skein_storage::TraceQuery,
    ) -> skein_storage::StoreResult<skein_storage::FoundTraces> {
        let mut found = self.0.find_traces(query).await?;
        for spans in &mut found.traces {
            analysis::dedupe_span_ids(spans);
        }
        Ok(found)
    }

    /// Summaries count spans and services, which deduplication leaves as they are.
    async fn find_trace_summaries(
        &self,
        query: skein_storage::TraceQuery,
    ) -> skein_storage::StoreResult<skein_storage::FoundSummaries> {
        self.0.find_trace_summaries(query).await
    }

    async fn services(&self) -> skein_storage::StoreResult<Vec<String>> {
        self.0.services().await
    }

    async fn operations(
        &self,
        service: &str,
        kind: Option<SpanKind>,
    ) -> skein_storage::StoreResult<Vec<skein_storage::Operation>> {
        self.0.operations(service, kind).await
    }

    async fn dependencies(
        &self,
        end_unix_nanos: u64,
        lookback_nanos: u64,
    ) -> skein_storage::StoreResult<Vec<skein_storage::DependencyLink>> {
        self.0.dependencies(end_unix_nanos, lookback_nanos).await
    }
}

/// The query component: Jaeger's HTTP API, api_v3 and the web UI on `http`, the gRPC query service on `grpc`,
/// reading `store` through the hot-trace cache, until the returned servers are shut down.
///
/// # Errors
/// A message when the token file cannot be read.
pub fn start(
    config: &QueryConfig,
    store: Arc<dyn TraceStore>,
    metrics: Arc<QueryMetrics>,
    http: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
) -> Result<skein_runtime::Servers, String> {
    let store: Arc<dyn TraceStore> = match config.cache_spans {
        0 => store,
        spans => Arc::new(cache::CachedStore::new(store, spans, metrics.clone())),
    };
    let store: Arc<dyn TraceStore> = Arc::new(SpanIdDeduped(store));
    let tokens = match &config.auth_token_file {
        Some(path) => {
            Some(auth::TokenFile::open(path, metrics.clone()).map_err(|e| format!("--query-auth-token-file: {e}"))?)
        }
        None => None,
    };
    let mut servers = skein_runtime::Servers::default();
    let router = router(store.clone(), metrics.clone(), config.timeout, tokens.clone());
    let http_server = axum::serve(skein_runtime::nodelay(http), router).with_graceful_shutdown(servers.stopping());
    servers.spawn("query HTTP", async move { http_server.await });
    let grpc_server = tonic::transport::Server::builder()
        .add_service(grpc::QueryGrpc::new(store, metrics).with_timeout(config.timeout).server(tokens))
        .serve_with_incoming_shutdown(skein_proto::otlp_grpc::nodelay_incoming(grpc), servers.stopping());
    servers.spawn("query gRPC", async move { grpc_server.await.map_err(std::io::Error::other) });
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_storage::{DependencyLink, FoundTraces, Operation, StoreResult, TraceQuery, WriteBatch};
    use std::time::Duration;
    use tower::ServiceExt as _;

    /// A store that takes `delay` for every read (an overloaded database).
    struct Slow {
        delay: Duration,
    }

    #[async_trait::async_trait]
    impl TraceStore for Slow {
        fn partition_secs(&self) -> u64 {
            3600
        }
        async fn write(&self, _: Arc<WriteBatch>) -> StoreResult<()> {
            Ok(())
        }
        async fn get_trace(&self, _: TraceId) -> StoreResult<Option<Vec<skein_model::Span>>> {
            tokio::time::sleep(self.delay).await;
            Ok(None)
        }
        async fn find_traces(&self, _: TraceQuery) -> StoreResult<FoundTraces> {
            tokio::time::sleep(self.delay).await;
            Ok(FoundTraces::default())
        }
        async fn services(&self) -> StoreResult<Vec<String>> {
            tokio::time::sleep(self.delay).await;
            Ok(vec!["a".into()])
        }
        async fn operations(&self, _: &str, _: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
            tokio::time::sleep(self.delay).await;
            Ok(Vec::new())
        }
        async fn dependencies(&self, _: u64, _: u64) -> StoreResult<Vec<DependencyLink>> {
            tokio::time::sleep(self.delay).await;
            Ok(Vec::new())
        }
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, Json) {
        let request = axum::http::Request::get(uri).body(axum::body::Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Json::Null))
    }

    #[tokio::test]
    async fn queries_over_the_time_limit_get_504_and_are_counted() {
        let metrics = Arc::new(QueryMetrics::default());
        let slow: Store = Arc::new(Slow { delay: Duration::from_secs(5) });
        let router = router(slow.clone(), metrics.clone(), Duration::from_millis(50), None);
        let (status, body) = get(&router, "/api/services").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(body["errors"][0]["msg"].as_str().unwrap_or("").contains("--query-timeout"), "{body}");
        let (status, _) = get(&router, "/api/v3/services").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(metrics.query_timeouts.get(), 2);
        // Within the limit, the answer.
        let quick: Store = Arc::new(Slow { delay: Duration::from_millis(1) });
        let (status, body) = get(&router_for(quick, &metrics), "/api/services").await;
        assert_eq!((status, body["data"].clone()), (StatusCode::OK, json!(["a"])));

        // gRPC: DEADLINE_EXCEEDED.
        use skein_proto::query::query_service_server::QueryService as _;
        let grpc = grpc::QueryGrpc::new(slow, metrics.clone()).with_timeout(Duration::from_millis(50));
        let err = grpc.get_services(tonic::Request::new(Default::default())).await.expect_err("too slow");
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(metrics.query_timeouts.get(), 3);
    }

    fn router_for(store: Store, metrics: &Arc<QueryMetrics>) -> Router {
        router(store, metrics.clone(), Duration::from_secs(5), None)
    }

    #[tokio::test]
    async fn with_a_token_file_the_api_needs_a_bearer_token_and_the_ui_shell_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        std::fs::write(&path, "s3cret\n").expect("write");
        let metrics = Arc::new(QueryMetrics::default());
        let tokens = auth::TokenFile::open(&path, metrics.clone()).expect("tokens");
        let store: Store = Arc::new(Slow { delay: Duration::ZERO });
        let router = router(store, metrics.clone(), Duration::from_secs(5), Some(tokens));
        let call = |uri: &str, token: Option<&str>| {
            let mut request = axum::http::Request::get(uri);
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            router.clone().oneshot(request.body(axum::body::Body::empty()).expect("request"))
        };
        for uri in ["/api/services", "/api/v3/services", "/api/traces/0123456789abcdef", "/api/dependencies"] {
            let refused = call(uri, None).await.expect("response");
            assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{uri}");
            assert_eq!(refused.headers()["www-authenticate"], "Bearer realm=\"skein\"");
            let body = axum::body::to_bytes(refused.into_body(), 1 << 16).await.expect("body");
            let body: Json = serde_json::from_slice(&body).expect("json");
            assert_eq!(body["errors"][0]["code"], 401, "Jaeger's envelope: {body}");
            assert_eq!(call(uri, Some("wrong")).await.expect("response").status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(call("/api/services", Some("s3cret")).await.expect("response").status(), StatusCode::OK);
        assert_eq!(call("/", None).await.expect("response").status(), StatusCode::OK, "the UI page is public");
        assert_eq!(call("/static/app.js", None).await.expect("response").status(), StatusCode::OK);
        let failures = |r: &str| {
            metrics.query_auth_failures.get_or_create(&crate::metrics::ReasonLabels { reason: r.into() }).get()
        };
        assert_eq!((failures("missing"), failures("invalid")), (4, 4));
    }

    #[tokio::test]
    async fn unknown_adjustments_are_refused_naming_the_supported_ones() {
        let p = params::pairs(Some("adjust=skew,none"));
        assert!(skew_wanted(&p, false).expect("valid"));
        assert!(!skew_wanted(&params::pairs(Some("adjust=none")), true).expect("valid"));
        assert!(skew_wanted(&params::pairs(None), true).expect("default"));
        let err = skew_wanted(&params::pairs(Some("adjust=skew,tilt")), false).expect_err("unknown");
        assert!(err.message.contains("tilt") && err.message.contains("supported"), "{}", err.message);
    }
}
