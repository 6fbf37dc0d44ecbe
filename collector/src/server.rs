//! The server processes: `skein-all-in-one` (OTLP receivers → assembly → writer → store, plus the query API),
//! `skein-collector` (the ingest half) and `skein-query` (the query half), each with the admin endpoints and an
//! orderly shutdown.
//!
//! Shutdown order: stop accepting OTLP (in-flight requests finish), let the assembler write every held trace and
//! the writer persist it, then stop the query and admin servers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::assembly::{self, AssemblyConfig, Batch};
use crate::ingest::grpc::OtlpGrpc;
use crate::ingest::{Ingest, Limits};
use crate::metrics::Metrics;
use crate::sampling::remote::{self, SamplingGrpc, Strategies};
use crate::storage::embedded::{self, EmbeddedConfig, EmbeddedStore};
use crate::storage::{ImportancePolicy, TraceStore};
use crate::wal::Wal;
use crate::{Error, Result, query, writer};

/// Capacity of the receivers → assembler channel, in export requests (receivers wait when it is full, so this
/// bounds the memory of a burst: 64 requests of a few thousand spans is tens of MB).
pub const INGEST_QUEUE_REQUESTS: usize = 64;
/// Capacity of the assembler → writer channel, in trace chunks.
pub const WRITE_QUEUE_CHUNKS: usize = 8192;

/// How often the embedded store deletes expired partitions and refreshes its storage gauges.
pub const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Which parts of the backend a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receivers, assembly, writer and the query API (`skein-all-in-one`).
    AllInOne,
    /// Receivers, assembly and writer (`skein-collector`).
    Collector,
    /// The query API (`skein-query`).
    Query,
}

impl Role {
    fn ingests(self) -> bool {
        self != Role::Query
    }

    fn queries(self) -> bool {
        self != Role::Collector
    }
}

/// Where traces are stored.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// The embedded store in a local data directory.
    Embedded(EmbeddedConfig),
    /// A ScyllaDB cluster.
    Scylla(crate::storage::scylla::ScyllaConfig),
}

/// PEM files for TLS on the OTLP gRPC receiver (the agents' connection).
#[derive(Clone, Debug)]
pub struct OtlpTls {
    /// Certificate chain served.
    pub cert_file: std::path::PathBuf,
    /// Its private key.
    pub key_file: std::path::PathBuf,
    /// CA bundle client certificates must chain to (mutual TLS); `None`: no client certificate asked for.
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl OtlpTls {
    /// The tonic server TLS configuration from the files.
    ///
    /// # Errors
    /// A file cannot be read (its path and the OS error).
    pub fn load(&self) -> Result<tonic::transport::ServerTlsConfig, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let identity = tonic::transport::Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(tls)
    }
}

/// Settings of the server processes.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// What this process runs.
    pub role: Role,
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// Query HTTP (Jaeger API) listen address.
    pub query_http_addr: SocketAddr,
    /// Query gRPC (`skein.query.v1.QueryService`) listen address.
    pub query_grpc_addr: SocketAddr,
    /// Longest a query may take (HTTP 504, gRPC DEADLINE_EXCEEDED after it).
    pub query_timeout: std::time::Duration,
    /// Spans the hot-trace cache holds (0: no cache).
    pub query_cache_spans: u64,
    /// Bearer tokens the query APIs require ([`query::auth`]); `None`: open.
    pub query_auth_token_file: Option<std::path::PathBuf>,
    /// TLS (and optionally mutual TLS) on the OTLP gRPC receiver; `None`: plaintext.
    pub otlp_tls: Option<OtlpTls>,
    /// Chaos-test hook: storage writes wait while this file exists ([`crate::storage::StallingStore`]).
    pub fault_stall_writes_file: Option<std::path::PathBuf>,
    /// Admin (`/metrics`, `/healthz`, `/readyz`) listen address.
    pub admin_addr: SocketAddr,
    /// Storage backend.
    pub storage: StorageConfig,
    /// Trace assembly settings.
    pub assembly: AssemblyConfig,
    /// Span validation limits.
    pub limits: Limits,
    /// Which traces get the important retention tier.
    pub importance: ImportancePolicy,
    /// Configuration file (tail sampling, remote-sampling strategies), re-read on change.
    pub config_file: Option<std::path::PathBuf>,
    /// How often the configuration file is checked.
    pub config_reload: std::time::Duration,
    /// Write-ahead-log directory.
    pub wal_dir: std::path::PathBuf,
    /// Write-ahead-log budget, bytes.
    pub wal_max_bytes: u64,
    /// Export-request bytes processed at once.
    pub max_inflight_bytes: usize,
    /// Zipkin receiver listen address.
    pub zipkin_addr: SocketAddr,
    /// Remote-sampling HTTP listen address.
    pub sampling_http_addr: SocketAddr,
    /// Remote-sampling gRPC listen address.
    pub sampling_grpc_addr: SocketAddr,
    /// Longest drain after a shutdown signal.
    pub shutdown_timeout: std::time::Duration,
}

impl ServerConfig {
    /// A configuration for tests and embedding: every listener on 127.0.0.1 port 0, the embedded store in
    /// `data_dir` (write-ahead log in `data_dir/wal`), defaults elsewhere.
    pub fn local(role: Role, data_dir: &std::path::Path) -> Self {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Self {
            role,
            otlp_grpc_addr: any,
            otlp_http_addr: any,
            query_http_addr: any,
            query_grpc_addr: any,
            query_timeout: std::time::Duration::from_secs(30),
            query_cache_spans: 200_000,
            query_auth_token_file: None,
            fault_stall_writes_file: None,
            otlp_tls: None,
            admin_addr: any,
            storage: StorageConfig::Embedded(EmbeddedConfig::new(data_dir.to_path_buf())),
            assembly: AssemblyConfig::default(),
            limits: Limits::default(),
            importance: ImportancePolicy::default(),
            config_file: None,
            config_reload: std::time::Duration::from_secs(2),
            wal_dir: data_dir.join("wal"),
            wal_max_bytes: 1 << 30,
            max_inflight_bytes: crate::ingest::DEFAULT_MAX_INFLIGHT_BYTES,
            zipkin_addr: any,
            sampling_http_addr: any,
            sampling_grpc_addr: any,
            shutdown_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// The addresses actually bound (useful with port 0); `None` for the parts the role does not run.
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    /// OTLP/gRPC.
    pub otlp_grpc: Option<SocketAddr>,
    /// OTLP/HTTP.
    pub otlp_http: Option<SocketAddr>,
    /// Query HTTP.
    pub query_http: Option<SocketAddr>,
    /// Query gRPC.
    pub query_grpc: Option<SocketAddr>,
    /// Zipkin receiver.
    pub zipkin: Option<SocketAddr>,
    /// Remote-sampling HTTP.
    pub sampling_http: Option<SocketAddr>,
    /// Remote-sampling gRPC.
    pub sampling_grpc: Option<SocketAddr>,
    /// Admin.
    pub admin: SocketAddr,
}

async fn bind_if(on: bool, addr: SocketAddr, what: &'static str) -> Result<Option<TcpListener>> {
    if on { Ok(Some(bind(addr, what).await?)) } else { Ok(None) }
}

fn local(l: &Option<TcpListener>) -> Result<Option<SocketAddr>> {
    Ok(match l {
        Some(l) => Some(l.local_addr()?),
        None => None,
    })
}

fn addr_or_dash(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "-".to_string(), |a| a.to_string())
}

type ServeTask = tokio::task::JoinHandle<std::io::Result<()>>;

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

/// Runs the configured role until `shutdown` completes, then drains and returns.
///
/// `on_bound` is called once every listener is bound.
///
/// # Errors
/// [`Error::Bind`] when a listen address is taken, [`Error::Store`] when storage cannot be opened,
/// [`Error::Serve`] when a server fails.
pub async fn run_server(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(BoundAddrs),
) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let role = config.role;
    let loaded = match &config.config_file {
        Some(path) => crate::config::load(path).map_err(|e| Error::Config(e.to_string()))?,
        None => crate::config::Loaded::default(),
    };
    let (store, embedded): (Arc<dyn TraceStore>, Option<EmbeddedStore>) = match &config.storage {
        StorageConfig::Embedded(c) => {
            let e = EmbeddedStore::open(c)?;
            (Arc::new(e.clone()), Some(e))
        }
        StorageConfig::Scylla(c) => (Arc::new(crate::storage::scylla::ScyllaStore::connect(c.clone()).await?), None),
    };
    let store: Arc<dyn TraceStore> = match &config.fault_stall_writes_file {
        Some(path) => {
            tracing::warn!(path = %path.display(), "fault injection: storage writes stall while this file exists");
            Arc::new(crate::storage::StallingStore::new(store, path.clone()))
        }
        None => store,
    };

    let ingests = role.ingests();
    // Certificate files are read before anything binds, so a bad path fails the start, not a half-started server.
    let otlp_tls = match (&config.otlp_tls, ingests) {
        (Some(tls), true) => Some(tls.load().map_err(Error::Config)?),
        _ => None,
    };
    let grpc_listener = bind_if(ingests, config.otlp_grpc_addr, "OTLP gRPC").await?;
    let http_listener = bind_if(ingests, config.otlp_http_addr, "OTLP HTTP").await?;
    let zipkin_listener = bind_if(ingests, config.zipkin_addr, "Zipkin").await?;
    let sampling_http_listener = bind_if(ingests, config.sampling_http_addr, "remote sampling HTTP").await?;
    let sampling_grpc_listener = bind_if(ingests, config.sampling_grpc_addr, "remote sampling gRPC").await?;
    let query_listener = bind_if(role.queries(), config.query_http_addr, "query HTTP").await?;
    let query_grpc_listener = bind_if(role.queries(), config.query_grpc_addr, "query gRPC").await?;
    let admin_listener = bind(config.admin_addr, "admin").await?;
    let bound = BoundAddrs {
        otlp_grpc: local(&grpc_listener)?,
        otlp_http: local(&http_listener)?,
        query_http: local(&query_listener)?,
        query_grpc: local(&query_grpc_listener)?,
        zipkin: local(&zipkin_listener)?,
        sampling_http: local(&sampling_http_listener)?,
        sampling_grpc: local(&sampling_grpc_listener)?,
        admin: admin_listener.local_addr()?,
    };
    let storage = match &config.storage {
        StorageConfig::Embedded(c) => format!("embedded:{}", c.data_dir.display()),
        StorageConfig::Scylla(c) => format!("scylla:{}/{}", c.nodes.join(","), c.schema.keyspace),
    };
    tracing::info!(
        otlp_grpc = %addr_or_dash(bound.otlp_grpc),
        otlp_http = %addr_or_dash(bound.otlp_http),
        zipkin = %addr_or_dash(bound.zipkin),
        sampling_http = %addr_or_dash(bound.sampling_http),
        sampling_grpc = %addr_or_dash(bound.sampling_grpc),
        query_http = %addr_or_dash(bound.query_http),
        query_grpc = %addr_or_dash(bound.query_grpc),
        admin = %bound.admin,
        storage = %storage,
        "listening"
    );
    on_bound(bound);

    let (stop_ingest_tx, stop_ingest) = watch::channel(false);
    let (stop_rest_tx, stop_rest) = watch::channel(false);

    // Admin and query first: /healthz answers and /readyz says "not ready" while the log replays.
    let mut rest_tasks: Vec<(&str, ServeTask)> = Vec::new();
    // Queries read through the hot-trace cache; ingest writes to the store itself.
    // (A collector, which serves no queries, gets none.)
    let query_store: Arc<dyn TraceStore> = match config.query_cache_spans {
        spans if spans > 0 && role.queries() => {
            Arc::new(query::cache::CachedStore::new(store.clone(), spans, metrics.clone()))
        }
        _ => store.clone(),
    };
    let query_tokens = match (&config.query_auth_token_file, role.queries()) {
        (Some(path), true) => Some(
            query::auth::TokenFile::open(path, metrics.clone())
                .map_err(|e| Error::Serve(format!("--query-auth-token-file: {e}")))?,
        ),
        _ => None,
    };
    if let Some(query_listener) = query_listener {
        let router = query::router(query_store.clone(), metrics.clone(), config.query_timeout, query_tokens.clone());
        let query_srv =
            axum::serve(nodelay(query_listener), router).with_graceful_shutdown(wait_for(stop_rest.clone()));
        rest_tasks.push(("query HTTP", tokio::spawn(async move { query_srv.await })));
    }
    if let Some(listener) = query_grpc_listener {
        let query_grpc = tonic::transport::Server::builder()
            .add_service(
                query::grpc::QueryGrpc::new(query_store.clone(), metrics.clone())
                    .with_timeout(config.query_timeout)
                    .server(query_tokens.clone()),
            )
            .serve_with_incoming_shutdown(
                skein_proto::otlp_grpc::nodelay_incoming(listener),
                wait_for(stop_rest.clone()),
            );
        rest_tasks.push(("query gRPC", tokio::spawn(async move { query_grpc.await.map_err(std::io::Error::other) })));
    }
    let admin_srv = axum::serve(admin_listener, admin_router(metrics.clone(), ready.clone()))
        .with_graceful_shutdown(wait_for(stop_rest.clone()));
    rest_tasks.push(("admin", tokio::spawn(async move { admin_srv.await })));

    let mut ingest_tasks: Vec<(&str, ServeTask)> = Vec::new();
    let mut pipeline = None;
    let mut wal_handle: Option<Wal> = None;
    if let (Some(grpc_listener), Some(http_listener), Some(zipkin_listener), Some(sh), Some(sg)) =
        (grpc_listener, http_listener, zipkin_listener, sampling_http_listener, sampling_grpc_listener)
    {
        let (wal, records) = Wal::open(&config.wal_dir, config.wal_max_bytes, metrics.clone())
            .map_err(|e| Error::Serve(format!("write-ahead log in {}: {e}", config.wal_dir.display())))?;
        wal_handle = Some(wal.clone());
        {
            // Segments are deleted as soon as they are released, even when no request arrives to trigger it.
            let wal = wal.clone();
            let mut stop = stop_rest.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => wal.collect().await,
                        _ = stop.changed() => return,
                    }
                }
            });
        }
        let strategies = Strategies::new(loaded.strategies.clone());
        let (tail_tx, tail_rx) = watch::channel(loaded.config.tail_sampling.clone());
        // Without a file the sender is dropped here and the assembler keeps its initial policies.
        if let Some(path) = &config.config_file {
            let mut updates = crate::config::watch(path.clone(), loaded.clone(), config.config_reload, metrics.clone());
            let strategies = strategies.clone();
            tokio::spawn(async move {
                while updates.changed().await.is_ok() {
                    let l = updates.borrow_and_update().clone();
                    strategies.replace(l.strategies.clone());
                    if tail_tx.send(l.config.tail_sampling.clone()).is_err() {
                        return;
                    }
                }
            });
        }
        let (span_tx, span_rx) = mpsc::channel(INGEST_QUEUE_REQUESTS);
        let (chunk_tx, chunk_rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
        let refs = wal.refs().clone();
        let assembler = tokio::spawn(assembly::run(
            config.assembly.clone(),
            metrics.clone(),
            Some(refs.clone()),
            tail_rx,
            span_rx,
            chunk_tx,
        ));
        let writer =
            tokio::spawn(writer::run(store.clone(), metrics.clone(), config.importance, Some(refs.clone()), chunk_rx));
        pipeline = Some((assembler, writer));
        replay(records, &config.limits, &refs, &metrics, &span_tx).await;

        let ingest = Ingest::new(config.limits.clone(), metrics.clone(), span_tx)
            .with_wal(wal)
            .with_max_inflight_bytes(config.max_inflight_bytes);
        let mut grpc_server = tonic::transport::Server::builder();
        if let Some(tls) = otlp_tls {
            grpc_server = grpc_server.tls_config(tls).map_err(|e| Error::Config(format!("OTLP gRPC TLS: {e}")))?;
        }
        let grpc = grpc_server.add_service(OtlpGrpc::new(ingest.clone()).server()).serve_with_incoming_shutdown(
            skein_proto::otlp_grpc::nodelay_incoming(grpc_listener),
            wait_for(stop_ingest.clone()),
        );
        ingest_tasks.push(("OTLP gRPC", tokio::spawn(async move { grpc.await.map_err(std::io::Error::other) })));
        let otlp_http = axum::serve(nodelay(http_listener), crate::ingest::http::router(ingest.clone()))
            .with_graceful_shutdown(wait_for(stop_ingest.clone()));
        ingest_tasks.push(("OTLP HTTP", tokio::spawn(async move { otlp_http.await })));
        let zipkin = axum::serve(nodelay(zipkin_listener), crate::ingest::zipkin::router(ingest))
            .with_graceful_shutdown(wait_for(stop_ingest.clone()));
        ingest_tasks.push(("Zipkin", tokio::spawn(async move { zipkin.await })));
        let sampling_http = axum::serve(sh, remote::http_router(strategies.clone(), metrics.clone()))
            .with_graceful_shutdown(wait_for(stop_rest.clone()));
        rest_tasks.push(("remote sampling HTTP", tokio::spawn(async move { sampling_http.await })));
        let sampling_grpc = tonic::transport::Server::builder()
            .add_service(SamplingGrpc::new(strategies, metrics.clone()).server())
            .serve_with_incoming_shutdown(skein_proto::otlp_grpc::nodelay_incoming(sg), wait_for(stop_rest.clone()));
        rest_tasks.push((
            "remote sampling gRPC",
            tokio::spawn(async move { sampling_grpc.await.map_err(std::io::Error::other) }),
        ));
    }
    let retention = match (&embedded, role.ingests()) {
        (Some(e), true) => {
            embedded::export_storage_gauges(e, &metrics);
            Some(tokio::spawn(embedded::run_retention(
                e.clone(),
                metrics.clone(),
                RETENTION_INTERVAL,
                stop_rest.clone(),
            )))
        }
        _ => None,
    };
    ready.store(true, Ordering::Release);
    tracing::info!("ready");

    shutdown.await;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: no longer accepting spans");
    ready.store(false, Ordering::Release);
    let _ = stop_ingest_tx.send(true);
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    let mut results = Vec::new();
    for (what, task) in ingest_tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(r) => results.push((what, r)),
            Err(_) => tracing::warn!(what, "receiver did not stop before the shutdown timeout"),
        }
    }
    let mut drained = true;
    if let Some((assembler, writer)) = pipeline {
        // Every Ingest handle is gone now, so the assembler decides every held trace and the writer finishes.
        let drain = async {
            let _ = assembler.await;
            let _ = writer.await;
        };
        if tokio::time::timeout_at(deadline, drain).await.is_err() {
            drained = false;
            tracing::warn!(
                "shutdown timeout reached before every trace was written; the write-ahead log keeps the rest for the next start"
            );
        } else {
            tracing::info!("all held traces decided and written");
            if let Some(wal) = &wal_handle {
                wal.rotate_and_collect().await;
            }
        }
    }
    if let Some(e) = &embedded
        && let Err(e) = e.flush().await
    {
        tracing::warn!(error = %e, "flushing memtables at shutdown failed; the journal will be replayed on start");
    }
    let _ = stop_rest_tx.send(true);
    for (what, task) in rest_tasks {
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(r) => results.push((what, r)),
            Err(_) => tracing::warn!(what, "server did not stop in time"),
        }
    }
    if let Some(r) = retention {
        let _ = r.await;
    }
    if !drained {
        return Ok(());
    }
    for (what, r) in results {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Serve(format!("{what}: {e}"))),
            Err(e) => return Err(Error::Serve(format!("{what} task: {e}"))),
        }
    }
    Ok(())
}

/// Feeds the write-ahead log's records back into the pipeline (before the receivers open).
async fn replay(
    records: Vec<crate::wal::Record>,
    limits: &Limits,
    refs: &crate::wal::SegmentRefs,
    metrics: &Metrics,
    spans: &mpsc::Sender<Batch>,
) {
    use prost::Message as _;
    if records.is_empty() {
        return;
    }
    let n = records.len();
    let started = std::time::Instant::now();
    let mut replayed = 0u64;
    for r in records {
        let request = match skein_proto::otlp_collector_trace::ExportTraceServiceRequest::decode(r.payload.as_slice()) {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(seq = r.seq, error = %e, "undecodable write-ahead-log record skipped");
                metrics.wal_corrupt_records.inc();
                refs.release(r.seq);
                continue;
            }
        };
        let converted = crate::ingest::convert(request.resource_spans, limits);
        if converted.spans.is_empty() {
            refs.release(r.seq);
            continue;
        }
        replayed += converted.spans.len() as u64;
        if spans.send(Batch { spans: converted.spans, wal_seq: Some(r.seq), replayed: true }).await.is_err() {
            return;
        }
    }
    metrics.wal_replayed_spans.inc_by(replayed);
    tracing::info!(
        records = n,
        spans = replayed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "write-ahead log replayed"
    );
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

/// `listener` with `TCP_NODELAY` set on every accepted connection (small responses are not held by Nagle's
/// algorithm for the peer's delayed ACK).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    })
}
