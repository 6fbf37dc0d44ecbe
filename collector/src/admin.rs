//! The admin component: `/metrics` (OpenMetrics text of the process's one registry, which every component's
//! metrics are registered in), `/healthz` (the process answers) and `/readyz` (200 once the write-ahead log is
//! replayed and every component serves, 503 before and while shutting down).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use skein_runtime::Servers;
use tokio::net::TcpListener;

/// The admin routes over `registry`, ready while `ready` is set.
pub fn router(registry: Registry, ready: Arc<AtomicBool>) -> Router {
    let registry = Arc::new(registry);
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
                        text.clear();
                    }
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
}

/// Serves [`router`] on `listener` until the returned servers are shut down.
pub fn start(registry: Registry, ready: Arc<AtomicBool>, listener: TcpListener) -> Servers {
    let mut servers = Servers::default();
    let server = axum::serve(listener, router(registry, ready)).with_graceful_shutdown(servers.stopping());
    servers.spawn("admin", async move { server.await });
    servers
}
