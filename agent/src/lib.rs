//! `skein-agent`: the sidecar in every traced pod.
//!
//! Apps' OpenTelemetry SDKs send OTLP to it on localhost ([`receive`]); it enriches, head-samples and redacts
//! ([`process`]), buffers in memory then on disk ([`buffer`], [`spill`]), and forwards batches to the collectors,
//! routed by trace ID ([`route`], [`forward`]). It also proxies Jaeger remote sampling ([`sampling`]) and serves
//! `/metrics` and `/healthz` on the admin port ([`metrics`]). It never blocks or fails the app's export call.

pub mod buffer;
pub mod config;
pub mod entry;
pub mod forward;
pub mod metrics;
pub mod process;
pub mod receive;
pub mod route;
pub mod sampling;
pub mod spill;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::buffer::Buffer;
use crate::config::AgentConfig;
use crate::forward::{ForwardConfig, Forwarder};
use crate::metrics::Metrics;
use crate::process::Processor;
use crate::receive::Receiver;
use crate::sampling::SamplingProxy;

/// Command-line settings (every flag also reads a `SKEIN_*` environment variable).
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "skein-agent", version, about = "Skein's sidecar agent")]
pub struct Settings {
    /// OTLP/gRPC listen address (the app's SDK exports here).
    #[arg(long, env = "SKEIN_OTLP_GRPC_ADDR", default_value = "127.0.0.1:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "SKEIN_OTLP_HTTP_ADDR", default_value = "127.0.0.1:4318")]
    pub otlp_http_addr: SocketAddr,
    /// Jaeger remote-sampling proxy listen address.
    #[arg(long, env = "SKEIN_SAMPLING_ADDR", default_value = "127.0.0.1:5778")]
    pub sampling_addr: SocketAddr,
    /// Admin listen address (`/metrics`, `/healthz`; probed by the kubelet, scraped by Prometheus).
    #[arg(long, env = "SKEIN_ADMIN_ADDR", default_value = "0.0.0.0:14271")]
    pub admin_addr: SocketAddr,
    /// Collectors by DNS name (`NAME:PORT`, the pipeline's headless Service): every A/AAAA record is an
    /// endpoint, re-resolved every `--dns-refresh-ms`.
    #[arg(long, env = "SKEIN_COLLECTOR_DNS")]
    pub collector_dns: Option<String>,
    /// Collectors as a static list of `HOST:PORT` (comma-separated or repeated).
    #[arg(long = "collector", env = "SKEIN_COLLECTORS", value_delimiter = ',')]
    pub collectors: Vec<String>,
    /// DNS re-resolution interval, milliseconds.
    #[arg(long, env = "SKEIN_DNS_REFRESH_MS", default_value_t = 5_000)]
    pub dns_refresh_ms: u64,
    /// The collectors' remote-sampling HTTP base URL; default `http://<first collector host>:5778`.
    #[arg(long, env = "SKEIN_SAMPLING_UPSTREAM")]
    pub sampling_upstream: Option<String>,
    /// Remote-sampling cache refresh interval, milliseconds.
    #[arg(long, env = "SKEIN_SAMPLING_REFRESH_MS", default_value_t = 60_000)]
    pub sampling_refresh_ms: u64,
    /// Memory buffer bound, bytes (encoded spans plus 64 bytes per request).
    #[arg(long, env = "SKEIN_MEMORY_MAX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub memory_max_bytes: usize,
    /// Spill directory (a pod volume); without it, a full memory buffer drops by policy.
    #[arg(long, env = "SKEIN_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Spill directory bound, bytes.
    #[arg(long, env = "SKEIN_SPILL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub spill_max_bytes: u64,
    /// Send a batch once it holds this many spans…
    #[arg(long, env = "SKEIN_BATCH_MAX_SPANS", default_value_t = 8192)]
    pub batch_max_spans: u64,
    /// …or this many bytes…
    #[arg(long, env = "SKEIN_BATCH_MAX_BYTES", default_value_t = 1024 * 1024)]
    pub batch_max_bytes: usize,
    /// …or when its oldest span has waited this long, milliseconds.
    #[arg(long, env = "SKEIN_BATCH_TIMEOUT_MS", default_value_t = 200)]
    pub batch_timeout_ms: u64,
    /// Largest export request sent to a collector (uncompressed), bytes; below gRPC's 4 MiB default limit.
    #[arg(long, env = "SKEIN_MAX_REQUEST_BYTES", default_value_t = 4 * 1024 * 1024 - 64 * 1024)]
    pub max_request_bytes: usize,
    /// PEM CA bundle: connect to the collectors with TLS, verifying their certificates against it (for the name
    /// in `--collector`/`--collector-dns`). Read at each connection: a file that appears or changes later applies
    /// then; until it exists the collectors count as down and spans wait in the buffer.
    #[arg(long, env = "SKEIN_COLLECTOR_TLS_CA")]
    pub collector_tls_ca: Option<PathBuf>,
    /// PEM client certificate chain presented to collectors that require mutual TLS (with `--collector-tls-key`
    /// and `--collector-tls-ca`).
    #[arg(long, env = "SKEIN_COLLECTOR_TLS_CERT", requires_all = ["collector_tls_key", "collector_tls_ca"])]
    pub collector_tls_cert: Option<PathBuf>,
    /// PEM private key of `--collector-tls-cert`.
    #[arg(long, env = "SKEIN_COLLECTOR_TLS_KEY", requires = "collector_tls_cert")]
    pub collector_tls_key: Option<PathBuf>,
    /// YAML file: redaction rules and head sampling (see `skein_agent::config`).
    #[arg(long, env = "SKEIN_CONFIG", conflicts_with = "config_yaml")]
    pub config: Option<PathBuf>,
    /// The same YAML inline (the injection webhook passes the pipeline's redaction rules this way, so a pod needs
    /// no ConfigMap in its own namespace).
    #[arg(long, env = "SKEIN_CONFIG_YAML")]
    pub config_yaml: Option<String>,
    /// On SIGTERM, keep sending for at most this long, milliseconds; what is left goes to the spill directory.
    #[arg(long, env = "SKEIN_SHUTDOWN_TIMEOUT_MS", default_value_t = 5_000)]
    pub shutdown_timeout_ms: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "SKEIN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Addresses the agent listens on (port 0 in the settings gives a free port).
#[derive(Clone, Copy, Debug)]
pub struct BoundAddrs {
    /// OTLP/gRPC.
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP.
    pub otlp_http: SocketAddr,
    /// Remote-sampling proxy.
    pub sampling: SocketAddr,
    /// Admin.
    pub admin: SocketAddr,
}

/// A started agent.
pub struct Running {
    /// Where it listens.
    pub addrs: BoundAddrs,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    forwarder: JoinHandle<()>,
    servers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, sends what it can within the shutdown timeout, spills the rest, and returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for s in self.servers {
            let _ = s.await;
        }
        let _ = self.forwarder.await;
    }
}

async fn serve(listener: tokio::net::TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // Small responses must not wait for Nagle's algorithm (40 ms with delayed ACKs).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// Starts the agent: receivers, sampling proxy, admin server, endpoint resolution and the forwarder.
///
/// # Errors
/// Bad settings (no collectors, unreadable config or CA), an unusable spill directory, or a port in use.
pub async fn start(s: Settings) -> anyhow::Result<Running> {
    let config = match (&s.config, &s.config_yaml) {
        (Some(path), _) => AgentConfig::load(path)?,
        (None, Some(yaml)) => AgentConfig::parse(yaml).context("--config-yaml")?,
        (None, None) => AgentConfig::default(),
    };
    let mut names = s.collectors.clone();
    names.extend(s.collector_dns.clone());
    anyhow::ensure!(!names.is_empty(), "no collectors: set --collector-dns NAME:PORT or --collector HOST:PORT");
    for n in &names {
        route::split_host_port(n).map_err(anyhow::Error::msg)?;
    }
    let tls = s.collector_tls_ca.as_ref().map(|ca| forward::TlsFiles {
        ca: ca.clone(),
        client: s.collector_tls_cert.clone().zip(s.collector_tls_key.clone()),
    });
    if let Some(Err(e)) = tls.as_ref().map(forward::TlsFiles::load) {
        tracing::warn!(error = %e, "collector TLS files not readable yet; spans are buffered until they are");
    }
    let metrics = Arc::new(Metrics::new());
    let processor = Arc::new(Processor::new(&config, |k| std::env::var(k).ok())?);
    let spill = s.spill_dir.as_deref().map(|d| (d, s.spill_max_bytes));
    let buffer =
        Arc::new(Buffer::new(s.memory_max_bytes, spill, metrics.clone()).context("opening the spill directory")?);

    let (shutdown, stop_rx) = watch::channel(false);
    let bind =
        |a: SocketAddr| async move { tokio::net::TcpListener::bind(a).await.with_context(|| format!("binding {a}")) };
    let (grpc_l, http_l, sampling_l, admin_l) = (
        bind(s.otlp_grpc_addr).await?,
        bind(s.otlp_http_addr).await?,
        bind(s.sampling_addr).await?,
        bind(s.admin_addr).await?,
    );
    let addrs = BoundAddrs {
        otlp_grpc: grpc_l.local_addr()?,
        otlp_http: http_l.local_addr()?,
        sampling: sampling_l.local_addr()?,
        admin: admin_l.local_addr()?,
    };

    let (targets_tx, targets_rx) = watch::channel(route::resolve(&names).await);
    let routes = Arc::new(route::Routes::new(targets_rx));
    let receiver = Receiver::new(buffer.clone(), processor, routes.clone(), metrics.clone());
    let mut servers = Vec::new();
    let grpc = receiver.clone().grpc();
    let mut stop = stop_rx.clone();
    servers.push(tokio::spawn(async move {
        let incoming = skein_proto::otlp_grpc::nodelay_incoming(grpc_l);
        let result = tonic::transport::Server::builder()
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "OTLP/gRPC server failed");
        }
    }));
    servers.push(tokio::spawn(serve(http_l, receiver.http(), stop_rx.clone())));
    let upstream = s.sampling_upstream.clone().or_else(|| {
        let (host, _) = route::split_host_port(&names[0]).ok()?;
        Some(if host.contains(':') { format!("http://[{host}]:5778") } else { format!("http://{host}:5778") })
    });
    let proxy = SamplingProxy::new(upstream, Duration::from_millis(s.sampling_refresh_ms), metrics.clone());
    servers.push(tokio::spawn(serve(sampling_l, proxy.router(), stop_rx.clone())));
    let m = metrics.clone();
    let admin = Router::new()
        .route("/metrics", get(move || std::future::ready(m.render())))
        .route("/healthz", get(|| std::future::ready("ok")));
    // The admin server stays up until the process exits, so probes and scrapes see the drain.
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_l, admin).await {
            tracing::error!(error = %e, "admin server failed");
        }
    });

    tokio::spawn(route::resolve_loop(names, Duration::from_millis(s.dns_refresh_ms.max(100)), targets_tx));
    let forward = ForwardConfig {
        batch_max_spans: s.batch_max_spans.max(1),
        batch_max_bytes: s.batch_max_bytes.max(1),
        batch_timeout: Duration::from_millis(s.batch_timeout_ms),
        max_request_bytes: s.max_request_bytes.max(1024),
        tls,
        ..ForwardConfig::default()
    };
    let forwarder = Forwarder::new(buffer, metrics.clone(), forward, routes);
    let forwarder = tokio::spawn(forwarder.run(stop_rx, Duration::from_millis(s.shutdown_timeout_ms)));
    Ok(Running { addrs, metrics, shutdown, forwarder, servers })
}
