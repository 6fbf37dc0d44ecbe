//! `skein-collector`: OTLP receivers, trace assembly and the storage writer (the ingest half of a cluster).

use skein_collector::server::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main(
        Role::Collector,
        "Skein collector: OTLP receivers (gRPC 4317, HTTP 4318), trace assembly and the storage writer.",
    )
    .await
}
