//! `skein-operator`: reconciles `TracingPipeline` objects. See `skein_operator::run`.

use clap::Parser;
use skein_collector::server::init_logging;
use skein_operator::run::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format == "json");
    run(args).await
}
