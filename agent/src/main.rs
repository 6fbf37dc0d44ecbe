//! The `skein-agent` binary: parses [`skein_agent::Settings`], starts the agent on a single-threaded runtime
//! (a sidecar should cost one core at most, and usually a few percent of one), and drains on SIGTERM/SIGINT.

use clap::Parser as _;
use skein_agent::Settings;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if settings.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
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
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: draining the buffer");
        running.stop().await;
        tracing::info!("stopped");
        Ok(())
    })
}
