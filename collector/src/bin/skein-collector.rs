//! `skein-collector`: OTLP receivers, trace assembly and the storage writer (the ingest half of a cluster).

use skein_collector::server::Collector;

/// mimalloc instead of glibc malloc: after a heavy ingest, glibc's fragmented heap (perf: `malloc_consolidate`,
/// `unlink_chunk`) made building Jaeger JSON for a search 2–3x slower than on a fresh process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main::<Collector>(
        "Skein collector: OTLP receivers (gRPC 4317, HTTP 4318), trace assembly and the storage writer.",
    )
    .await
}
