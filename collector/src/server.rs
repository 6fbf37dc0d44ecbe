//! The all-in-one process: OTLP receivers → assembly → writer → embedded store, plus the query API and the admin
//! endpoints, with an orderly shutdown.
//!
//! Shutdown order: stop accepting OTLP (in-flight requests finish), let the assembler write every held trace and
//! the writer persist it, then stop the query and admin servers.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::assembly::{self, AssemblyConfig};
use crate::ingest::grpc::OtlpGrpc;
use crate::ingest::{Ingest, Limits};
use crate::metrics::Metrics;
use crate::storage::TraceStore;
use crate::storage::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::{Error, Result, query, writer};

/// Capacity of the receivers → assembler channel, in export requests.
pub const INGEST_QUEUE_REQUESTS: usize = 1024;
/// Capacity of the assembler → writer channel, in trace chunks.
pub const WRITE_QUEUE_CHUNKS: usize = 8192;

/// Settings of `skein-all-in-one`.
#[derive(Clone, Debug)]
pub struct AllInOneConfig {
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// Query HTTP (Jaeger API) listen address.
    pub query_http_addr: SocketAddr,
    /// Admin (`/metrics`, `/healthz`, `/readyz`) listen address.
    pub admin_addr: SocketAddr,
    /// Embedded store data directory.
    pub data_dir: PathBuf,
    /// Trace assembly settings.
    pub assembly: AssemblyConfig,
    /// Span validation limits.
    pub limits: Limits,
}

/// The addresses actually bound (useful with port 0).
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// Query HTTP.
    pub query_http: SocketAddr,
    /// Admin.
    pub admin: SocketAddr,
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
}

fn admin_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
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

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Runs the all-in-one backend until `shutdown` completes, then drains and returns.
///
/// `on_bound` is called once every listener is bound.
///
/// # Errors
/// [`Error::Bind`] when a listen address is taken, [`Error::Store`] when the data directory cannot be opened,
/// [`Error::Serve`] when a server fails.
pub async fn run_all_in_one(
    config: AllInOneConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(BoundAddrs),
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let embedded = EmbeddedStore::open(&EmbeddedConfig::new(&config.data_dir))?;
    let store: Arc<dyn TraceStore> = Arc::new(embedded.clone());

    let grpc_listener = bind(config.otlp_grpc_addr, "OTLP gRPC").await?;
    let http_listener = bind(config.otlp_http_addr, "OTLP HTTP").await?;
    let query_listener = bind(config.query_http_addr, "query HTTP").await?;
    let admin_listener = bind(config.admin_addr, "admin").await?;
    let bound = BoundAddrs {
        otlp_grpc: grpc_listener.local_addr()?,
        otlp_http: http_listener.local_addr()?,
        query_http: query_listener.local_addr()?,
        admin: admin_listener.local_addr()?,
    };
    tracing::info!(
        otlp_grpc = %bound.otlp_grpc,
        otlp_http = %bound.otlp_http,
        query_http = %bound.query_http,
        admin = %bound.admin,
        data_dir = %config.data_dir.display(),
        "listening"
    );
    on_bound(bound);

    let (span_tx, span_rx) = mpsc::channel(INGEST_QUEUE_REQUESTS);
    let (chunk_tx, chunk_rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
    let assembler = tokio::spawn(assembly::run(config.assembly.clone(), metrics.clone(), span_rx, chunk_tx));
    let writer = tokio::spawn(writer::run(store.clone(), metrics.clone(), chunk_rx));
    let ingest = Ingest::new(config.limits.clone(), metrics.clone(), span_tx);

    let (stop_ingest_tx, stop_ingest) = watch::channel(false);
    let (stop_rest_tx, stop_rest) = watch::channel(false);

    let grpc =
        tonic::transport::Server::builder().add_service(OtlpGrpc::new(ingest.clone())).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            wait_for(stop_ingest.clone()),
        );
    let grpc = tokio::spawn(grpc);
    let otlp_http = axum::serve(http_listener, crate::ingest::http::router(ingest.clone()))
        .with_graceful_shutdown(wait_for(stop_ingest.clone()));
    let otlp_http = tokio::spawn(async move { otlp_http.await });
    drop(ingest);
    let query_srv =
        axum::serve(query_listener, query::router(store.clone())).with_graceful_shutdown(wait_for(stop_rest.clone()));
    let query_srv = tokio::spawn(async move { query_srv.await });
    let admin_srv = axum::serve(admin_listener, admin_router(metrics.clone(), ready.clone()))
        .with_graceful_shutdown(wait_for(stop_rest.clone()));
    let admin_srv = tokio::spawn(async move { admin_srv.await });
    ready.store(true, Ordering::Release);

    shutdown.await;
    tracing::info!("shutting down: no longer accepting spans");
    ready.store(false, Ordering::Release);
    let _ = stop_ingest_tx.send(true);
    let grpc_result = grpc.await;
    let http_result = otlp_http.await;
    // Every Ingest handle is gone now, so the assembler drains and the writer finishes.
    let _ = assembler.await;
    let _ = writer.await;
    if let Err(e) = embedded.flush().await {
        tracing::warn!(error = %e, "flushing memtables at shutdown failed; the journal will be replayed on start");
    }
    tracing::info!("all assembled traces written");
    let _ = stop_rest_tx.send(true);
    let query_result = query_srv.await;
    let admin_result = admin_srv.await;
    match grpc_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Serve(format!("OTLP gRPC: {e}"))),
        Err(e) => return Err(Error::Serve(format!("OTLP gRPC task: {e}"))),
    }
    for (what, r) in [("OTLP HTTP", http_result), ("query HTTP", query_result), ("admin", admin_result)] {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Serve(format!("{what}: {e}"))),
            Err(e) => return Err(Error::Serve(format!("{what} task: {e}"))),
        }
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Initialises logging to stderr: `RUST_LOG` filter (default `info`, storage engine at `warn`), text or JSON.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lsm_tree=warn,fjall=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}
