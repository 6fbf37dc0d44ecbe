//! `skein-all-in-one`: the whole Skein backend in one process on the embedded store.

use skein_collector::server::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main(
        Role::AllInOne,
        "Skein all-in-one: OTLP receivers, trace assembly, embedded storage and the Jaeger-compatible query API.",
    )
    .await
}
