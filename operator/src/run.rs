//! The `skein-operator` process: flags, logging, the health/metrics server, leader election on a `Lease`, and the
//! controller, shut down gracefully on SIGTERM/SIGINT.
//!
//! Every replica serves `/healthz`, `/readyz` and `/metrics`; only the replica holding the Lease reconciles. A
//! replica that loses the Lease exits (as controller-runtime does) so that it never reconciles alongside the new
//! leader; Kubernetes restarts it as a standby.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use kube::Client;
use kube::api::{Api, ListParams};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

use skein_collector::server::shutdown_signal;

use crate::FIELD_MANAGER;
use crate::controller::{self, Context};
use crate::crd::TracingPipeline;
use crate::metrics::Metrics;
use crate::resources::Defaults;
use crate::schema::Scylla;

/// `skein-operator` flags.
#[derive(Debug, Parser)]
#[command(name = "skein-operator", version, about = "Reconciles TracingPipeline objects into Skein backends")]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SKEIN_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "SKEIN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Backend image (skein-collector, skein-query, skein-all-in-one) for pipelines that do not set one.
    #[arg(long, env = "SKEIN_IMAGE", default_value_t = Defaults::default().image)]
    pub image: String,
    /// Agent image for pipelines that do not set one.
    #[arg(long, env = "SKEIN_AGENT_IMAGE", default_value_t = Defaults::default().agent_image)]
    pub agent_image: String,
    /// Elect a leader on a Lease so several replicas are safe; off only for a single replica run by hand.
    #[arg(long, env = "SKEIN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "SKEIN_LEASE_NAME", default_value = "skein-operator-leader")]
    pub lease_name: String,
    /// Namespace of the leader Lease (default: the operator's namespace from `POD_NAMESPACE`, else the client's
    /// default namespace).
    #[arg(long, env = "SKEIN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Lease duration, seconds: a dead leader is replaced after about this long.
    #[arg(long, env = "SKEIN_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,
    /// Log format.
    #[arg(long, env = "SKEIN_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// The health and metrics routes: `/healthz` (the process is up), `/readyz` (the API server answered and the
/// CRD is installed), `/metrics`.
fn health_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "the API server or the TracingPipeline CRD is not reachable yet")
                }
            }),
        )
        .route("/metrics", get(|State(h): State<Health>| async move { h.metrics.render() }))
        .with_state(Health { metrics, ready })
}

/// Runs the operator until SIGTERM/SIGINT.
///
/// # Errors
/// No Kubernetes configuration, an unusable listen address, or a failed Lease.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let router = health_router(metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "health server failed");
            }
        })
    };
    tokio::spawn(check_ready(client.clone(), args.watch_namespace.clone(), ready.clone()));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let defaults = Defaults { image: args.image.clone(), agent_image: args.agent_image.clone() };
    let ctx = Arc::new(Context::new(client.clone(), defaults, Arc::new(Scylla::default()), metrics.clone()));
    let stopped = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };

    if !args.leader_election {
        metrics.leader.set(1);
        controller::run(ctx, args.watch_namespace.clone(), stopped).await;
        let _ = server.await;
        return Ok(());
    }

    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("{FIELD_MANAGER}-{}", std::process::id()));
    let duration = args.lease_duration_secs.max(2);
    let manager = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&lease_ns)
        // Each replica keeps kube-lease-manager's per-identity field manager: server-side apply conflicts between
        // managers are what stop two replicas from taking the Lease at once.
        .with_parameters(LeaseParams::new(identity.clone(), duration, (duration / 3).max(1)))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, namespace = %lease_ns, identity = %identity, "waiting for the leader lease");
    let mut stop = stop_rx.clone();
    loop {
        if *leader.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { anyhow::bail!("leader election stopped") },
            _ = stop.wait_for(|s| *s) => {
                drop(leader);
                let _ = lease_task.await;
                let _ = server.await;
                return Ok(());
            }
        }
    }
    tracing::info!("became leader; reconciling");
    metrics.leader.set(1);
    let lost = async move {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return leader;
            }
        }
    };
    tokio::select! {
        _ = controller::run(ctx, args.watch_namespace.clone(), stopped) => {
            // Graceful shutdown: give the Lease up so a standby takes over at once.
            metrics.leader.set(0);
            let manager = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
            if let Ok(Ok(Ok(manager))) = manager {
                let _ = manager.release().await;
            }
            let _ = server.await;
            Ok(())
        }
        _leader = lost => {
            metrics.leader.set(0);
            anyhow::bail!("lost the leader lease; exiting so only one replica reconciles")
        }
    }
}

/// Marks the operator ready once a TracingPipeline list succeeds (API reachable, CRD installed, RBAC in place).
async fn check_ready(client: Client, namespace: Option<String>, ready: Arc<AtomicBool>) {
    let api: Api<TracingPipeline> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => ready.store(true, Ordering::Relaxed),
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot list TracingPipelines");
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn health_routes_answer() {
        let ready = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        metrics.error("ScyllaUnreachable");
        let router = health_router(metrics, ready.clone());
        let get = |path: &str| axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request");
        let r = router.clone().oneshot(get("/healthz")).await.expect("healthz");
        assert_eq!(r.status(), StatusCode::OK);
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::Relaxed);
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::OK);
        let r = router.oneshot(get("/metrics")).await.expect("metrics");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("skein_operator_reconcile_errors_total{error=\"ScyllaUnreachable\"} 1"), "{text}");
    }
}
