//! Command-line flags shared by `skein-all-in-one`, `skein-collector` and `skein-query` (clap, with `SKEIN_*`
//! environment variables), and the common `main`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use skein_config::parse_go_duration;
use skein_ingest::Limits;
use skein_ingest::assembly::AssemblyConfig;
use skein_ingest::pipeline::{IngestConfig, OtlpTls};
use skein_query::QueryConfig;
use skein_runtime::{init_logging, shutdown_signal};
use skein_storage::ImportancePolicy;
use skein_storage::embedded::{DEFAULT_PARTITION_SECS, EmbeddedConfig};
use skein_storage::scylla::{Replication, ScyllaConfig, parse_consistency, validate_keyspace};

use crate::server::{Role, Runs, ServerConfig, StorageConfig, run_server};

/// Flags of the server binaries.
#[derive(Parser, Debug)]
pub struct ServerArgs {
    /// OTLP/gRPC listen address (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "SKEIN_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    pub otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/traces`).
    #[arg(long, env = "SKEIN_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    pub otlp_http_addr: SocketAddr,
    /// Query HTTP listen address (Jaeger API).
    #[arg(long, env = "SKEIN_QUERY_HTTP_ADDR", default_value = "0.0.0.0:16686")]
    pub query_http_addr: SocketAddr,
    /// Query gRPC listen address (`skein.query.v1.QueryService`, OTLP results streamed in chunks).
    #[arg(long, env = "SKEIN_QUERY_GRPC_ADDR", default_value = "0.0.0.0:16685")]
    pub query_grpc_addr: SocketAddr,
    /// Longest a query may run (Go duration): HTTP answers 504, gRPC DEADLINE_EXCEEDED, and the search stops.
    #[arg(long, env = "SKEIN_QUERY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub query_timeout: Duration,
    /// Spans the query service's hot-trace cache holds (settled traces, 30 s each); 0 turns it off.
    #[arg(long, env = "SKEIN_QUERY_CACHE_SPANS", default_value_t = 200_000)]
    pub query_cache_spans: u64,
    /// File of bearer tokens (one per line) the query APIs require (`Authorization: Bearer <token>`); re-read when
    /// it changes. Unset: the query APIs are open.
    #[arg(long, env = "SKEIN_QUERY_AUTH_TOKEN_FILE")]
    pub query_auth_token_file: Option<std::path::PathBuf>,
    /// PEM certificate chain the OTLP gRPC receiver serves TLS with (agents connect with `--collector-tls-ca`);
    /// needs `--otlp-tls-key-file`. Read at start.
    #[arg(long, env = "SKEIN_OTLP_TLS_CERT_FILE", requires = "otlp_tls_key_file")]
    pub otlp_tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `--otlp-tls-cert-file`.
    #[arg(long, env = "SKEIN_OTLP_TLS_KEY_FILE", requires = "otlp_tls_cert_file")]
    pub otlp_tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA bundle: the OTLP gRPC receiver requires a client certificate signed by it (mutual TLS).
    #[arg(long, env = "SKEIN_OTLP_TLS_CLIENT_CA_FILE", requires = "otlp_tls_cert_file")]
    pub otlp_tls_client_ca_file: Option<std::path::PathBuf>,
    /// Fault injection for chaos tests: while this file exists, every storage write waits (a stalled store).
    /// Only in builds with the `fault-injection` feature (the e2e tests'); hidden from `--help`.
    #[arg(long, hide = true)]
    pub fault_stall_writes_file: Option<std::path::PathBuf>,
    /// Admin listen address (`/metrics`, `/healthz`, `/readyz`); default 14269 (collector, all-in-one) or 16687
    /// (query).
    #[arg(long, env = "SKEIN_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Storage settings.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// A trace is written after this many milliseconds without a new span.
    #[arg(long, env = "SKEIN_TRACE_IDLE_MS", default_value_t = 5000)]
    pub trace_idle_ms: u64,
    /// Maximum traces held in memory while they assemble; the oldest is written early beyond this.
    #[arg(long, env = "SKEIN_MAX_LIVE_TRACES", default_value_t = 100_000)]
    pub max_live_traces: usize,
    /// A trace chunk is written as soon as it holds this many spans.
    #[arg(long, env = "SKEIN_MAX_SPANS_PER_TRACE", default_value_t = 10_000)]
    pub max_spans_per_trace: usize,
    /// Maximum attributes kept per span, event, link, resource or scope.
    #[arg(long, env = "SKEIN_MAX_ATTRIBUTES", default_value_t = 256)]
    pub max_attributes: usize,
    /// Maximum bytes of one string or bytes attribute value.
    #[arg(long, env = "SKEIN_MAX_ATTRIBUTE_VALUE_BYTES", default_value_t = 32 * 1024)]
    pub max_attribute_value_bytes: usize,
    /// Configuration file (YAML: `tail_sampling`, `sampling_strategies`); re-read when it changes.
    #[arg(long, env = "SKEIN_CONFIG")]
    pub config: Option<PathBuf>,
    /// How often the configuration file is checked for changes, milliseconds.
    #[arg(long, env = "SKEIN_CONFIG_RELOAD_MS", default_value_t = 2000)]
    pub config_reload_ms: u64,
    /// Write-ahead-log directory; default `<data-dir>/wal` for the all-in-one, `./skein-wal` for the collector.
    #[arg(long, env = "SKEIN_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// Write-ahead-log budget, bytes; beyond it requests are refused (RESOURCE_EXHAUSTED / 429) until storage
    /// catches up.
    #[arg(long, env = "SKEIN_WAL_MAX_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub wal_max_bytes: u64,
    /// Export-request bytes processed at once; beyond it requests are refused (RESOURCE_EXHAUSTED / 429).
    #[arg(long, env = "SKEIN_MAX_INFLIGHT_BYTES", default_value_t = skein_ingest::DEFAULT_MAX_INFLIGHT_BYTES)]
    pub max_inflight_bytes: usize,
    /// Zipkin v2 JSON receiver listen address (`POST /api/v2/spans`).
    #[arg(long, env = "SKEIN_ZIPKIN_ADDR", default_value = "0.0.0.0:9411")]
    pub zipkin_addr: SocketAddr,
    /// Jaeger remote-sampling HTTP listen address (`GET /api/sampling?service=`).
    #[arg(long, env = "SKEIN_SAMPLING_HTTP_ADDR", default_value = "0.0.0.0:5778")]
    pub sampling_http_addr: SocketAddr,
    /// Jaeger remote-sampling gRPC listen address (`jaeger.api_v2.SamplingManager`).
    #[arg(long, env = "SKEIN_SAMPLING_GRPC_ADDR", default_value = "0.0.0.0:5779")]
    pub sampling_grpc_addr: SocketAddr,
    /// After SIGTERM, how long to drain (decide and write held traces) before exiting anyway (Go duration);
    /// whatever is left is in the write-ahead log and replayed at the next start.
    #[arg(long, env = "SKEIN_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "SKEIN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map(Duration::from_nanos)
}

/// Storage flags.
#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// Storage backend: `embedded` (one machine, `--data-dir`) or `scylla` (`--scylla-*`). Default: `embedded`
    /// for the all-in-one, `scylla` for the split binaries.
    #[arg(long, env = "SKEIN_STORAGE", value_parser = ["embedded", "scylla"])]
    pub storage: Option<String>,
    /// Data directory of the embedded store.
    #[arg(long, env = "SKEIN_DATA_DIR", default_value = "./skein-data")]
    pub data_dir: PathBuf,
    /// Length of one embedded-store time partition, seconds (retention drops whole partitions).
    #[arg(long, env = "SKEIN_PARTITION_SECS", default_value_t = DEFAULT_PARTITION_SECS)]
    pub partition_secs: u64,
    /// How long traces are kept (Go duration: `72h`, `90m`).
    #[arg(long, env = "SKEIN_RETENTION", default_value = "72h", value_parser = duration)]
    pub retention: Duration,
    /// How long important traces are kept: traces with an error span or, with `--important-latency`, a slow span.
    #[arg(long, env = "SKEIN_RETENTION_IMPORTANT", default_value = "336h", value_parser = duration)]
    pub retention_important: Duration,
    /// Spans at least this long make their trace important (Go duration, e.g. `2s`); unset: errors only.
    #[arg(long, env = "SKEIN_IMPORTANT_LATENCY", value_parser = duration)]
    pub important_latency: Option<Duration>,
    /// ScyllaDB contact points, `host:port,...`.
    #[arg(long, env = "SKEIN_SCYLLA_NODES", value_delimiter = ',')]
    pub scylla_nodes: Vec<String>,
    /// ScyllaDB keyspace.
    #[arg(long, env = "SKEIN_SCYLLA_KEYSPACE", default_value = "skein")]
    pub scylla_keyspace: String,
    /// Preferred (local) datacenter; with it the keyspace uses NetworkTopologyStrategy in that datacenter.
    #[arg(long, env = "SKEIN_SCYLLA_LOCAL_DC")]
    pub scylla_local_dc: Option<String>,
    /// Replication factor of a keyspace the collector creates.
    #[arg(long, env = "SKEIN_SCYLLA_REPLICATION_FACTOR", default_value_t = 1)]
    pub scylla_replication_factor: u32,
    /// Consistency of reads and writes.
    #[arg(long, env = "SKEIN_SCYLLA_CONSISTENCY", default_value = "LOCAL_QUORUM")]
    pub scylla_consistency: String,
    /// Username for PasswordAuthenticator.
    #[arg(long, env = "SKEIN_SCYLLA_USERNAME")]
    pub scylla_username: Option<String>,
    /// File holding the password (trailing newline ignored).
    #[arg(long, env = "SKEIN_SCYLLA_PASSWORD_FILE")]
    pub scylla_password_file: Option<PathBuf>,
    /// Do not create the keyspace and tables (the operator manages the schema).
    #[arg(long, env = "SKEIN_SCYLLA_SKIP_SCHEMA")]
    pub scylla_skip_schema: bool,
}

impl StorageArgs {
    /// The storage configuration for a role.
    ///
    /// # Errors
    /// A message when the flags are inconsistent.
    pub fn config(&self, role: Role) -> Result<StorageConfig, String> {
        let backend = self.storage.clone().unwrap_or_else(|| match role {
            Role::AllInOne => "embedded".into(),
            Role::Collector | Role::Query => "scylla".into(),
        });
        match backend.as_str() {
            "embedded" => Ok(StorageConfig::Embedded(EmbeddedConfig {
                data_dir: self.data_dir.clone(),
                partition_secs: self.partition_secs.max(1),
                retention: self.retention,
                retention_important: self.retention_important,
            })),
            "scylla" => Ok(StorageConfig::Scylla(self.scylla()?)),
            other => Err(format!("unknown storage backend {other:?}")),
        }
    }

    fn scylla(&self) -> Result<ScyllaConfig, String> {
        if self.scylla_nodes.is_empty() {
            return Err("--storage scylla needs --scylla-nodes host:port,...".into());
        }
        validate_keyspace(&self.scylla_keyspace)?;
        let mut c = ScyllaConfig::new(self.scylla_nodes.clone(), &self.scylla_keyspace);
        c.consistency = parse_consistency(&self.scylla_consistency)?;
        c.retention = self.retention;
        c.retention_important = self.retention_important;
        c.schema.default_ttl_secs = self.retention.as_secs();
        c.create_schema = !self.scylla_skip_schema;
        c.local_dc = self.scylla_local_dc.clone();
        if let Some(dc) = &self.scylla_local_dc {
            c.schema.replication = Replication::NetworkTopology {
                datacenters: [(dc.clone(), self.scylla_replication_factor)].into_iter().collect(),
            };
        } else {
            c.schema.replication = Replication::Simple { replication_factor: self.scylla_replication_factor };
        }
        match (&self.scylla_username, &self.scylla_password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read --scylla-password-file {}: {e}", file.display()))?;
                c.credentials = Some((user.clone(), password.trim_end_matches(['\r', '\n']).to_string()));
            }
            (None, None) => {}
            _ => return Err("--scylla-username and --scylla-password-file go together".into()),
        }
        Ok(c)
    }

    /// The retention-tier policy.
    pub fn importance(&self) -> ImportancePolicy {
        ImportancePolicy { min_duration_nanos: self.important_latency.map(|d| d.as_nanos() as u64) }
    }
}

impl ServerArgs {
    /// The server configuration for a role.
    ///
    /// # Errors
    /// A message when the flags are inconsistent.
    pub fn config(&self, role: Role) -> Result<ServerConfig, String> {
        let admin_default: SocketAddr = match role {
            Role::Query => ([0, 0, 0, 0], 16687).into(),
            Role::AllInOne | Role::Collector => ([0, 0, 0, 0], 14269).into(),
        };
        Ok(ServerConfig {
            otlp_grpc_addr: self.otlp_grpc_addr,
            otlp_http_addr: self.otlp_http_addr,
            query_http_addr: self.query_http_addr,
            query_grpc_addr: self.query_grpc_addr,
            query: QueryConfig {
                timeout: self.query_timeout,
                cache_spans: self.query_cache_spans,
                auth_token_file: self.query_auth_token_file.clone(),
            },
            fault_stall_writes_file: self.fault_stall_writes_file.clone(),
            otlp_tls: self.otlp_tls_cert_file.clone().zip(self.otlp_tls_key_file.clone()).map(
                |(cert_file, key_file)| OtlpTls {
                    cert_file,
                    key_file,
                    client_ca_file: self.otlp_tls_client_ca_file.clone(),
                },
            ),
            admin_addr: self.admin_addr.unwrap_or(admin_default),
            storage: self.storage.config(role)?,
            ingest: IngestConfig {
                assembly: AssemblyConfig {
                    trace_idle_ms: self.trace_idle_ms,
                    max_live_traces: self.max_live_traces,
                    max_spans_per_trace: self.max_spans_per_trace,
                    ..AssemblyConfig::default()
                },
                limits: Limits {
                    max_attributes: self.max_attributes,
                    max_attribute_value_bytes: self.max_attribute_value_bytes,
                    ..Limits::default()
                },
                importance: self.storage.importance(),
                wal_dir: self.wal_dir.clone().unwrap_or_else(|| match role {
                    Role::AllInOne => self.storage.data_dir.join("wal"),
                    Role::Collector | Role::Query => PathBuf::from("./skein-wal"),
                }),
                wal_max_bytes: self.wal_max_bytes,
                max_inflight_bytes: self.max_inflight_bytes,
            },
            config_file: self.config.clone(),
            config_reload: Duration::from_millis(self.config_reload_ms.max(50)),
            zipkin_addr: self.zipkin_addr,
            sampling_http_addr: self.sampling_http_addr,
            sampling_grpc_addr: self.sampling_grpc_addr,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// The `main` of the server binaries: parses flags, starts logging, runs the components of `R` until
/// SIGTERM/SIGINT.
///
/// # Errors
/// Invalid flags, or any [`crate::Error`] from the server.
pub async fn main<R: Runs>(about: &'static str) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    use clap::FromArgMatches as _;
    let matches = ServerArgs::command().about(about).version(env!("CARGO_PKG_VERSION")).get_matches();
    let args = ServerArgs::from_arg_matches(&matches)?;
    init_logging(args.log_format == "json");
    let config = args.config(R::ROLE).map_err(anyhow::Error::msg)?;
    run_server::<R>(config, shutdown_signal(), |_| {}).await?;
    tracing::info!("stopped");
    Ok(())
}
