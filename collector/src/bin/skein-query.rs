//! `skein-query`: the Jaeger-compatible query API over shared storage (the query half of a cluster).

use skein_collector::server::Role;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    skein_collector::cli::main(Role::Query, "Skein query: the Jaeger-compatible HTTP API (16686) over shared storage.")
        .await
}
