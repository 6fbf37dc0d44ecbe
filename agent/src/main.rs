//! The `skein-agent` binary: parses [`skein_agent::Settings`], starts the agent on a single-threaded runtime
//! (a sidecar should cost one core at most, and usually a few percent of one), and drains on SIGTERM/SIGINT.

use clap::Parser as _;
use skein_agent::Settings;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    skein_runtime::init_logging(settings.log_format == "json");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let running = skein_agent::start(settings).await?;
        let a = running.addrs;
        tracing::info!(
            "listening otlp_grpc={} otlp_http={} sampling={} admin={}",
            a.otlp_grpc,
            a.otlp_http,
            a.sampling,
            a.admin
        );
        skein_runtime::shutdown_signal().await;
        tracing::info!("shutting down: draining the buffer");
        running.stop().await;
        tracing::info!("stopped");
        Ok(())
    })
}
