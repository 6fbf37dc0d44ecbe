//! The server processes: `skein-all-in-one` (every component), `skein-collector` (ingest and remote sampling) and
//! `skein-query` (the query service), each the union of the components it [`Runs`] plus the admin endpoints.
//!
//! Components, each started on its own with a handle to stop it: ingest (`skein_ingest::pipeline`), remote
//! sampling (`skein_ingest::sampling::remote::start`), query (`skein_query::start`), admin ([`crate::admin`]) and,
//! on the embedded store, retention. Shutdown order: stop accepting spans and drain the pipeline (every held trace
//! decided and written), flush the store, then stop remote sampling, query and admin.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use skein_ingest::metrics::Metrics;
use skein_ingest::pipeline::{IngestConfig, IngestHandle, Listeners, OtlpTls};
use skein_ingest::sampling::remote::{self, Strategies};
use skein_query::QueryConfig;
use skein_query::metrics::QueryMetrics;
use skein_runtime::Servers;
use skein_storage::TraceStore;
use skein_storage::embedded::{self, EmbeddedConfig, EmbeddedStore};
use skein_storage::metrics::StorageMetrics;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{Error, Result, admin};

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

/// What a binary runs, fixed at compile time: [`run_server`] starts only the components of `R`, so the
/// `skein-query` binary does not link the ingest pipeline and `skein-collector` does not link the query service.
/// (A component left out is never referenced: the query service is started by a plain call behind a constant
/// condition, and the ingest side, whose start and shutdown are awaited, is a type — [`NoIngest`] awaits nothing.)
pub trait Runs {
    /// The role (flag defaults and logs).
    const ROLE: Role;
    /// Runs the query component.
    const QUERY: bool;
    /// The ingest side: [`Ingesting`] (receivers, write-ahead log, assembly, writer, remote sampling) or
    /// [`NoIngest`].
    type Ingest: IngestSide;
}

/// `skein-all-in-one`: everything.
pub struct AllInOne;
/// `skein-collector`: ingest and remote sampling.
pub struct Collector;
/// `skein-query`: the query service.
pub struct Query;

impl Runs for AllInOne {
    const ROLE: Role = Role::AllInOne;
    const QUERY: bool = true;
    type Ingest = Ingesting;
}

impl Runs for Collector {
    const ROLE: Role = Role::Collector;
    const QUERY: bool = false;
    type Ingest = Ingesting;
}

impl Runs for Query {
    const ROLE: Role = Role::Query;
    const QUERY: bool = true;
    type Ingest = NoIngest;
}

/// What the ingest side needs to start: its listeners and everything shared with the rest of the process.
pub struct IngestStart<'a> {
    /// The server configuration.
    pub config: &'a ServerConfig,
    /// OTLP gRPC, OTLP HTTP, Zipkin.
    pub listeners: Listeners,
    /// Remote sampling HTTP and gRPC.
    pub sampling: (TcpListener, TcpListener),
    /// TLS of the OTLP gRPC receiver, read already.
    pub otlp_tls: Option<skein_ingest::pipeline::ServerTlsConfig>,
    /// The store spans are written to.
    pub store: Arc<dyn TraceStore>,
    /// The ingest metrics.
    pub metrics: Arc<Metrics>,
    /// The configuration file as loaded at start.
    pub loaded: skein_ingest::reload::Loaded,
}

/// The ingest side of a binary, started and stopped by [`run_server`].
pub trait IngestSide: Sized + Send {
    /// Whether it runs anything (its listeners are bound only then).
    const RUNS: bool;

    /// Starts it.
    ///
    /// # Errors
    /// A message when a part cannot start.
    fn start(start: IngestStart<'_>) -> impl Future<Output = std::result::Result<Self, String>> + Send;

    /// Stops accepting spans and drains by `deadline`; whether everything was written.
    ///
    /// # Errors
    /// A part that failed while serving.
    fn shutdown(self, deadline: tokio::time::Instant)
    -> impl Future<Output = std::result::Result<bool, String>> + Send;
}

/// No ingest side (`skein-query`).
pub struct NoIngest;

impl IngestSide for NoIngest {
    const RUNS: bool = false;

    fn start(_: IngestStart<'_>) -> impl Future<Output = std::result::Result<Self, String>> + Send {
        std::future::ready(Ok(NoIngest))
    }

    fn shutdown(self, _: tokio::time::Instant) -> impl Future<Output = std::result::Result<bool, String>> + Send {
        std::future::ready(Ok(true))
    }
}

/// The running ingest side: the ingest component, remote sampling and the configuration reload.
pub struct Ingesting {
    ingest: IngestHandle,
    sampling: Servers,
    reloads: Servers,
}

impl IngestSide for Ingesting {
    const RUNS: bool = true;

    async fn start(start: IngestStart<'_>) -> std::result::Result<Self, String> {
        let IngestStart { config, listeners, sampling, otlp_tls, store, metrics, loaded } = start;
        let strategies = Strategies::new(loaded.strategies.clone());
        let (tail_tx, tail_rx) = watch::channel(loaded.config.tail_sampling.clone());
        let mut reloads = Servers::default();
        // Without a file the sender is dropped here and the assembler keeps its initial policies.
        if let Some(path) = &config.config_file {
            let mut updates = skein_ingest::reload::watch(path.clone(), loaded, config.config_reload, metrics.clone());
            let strategies = strategies.clone();
            let stopping = reloads.stopping();
            reloads.spawn("configuration reload", async move {
                tokio::pin!(stopping);
                loop {
                    tokio::select! {
                        changed = updates.changed() => if changed.is_err() { return Ok(()) },
                        _ = &mut stopping => return Ok(()),
                    }
                    let l = updates.borrow_and_update().clone();
                    strategies.replace(l.strategies.clone());
                    if tail_tx.send(l.config.tail_sampling.clone()).is_err() {
                        return Ok(());
                    }
                }
            });
        }
        let ingest =
            skein_ingest::pipeline::start(&config.ingest, listeners, otlp_tls, store, metrics.clone(), tail_rx).await?;
        let sampling = remote::start(strategies, metrics, sampling.0, sampling.1);
        Ok(Ingesting { ingest, sampling, reloads })
    }

    async fn shutdown(self, deadline: tokio::time::Instant) -> std::result::Result<bool, String> {
        let _ = self.reloads.shutdown(skein_runtime::STOP_TIMEOUT).await;
        let drained = self.ingest.shutdown(deadline).await;
        // Remote sampling answers until the pipeline has drained, as the other servers do.
        let sampling = self.sampling.shutdown(skein_runtime::STOP_TIMEOUT).await;
        let drained = drained?;
        sampling.map(|()| drained)
    }
}

/// Where traces are stored.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// The embedded store in a local data directory.
    Embedded(EmbeddedConfig),
    /// A ScyllaDB cluster.
    Scylla(skein_storage::scylla::ScyllaConfig),
}

/// Settings of the server processes.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// OTLP/gRPC listen address.
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    pub otlp_http_addr: SocketAddr,
    /// Query HTTP (Jaeger API) listen address.
    pub query_http_addr: SocketAddr,
    /// Query gRPC (`skein.query.v1.QueryService`) listen address.
    pub query_grpc_addr: SocketAddr,
    /// The query component's settings.
    pub query: QueryConfig,
    /// TLS (and optionally mutual TLS) on the OTLP gRPC receiver; `None`: plaintext.
    pub otlp_tls: Option<OtlpTls>,
    /// Chaos-test hook (feature `fault-injection`): storage writes wait while this file exists
    /// (`skein_storage::fault::StallingStore`); without the feature, setting it is a configuration error.
    pub fault_stall_writes_file: Option<std::path::PathBuf>,
    /// Admin (`/metrics`, `/healthz`, `/readyz`) listen address.
    pub admin_addr: SocketAddr,
    /// Storage backend.
    pub storage: StorageConfig,
    /// The ingest component's settings (assembly, limits, retention tier, write-ahead log, in-flight bytes).
    pub ingest: IngestConfig,
    /// Configuration file (tail sampling, remote-sampling strategies), re-read on change.
    pub config_file: Option<std::path::PathBuf>,
    /// How often the configuration file is checked.
    pub config_reload: std::time::Duration,
    /// Zipkin receiver listen address.
    pub zipkin_addr: SocketAddr,
    /// Remote-sampling HTTP listen address.
    pub sampling_http_addr: SocketAddr,
    /// Remote-sampling gRPC listen address.
    pub sampling_grpc_addr: SocketAddr,
    /// Longest drain after a shutdown signal.
    pub shutdown_timeout: std::time::Duration,
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

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
}

/// Opens the configured store (wrapped in the chaos tests' stalling store when asked for and built in).
async fn open_store(config: &ServerConfig) -> Result<(Arc<dyn TraceStore>, Option<EmbeddedStore>)> {
    let (store, embedded): (Arc<dyn TraceStore>, Option<EmbeddedStore>) = match &config.storage {
        StorageConfig::Embedded(c) => {
            let e = EmbeddedStore::open(c)?;
            (Arc::new(e.clone()), Some(e))
        }
        StorageConfig::Scylla(c) => (Arc::new(skein_storage::scylla::ScyllaStore::connect(c.clone()).await?), None),
    };
    match &config.fault_stall_writes_file {
        None => Ok((store, embedded)),
        #[cfg(feature = "fault-injection")]
        Some(path) => {
            tracing::warn!(path = %path.display(), "fault injection: storage writes stall while this file exists");
            Ok((Arc::new(skein_storage::fault::StallingStore::new(store, path.clone())), embedded))
        }
        #[cfg(not(feature = "fault-injection"))]
        Some(_) => Err(Error::Config(
            "--fault-stall-writes-file needs a build with the `fault-injection` feature (chaos tests only)".into(),
        )),
    }
}

/// Runs the components of `R` with `config` until `shutdown` completes, then drains and returns.
///
/// `on_bound` is called once every listener is bound.
///
/// # Errors
/// [`Error::Bind`] when a listen address is taken, [`Error::Store`] when storage cannot be opened,
/// [`Error::Config`] for an unusable configuration file or TLS files, [`Error::Serve`] when a server fails.
pub async fn run_server<R: Runs>(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(BoundAddrs),
) -> Result<()> {
    let mut registry = Registry::with_prefix("skein");
    let ingest_metrics = Arc::new(Metrics::register(&mut registry));
    let query_metrics = Arc::new(QueryMetrics::register(&mut registry));
    let storage_metrics = Arc::new(StorageMetrics::register(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let loaded = match (&config.config_file, R::Ingest::RUNS) {
        (Some(path), true) => skein_ingest::reload::load(path).map_err(|e| Error::Config(e.to_string()))?,
        _ => skein_ingest::reload::Loaded::default(),
    };
    let (store, embedded) = open_store(&config).await?;
    // Certificate files are read before anything binds, so a bad path fails the start, not a half-started server.
    let otlp_tls = match (&config.otlp_tls, R::Ingest::RUNS) {
        (Some(tls), true) => Some(tls.load().map_err(Error::Config)?),
        _ => None,
    };
    let grpc_listener = bind_if(R::Ingest::RUNS, config.otlp_grpc_addr, "OTLP gRPC").await?;
    let http_listener = bind_if(R::Ingest::RUNS, config.otlp_http_addr, "OTLP HTTP").await?;
    let zipkin_listener = bind_if(R::Ingest::RUNS, config.zipkin_addr, "Zipkin").await?;
    let sampling_http_listener = bind_if(R::Ingest::RUNS, config.sampling_http_addr, "remote sampling HTTP").await?;
    let sampling_grpc_listener = bind_if(R::Ingest::RUNS, config.sampling_grpc_addr, "remote sampling gRPC").await?;
    let query_listener = bind_if(R::QUERY, config.query_http_addr, "query HTTP").await?;
    let query_grpc_listener = bind_if(R::QUERY, config.query_grpc_addr, "query gRPC").await?;
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

    // Admin and query first: /healthz answers and /readyz says "not ready" while the log replays.
    let admin = admin::start(registry, ready.clone(), admin_listener);
    let query = match (query_listener, query_grpc_listener) {
        (Some(http), Some(grpc)) if R::QUERY => {
            Some(skein_query::start(&config.query, store.clone(), query_metrics, http, grpc).map_err(Error::Serve)?)
        }
        _ => None,
    };
    let ingest = match (grpc_listener, http_listener, zipkin_listener, sampling_http_listener, sampling_grpc_listener) {
        (Some(otlp_grpc), Some(otlp_http), Some(zipkin), Some(sampling_http), Some(sampling_grpc)) => {
            let start = IngestStart {
                config: &config,
                listeners: Listeners { otlp_grpc, otlp_http, zipkin },
                sampling: (sampling_http, sampling_grpc),
                otlp_tls,
                store: store.clone(),
                metrics: ingest_metrics,
                loaded,
            };
            Some(R::Ingest::start(start).await.map_err(Error::Serve)?)
        }
        _ => None,
    };
    let mut retention = Servers::default();
    if let (Some(e), true) = (&embedded, R::Ingest::RUNS) {
        embedded::export_storage_gauges(e, &storage_metrics);
        let (e, stopping) = (e.clone(), retention.stopping());
        retention.spawn("retention", async move {
            embedded::run_retention(e, storage_metrics, RETENTION_INTERVAL, stopping).await;
            Ok(())
        });
    }
    ready.store(true, Ordering::Release);
    tracing::info!("ready");

    shutdown.await;
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: no longer accepting spans");
    ready.store(false, Ordering::Release);
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    let outcome = match ingest {
        Some(ingest) => ingest.shutdown(deadline).await,
        None => Ok(true),
    };
    if let Some(e) = &embedded
        && let Err(e) = e.flush().await
    {
        tracing::warn!(error = %e, "flushing memtables at shutdown failed; the journal will be replayed on start");
    }
    let mut stopped = Vec::new();
    for servers in [query, Some(admin)].into_iter().flatten() {
        stopped.push(servers.shutdown(skein_runtime::STOP_TIMEOUT).await);
    }
    let _ = retention.shutdown(skein_runtime::STOP_TIMEOUT).await;
    match outcome {
        // Not everything was written: the write-ahead log keeps the rest, and the exit is still orderly.
        Ok(false) => Ok(()),
        Ok(true) => stopped.into_iter().collect::<std::result::Result<(), String>>().map_err(Error::Serve),
        Err(e) => Err(Error::Serve(e)),
    }
}
