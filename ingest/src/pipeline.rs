//! The ingest component: OTLP (gRPC, HTTP) and Zipkin receivers in front of the write-ahead log, the assembler
//! and the writer, started together by [`start`] and stopped by [`IngestHandle::shutdown`].
//!
//! Start order: open the write-ahead log, start the assembler and the writer, replay the log through
//! [`Ingest::replay`] (the path live requests take after logging), then serve the receivers. Shutdown order: stop
//! the receivers (in-flight requests finish), let the assembler decide every held trace and the writer persist
//! it, then rotate the log so the next start replays nothing already written.

use std::path::PathBuf;
use std::sync::Arc;

use skein_config::tail::TailSamplingConfig;
use skein_runtime::{Servers, nodelay};
use skein_storage::{ImportancePolicy, TraceStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
pub use tonic::transport::ServerTlsConfig;

use crate::assembly::{self, AssemblyConfig};
use crate::grpc::OtlpGrpc;
use crate::metrics::Metrics;
use crate::wal::Wal;
use crate::{Ingest, Limits, writer};

/// Capacity of the receivers → assembler channel, in export requests (receivers wait when it is full, so this
/// bounds the memory of a burst: 64 requests of a few thousand spans is tens of MB).
pub const INGEST_QUEUE_REQUESTS: usize = 64;
/// Capacity of the assembler → writer channel, in trace chunks.
pub const WRITE_QUEUE_CHUNKS: usize = 8192;
/// How often released write-ahead-log segments are deleted when no request arrives to trigger it.
pub const WAL_COLLECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Settings of the ingest component.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Trace assembly settings.
    pub assembly: AssemblyConfig,
    /// Span validation limits.
    pub limits: Limits,
    /// Which traces get the important retention tier.
    pub importance: ImportancePolicy,
    /// Write-ahead-log directory.
    pub wal_dir: PathBuf,
    /// Write-ahead-log budget, bytes.
    pub wal_max_bytes: u64,
    /// Export-request bytes processed at once.
    pub max_inflight_bytes: usize,
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
    pub fn load(&self) -> Result<ServerTlsConfig, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let identity = tonic::transport::Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?);
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca_file {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
        }
        Ok(tls)
    }
}

/// The receivers' bound listeners (bound by the caller, so it can report the addresses before anything starts).
pub struct Listeners {
    /// OTLP/gRPC.
    pub otlp_grpc: TcpListener,
    /// OTLP/HTTP.
    pub otlp_http: TcpListener,
    /// Zipkin v2 JSON.
    pub zipkin: TcpListener,
}

/// A running ingest component.
pub struct IngestHandle {
    receivers: Servers,
    housekeeping: Servers,
    assembler: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    wal: Wal,
}

/// Opens the write-ahead log, starts assembly and the writer on `store`, replays the log, then serves the
/// receivers on `listeners` (OTLP/gRPC with `tls` when given). `tail` carries the tail-sampling policies (and
/// their reloads).
///
/// # Errors
/// A message when the write-ahead log cannot be opened or the TLS configuration is unusable.
pub async fn start(
    config: &IngestConfig,
    listeners: Listeners,
    tls: Option<ServerTlsConfig>,
    store: Arc<dyn TraceStore>,
    metrics: Arc<Metrics>,
    tail: watch::Receiver<Option<TailSamplingConfig>>,
) -> Result<IngestHandle, String> {
    let (wal, records) = Wal::open(&config.wal_dir, config.wal_max_bytes, metrics.clone())
        .map_err(|e| format!("write-ahead log in {}: {e}", config.wal_dir.display()))?;
    let mut housekeeping = Servers::default();
    {
        let wal = wal.clone();
        let stopping = housekeeping.stopping();
        housekeeping.spawn("write-ahead-log collection", async move {
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(WAL_COLLECT_INTERVAL) => wal.collect().await,
                    _ = &mut stopping => return Ok(()),
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
        tail,
        span_rx,
        chunk_tx,
    ));
    let writer = tokio::spawn(writer::run(store, metrics.clone(), config.importance, Some(refs), chunk_rx));
    let ingest = Ingest::new(config.limits.clone(), metrics, span_tx)
        .with_wal(wal.clone())
        .with_max_inflight_bytes(config.max_inflight_bytes);
    if !records.is_empty() {
        let started = std::time::Instant::now();
        let n = records.len();
        let spans = ingest.replay(records).await;
        tracing::info!(
            records = n,
            spans,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "write-ahead log replayed"
        );
    }

    let mut receivers = Servers::default();
    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        grpc_server = grpc_server.tls_config(tls).map_err(|e| format!("OTLP gRPC TLS: {e}"))?;
    }
    let grpc = grpc_server.add_service(OtlpGrpc::new(ingest.clone()).server()).serve_with_incoming_shutdown(
        skein_proto::otlp_grpc::nodelay_incoming(listeners.otlp_grpc),
        receivers.stopping(),
    );
    receivers.spawn("OTLP gRPC", async move { grpc.await.map_err(std::io::Error::other) });
    let http = axum::serve(nodelay(listeners.otlp_http), crate::http::router(ingest.clone()))
        .with_graceful_shutdown(receivers.stopping());
    receivers.spawn("OTLP HTTP", async move { http.await });
    let zipkin = axum::serve(nodelay(listeners.zipkin), crate::zipkin::router(ingest))
        .with_graceful_shutdown(receivers.stopping());
    receivers.spawn("Zipkin", async move { zipkin.await });
    Ok(IngestHandle { receivers, housekeeping, assembler, writer, wal })
}

impl IngestHandle {
    /// Stops accepting spans, then drains: every held trace decided and written, at the latest by `deadline`.
    /// Returns whether everything was written (else the write-ahead log keeps the rest for the next start).
    ///
    /// # Errors
    /// A receiver that failed while serving, named.
    pub async fn shutdown(self, deadline: Instant) -> Result<bool, String> {
        let served = self.receivers.shutdown(deadline.saturating_duration_since(Instant::now())).await;
        // Every Ingest handle is gone with the receivers, so the assembler decides every held trace and the writer
        // finishes.
        let (assembler, writer) = (self.assembler, self.writer);
        let drain = async move {
            let _ = assembler.await;
            let _ = writer.await;
        };
        let drained = tokio::time::timeout_at(deadline, drain).await.is_ok();
        if drained {
            tracing::info!("all held traces decided and written");
            self.wal.rotate_and_collect().await;
        } else {
            tracing::warn!(
                "shutdown timeout reached before every trace was written; the write-ahead log keeps the rest for the next start"
            );
        }
        let _ = self.housekeeping.shutdown(skein_runtime::STOP_TIMEOUT).await;
        served.map(|()| drained)
    }
}
