//! `skein-operator`: reconciles `TracingPipeline` objects. See `skein_operator::run`.

use clap::Parser;
use skein_operator::run::{Args, run};
use skein_runtime::init_logging;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format == "json");
    run(args).await
}
