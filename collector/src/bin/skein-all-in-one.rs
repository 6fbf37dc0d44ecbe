//! `skein-all-in-one`: the whole Skein backend in one process on the embedded store.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use skein_collector::assembly::AssemblyConfig;
use skein_collector::ingest::Limits;
use skein_collector::server::{AllInOneConfig, init_logging, run_all_in_one, shutdown_signal};

/// Skein all-in-one: OTLP receivers, trace assembly, embedded storage and the Jaeger-compatible query API.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// OTLP/gRPC listen address (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "SKEIN_OTLP_GRPC_ADDR", default_value = "0.0.0.0:4317")]
    otlp_grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address (`POST /v1/traces`).
    #[arg(long, env = "SKEIN_OTLP_HTTP_ADDR", default_value = "0.0.0.0:4318")]
    otlp_http_addr: SocketAddr,
    /// Query HTTP listen address (Jaeger API).
    #[arg(long, env = "SKEIN_QUERY_HTTP_ADDR", default_value = "0.0.0.0:16686")]
    query_http_addr: SocketAddr,
    /// Admin listen address (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "SKEIN_ADMIN_ADDR", default_value = "0.0.0.0:14269")]
    admin_addr: SocketAddr,
    /// Data directory of the embedded store.
    #[arg(long, env = "SKEIN_DATA_DIR", default_value = "./skein-data")]
    data_dir: PathBuf,
    /// A trace is written after this many milliseconds without a new span.
    #[arg(long, env = "SKEIN_TRACE_IDLE_MS", default_value_t = 5000)]
    trace_idle_ms: u64,
    /// Maximum traces held in memory while they assemble; the oldest is written early beyond this.
    #[arg(long, env = "SKEIN_MAX_LIVE_TRACES", default_value_t = 100_000)]
    max_live_traces: usize,
    /// A trace chunk is written as soon as it holds this many spans.
    #[arg(long, env = "SKEIN_MAX_SPANS_PER_TRACE", default_value_t = 10_000)]
    max_spans_per_trace: usize,
    /// Maximum attributes kept per span, event, link, resource or scope.
    #[arg(long, env = "SKEIN_MAX_ATTRIBUTES", default_value_t = 256)]
    max_attributes: usize,
    /// Maximum bytes of one string or bytes attribute value.
    #[arg(long, env = "SKEIN_MAX_ATTRIBUTE_VALUE_BYTES", default_value_t = 32 * 1024)]
    max_attribute_value_bytes: usize,
    /// Log format.
    #[arg(long, env = "SKEIN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format == "json");
    let defaults = Limits::default();
    let config = AllInOneConfig {
        otlp_grpc_addr: args.otlp_grpc_addr,
        otlp_http_addr: args.otlp_http_addr,
        query_http_addr: args.query_http_addr,
        admin_addr: args.admin_addr,
        data_dir: args.data_dir,
        assembly: AssemblyConfig {
            trace_idle_ms: args.trace_idle_ms,
            max_live_traces: args.max_live_traces,
            max_spans_per_trace: args.max_spans_per_trace,
            ..AssemblyConfig::default()
        },
        limits: Limits {
            max_attributes: args.max_attributes,
            max_attribute_value_bytes: args.max_attribute_value_bytes,
            ..defaults
        },
    };
    run_all_in_one(config, shutdown_signal(), |_| {}).await?;
    tracing::info!("stopped");
    Ok(())
}
