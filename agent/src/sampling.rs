//! The Jaeger remote-sampling proxy on 5778: `GET /sampling?service=` and `GET /api/sampling?service=` answered
//! from a per-service cache of the collector's responses (`GET <upstream>/api/sampling?service=`, the JSON served
//! byte for byte), so SDKs configured for a Jaeger agent keep working.
//!
//! A cached answer older than the refresh interval is served as is while a background fetch replaces it; a
//! service asked for the first time waits for one fetch (2 s timeout). When the collector cannot be reached, the
//! last answer is served; with none, 503 with a message (SDKs then keep their default sampler).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::metrics::Metrics;

/// Services kept in the cache at most (the least recently fetched is evicted).
pub const MAX_CACHED_SERVICES: usize = 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

struct Cached {
    body: Bytes,
    fetched: Instant,
    refreshing: bool,
}

/// The proxy's state.
#[derive(Clone)]
pub struct SamplingProxy {
    upstream: Option<String>,
    refresh: Duration,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    client: Client<HttpConnector, Empty<Bytes>>,
    metrics: Arc<Metrics>,
}

#[derive(serde::Deserialize)]
struct Params {
    service: Option<String>,
}

impl SamplingProxy {
    /// A proxy fetching from `upstream` (`http://host:port`; `None` answers 503) and refreshing every `refresh`.
    pub fn new(upstream: Option<String>, refresh: Duration, metrics: Arc<Metrics>) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { upstream, refresh, cache: Arc::default(), client, metrics }
    }

    /// The router.
    pub fn router(self) -> Router {
        Router::new().route("/sampling", get(handle)).route("/api/sampling", get(handle)).with_state(self)
    }

    async fn fetch(&self, service: &str) -> Result<Bytes, String> {
        let upstream = self.upstream.as_deref().ok_or("no collector sampling endpoint configured")?;
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("service", service).finish();
        let uri = format!("{}/api/sampling?{query}", upstream.trim_end_matches('/'));
        let uri: hyper::Uri = uri.parse().map_err(|e| format!("bad sampling URL {uri:?}: {e}"))?;
        let resp = tokio::time::timeout(FETCH_TIMEOUT, self.client.get(uri))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = tokio::time::timeout(FETCH_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("collector answered {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(body)
    }

    fn store(&self, service: &str, body: Bytes) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_SERVICES && !cache.contains_key(service) {
            let oldest = cache.iter().min_by_key(|(_, c)| c.fetched).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.remove(&k);
            }
        }
        cache.insert(service.to_string(), Cached { body, fetched: Instant::now(), refreshing: false });
    }

    /// The cached body for `service`, marking a stale one as being refreshed (second value true: start a fetch).
    fn cached(&self, service: &str) -> Option<(Bytes, bool)> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = cache.get_mut(service)?;
        let start = !c.refreshing && c.fetched.elapsed() >= self.refresh;
        c.refreshing |= start;
        Some((c.body.clone(), start))
    }

    /// Answers for one service.
    ///
    /// # Errors
    /// The collector cannot be reached and nothing is cached.
    pub async fn strategy(&self, service: &str) -> Result<Bytes, String> {
        if let Some((body, refresh)) = self.cached(service) {
            if refresh {
                let me = self.clone();
                let service = service.to_string();
                tokio::spawn(async move {
                    match me.fetch(&service).await {
                        Ok(body) => me.store(&service, body),
                        Err(e) => {
                            me.metrics.sampling_result("refresh_failed");
                            tracing::debug!(service, error = %e, "refreshing sampling strategy failed; serving the last one");
                            if let Some(c) =
                                me.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(&service)
                            {
                                c.refreshing = false;
                                c.fetched = Instant::now();
                            }
                        }
                    }
                });
            }
            return Ok(body);
        }
        let body = self.fetch(service).await?;
        self.store(service, body.clone());
        Ok(body)
    }
}

async fn handle(State(proxy): State<SamplingProxy>, Query(params): Query<Params>) -> Response {
    let Some(service) = params.service.filter(|s| !s.is_empty()) else {
        proxy.metrics.sampling_result("bad_request");
        return (StatusCode::BAD_REQUEST, "'service' parameter must be provided once").into_response();
    };
    match proxy.strategy(&service).await {
        Ok(body) => {
            proxy.metrics.sampling_result("ok");
            (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body)
                .into_response()
        }
        Err(e) => {
            proxy.metrics.sampling_result("unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, format!("sampling strategy for {service:?} unavailable: {e}"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A collector's sampling endpoint answering version `version` (503 while it is 0), counting requests in `hits`.
    async fn upstream(version: Arc<AtomicU32>, hits: Arc<AtomicU32>) -> String {
        let app = Router::new().route(
            "/api/sampling",
            get(move |Query(p): Query<Params>| {
                hits.fetch_add(1, Ordering::SeqCst);
                let v = version.load(Ordering::SeqCst);
                async move {
                    if v == 0 {
                        return (StatusCode::SERVICE_UNAVAILABLE, "down".to_string());
                    }
                    (StatusCode::OK, format!("{{\"service\":{:?},\"v\":{v}}}", p.service.unwrap_or_default()))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn caches_refreshes_in_background_and_survives_an_outage() {
        /// Polls `check` every 5 ms until it holds, failing after 10 s.
        async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !check().await {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let refresh = Duration::from_millis(50);
        let (version, hits) = (Arc::new(AtomicU32::new(1)), Arc::new(AtomicU32::new(0)));
        let base = upstream(version.clone(), hits.clone()).await;
        let proxy = SamplingProxy::new(Some(base), refresh, Arc::new(Metrics::new()));
        assert_eq!(proxy.strategy("a b").await.expect("fetched"), Bytes::from("{\"service\":\"a b\",\"v\":1}"));
        version.store(2, Ordering::SeqCst);
        assert!(proxy.strategy("a b").await.expect("cached").ends_with(b"1}"), "fresh cache answers");
        // The cache's age is the condition here: let the refresh interval pass.
        tokio::time::sleep(refresh + Duration::from_millis(10)).await;
        assert!(proxy.strategy("a b").await.expect("stale").ends_with(b"1}"), "stale served while refreshing");
        until("the background refresh to land", async || proxy.strategy("a b").await.is_ok_and(|b| b.ends_with(b"2}")))
            .await;
        version.store(0, Ordering::SeqCst);
        tokio::time::sleep(refresh + Duration::from_millis(10)).await;
        let before = hits.load(Ordering::SeqCst);
        let _ = proxy.strategy("a b").await;
        let failed = || {
            skein_testkit::metric_in(
                &proxy.metrics.render(),
                "skein_agent_sampling_requests_total{result=\"refresh_failed\"}",
            )
        };
        until("the failed refresh to be counted", async || failed() == 1.0).await;
        assert!(hits.load(Ordering::SeqCst) > before, "the refresh asked the collector");
        assert!(proxy.strategy("a b").await.expect("last known").ends_with(b"2}"), "outage keeps the last answer");
        let e = proxy.strategy("new").await.expect_err("nothing cached");
        assert!(e.contains("503"), "{e}");
    }
}
