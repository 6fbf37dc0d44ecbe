//! `skein-all-in-one`: the whole Skein backend in one process on the embedded store.

use skein_collector::server::AllInOne;

/// mimalloc instead of glibc malloc: after a heavy ingest, glibc's fragmented heap (perf: `malloc_consolidate`,
/// `unlink_chunk`) made building Jaeger JSON for a search 2–3x slower than on a fresh process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main::<AllInOne>(
        "Skein all-in-one: OTLP receivers, trace assembly, embedded storage and the Jaeger-compatible query API.",
    )
    .await
}
