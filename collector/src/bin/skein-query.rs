//! `skein-query`: the Jaeger-compatible query API over shared storage (the query half of a cluster).

use skein_collector::server::Query;

/// mimalloc instead of glibc malloc: after a heavy ingest, glibc's fragmented heap (perf: `malloc_consolidate`,
/// `unlink_chunk`) made building Jaeger JSON for a search 2–3x slower than on a fresh process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main::<Query>("Skein query: the Jaeger-compatible HTTP API (16686) over shared storage.")
        .await
}
