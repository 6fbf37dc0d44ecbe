//! Process plumbing shared by Skein's server binaries (`skein-all-in-one`, `skein-collector`, `skein-query`,
//! `skein-operator`): logging set-up and the shutdown signal. It must not import any other Skein crate.

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Initialises logging to stderr: `RUST_LOG` filter (default `info`, storage engine at `warn`), text or JSON.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lsm_tree=warn,fjall=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// How long a component's servers get to stop once told to (they finish in-flight requests first).
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A component's running servers and tasks, stopped together: each is spawned with [`Servers::spawn`] and watches
/// [`Servers::stopping`]; [`Servers::shutdown`] signals them all and waits for each (a server finishes its
/// in-flight requests first).
pub struct Servers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

impl Default for Servers {
    fn default() -> Self {
        Self { stop: tokio::sync::watch::channel(false).0, tasks: Vec::new() }
    }
}

impl Servers {
    /// Completes once [`Servers::shutdown`] has been called: the graceful-shutdown signal to give each server.
    pub fn stopping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Runs `task` (a server future, or a loop that ends on [`Servers::stopping`]) as `what`.
    pub fn spawn(
        &mut self,
        what: &'static str,
        task: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    ) {
        self.tasks.push((what, tokio::spawn(task)));
    }

    /// Signals every task to stop and waits for each, at most `timeout` in all; a task still running then is
    /// logged and left behind.
    ///
    /// # Errors
    /// The first task that failed or panicked, named.
    pub async fn shutdown(self, timeout: std::time::Duration) -> Result<(), String> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first_error = None;
        for (what, task) in self.tasks {
            let error = match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some(format!("{what}: {e}")),
                Ok(Err(e)) => Some(format!("{what} task: {e}")),
                Err(_) => {
                    tracing::warn!(what, "did not stop in time");
                    None
                }
            };
            first_error = first_error.or(error);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `listener` with `TCP_NODELAY` set on every accepted connection (small responses are not held by Nagle's
/// algorithm for the peer's delayed ACK), for `axum::serve`.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_every_task_and_reports_the_first_failure() {
        let mut servers = Servers::default();
        let stopping = servers.stopping();
        servers.spawn("waits", async move {
            stopping.await;
            Ok(())
        });
        let stopping = servers.stopping();
        servers.spawn("fails", async move {
            stopping.await;
            Err(std::io::Error::other("boom"))
        });
        let result = servers.shutdown(std::time::Duration::from_secs(5)).await;
        assert_eq!(result, Err("fails: boom".to_string()));
    }
}
