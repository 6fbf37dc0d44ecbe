//! The `skein-operator` process: flags, logging, the health/metrics server, leader election on a `Lease`, and the
//! controller, shut down gracefully on SIGTERM/SIGINT.
//!
//! Every replica serves `/healthz`, `/readyz` and `/metrics` and the admission webhooks; only the replica holding
//! the Lease reconciles and tracks injected agents. A
//! replica that loses the Lease exits (as controller-runtime does) so that it never reconciles alongside the new
//! leader; Kubernetes restarts it as a standby.
//!
//! Shutdown: every loop (certificate set-up and webhook registration retries, certificate upkeep, the agent
//! tracker, readiness checks, the controller) watches one stop signal, so SIGTERM ends the process within
//! [`SHUTDOWN_DEADLINE`] in every state, including while registration keeps failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
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

use skein_runtime::shutdown_signal;

use axum_server::tls_rustls::RustlsConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ResourceRequirements};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::FIELD_MANAGER;
use crate::agents;
use crate::controller::{self, Context};
use crate::crd::TracingPipeline;
use crate::events::Recorder;
use crate::inject::{SidecarMode, parse_version};
use crate::metrics::Metrics;
use crate::resources::Defaults;
use crate::schema::Scylla;
use crate::webhook::certs::{self, CertSettings};
use crate::webhook::register::{self, CertSource, Registration, Target, Upkeep};
use crate::webhook::{self, Webhook};

/// `skein-operator` flags.
#[derive(Clone, Debug, Parser)]
#[command(name = "skein-operator", version, about = "Reconciles TracingPipeline objects into Skein backends")]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SKEIN_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Listen address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "SKEIN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// `skein-collector` image for ScyllaDB pipelines that do not set `spec.collector.image`.
    #[arg(long, env = "SKEIN_COLLECTOR_IMAGE", default_value_t = Defaults::default().collector_image)]
    pub collector_image: String,
    /// `skein-query` image for ScyllaDB pipelines that do not set `spec.query.image`.
    #[arg(long, env = "SKEIN_QUERY_IMAGE", default_value_t = Defaults::default().query_image)]
    pub query_image: String,
    /// `skein-all-in-one` image for embedded-storage pipelines that do not set `spec.collector.image`.
    #[arg(long, env = "SKEIN_ALL_IN_ONE_IMAGE", default_value_t = Defaults::default().all_in_one_image)]
    pub all_in_one_image: String,
    /// Agent image for pipelines that do not set one.
    #[arg(long, env = "SKEIN_AGENT_IMAGE", default_value_t = Defaults::default().agent_image)]
    pub agent_image: String,
    /// Resources of injected agents for pipelines that set none, as Kubernetes `ResourceRequirements` JSON, e.g.
    /// `{"requests":{"cpu":"10m","memory":"16Mi"},"limits":{"memory":"64Mi"}}` (default: requests 10m CPU / 16Mi
    /// and a memory limit of 48 MiB plus twice the pipeline's memory buffer).
    #[arg(long, env = "SKEIN_AGENT_RESOURCES", value_parser = parse_resources)]
    pub agent_resources: Option<ResourceRequirements>,
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
    /// Serve the admission webhooks (injection and pipeline validation) on `--webhook-addr`.
    #[arg(long, env = "SKEIN_WEBHOOK", default_value_t = true, action = clap::ArgAction::Set)]
    pub webhook: bool,
    /// Webhook listen address (TLS).
    #[arg(long, env = "SKEIN_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Register the webhooks by URL instead of by Service (out-of-cluster runs and tests), e.g.
    /// `https://127.0.0.1:9443`; the certificate is issued for its host.
    #[arg(long, env = "SKEIN_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The Service in front of the operator's webhook port (in the operator's namespace).
    #[arg(long, env = "SKEIN_WEBHOOK_SERVICE", default_value = "skein-operator-webhook")]
    pub webhook_service: String,
    /// Port of that Service.
    #[arg(long, env = "SKEIN_WEBHOOK_SERVICE_PORT", default_value_t = 443)]
    pub webhook_service_port: i32,
    /// Name of the MutatingWebhookConfiguration and ValidatingWebhookConfiguration (applied by the operator, or
    /// created by the Helm chart and only given their `caBundle`).
    #[arg(long, env = "SKEIN_WEBHOOK_CONFIG_NAME", default_value = "skein-operator")]
    pub webhook_config_name: String,
    /// What the operator writes into the webhook configurations: `apply` them whole, only their `ca-bundle`
    /// (the Helm chart creates them), or nothing (`off`: another tool manages them and their `caBundle`).
    #[arg(long, env = "SKEIN_WEBHOOK_REGISTRATION", value_enum, default_value_t = register::Mode::Apply)]
    pub webhook_registration: register::Mode,
    /// Secret (in the operator's namespace) holding the self-managed CA and serving certificate.
    #[arg(long, env = "SKEIN_WEBHOOK_SECRET", default_value = "skein-operator-webhook-tls")]
    pub webhook_secret: String,
    /// Serve user-provided certificates instead: a directory with `tls.crt`, `tls.key` and optionally `ca.crt`
    /// (the caBundle applied to the configurations), re-read every minute.
    #[arg(long, env = "SKEIN_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// Lifetime of self-managed serving certificates, seconds (renewed with a third left; the CA lives 10 years).
    #[arg(long, env = "SKEIN_WEBHOOK_CERT_LIFETIME_SECS", default_value_t = 365 * 24 * 3600)]
    pub webhook_cert_lifetime_secs: i64,
    /// How the agent is injected: `native` sidecar (init container with `restartPolicy: Always`), regular
    /// `container`, or `auto` (native on Kubernetes ≥ 1.29).
    #[arg(long, env = "SKEIN_SIDECAR_MODE", value_enum, default_value_t = SidecarMode::Auto)]
    pub sidecar_mode: SidecarMode,
    /// How often injected pods are counted into `status.agents` (and stale workloads rolled), seconds.
    #[arg(long, env = "SKEIN_AGENT_STATUS_INTERVAL_SECS", default_value_t = 15)]
    pub agent_status_interval_secs: u64,
}

impl Args {
    /// The operator-wide defaults these flags set.
    pub fn defaults(&self) -> Defaults {
        Defaults {
            collector_image: self.collector_image.clone(),
            query_image: self.query_image.clone(),
            all_in_one_image: self.all_in_one_image.clone(),
            agent_image: self.agent_image.clone(),
            agent_resources: self.agent_resources.clone(),
        }
    }
}

/// Parses `--agent-resources`: Kubernetes `ResourceRequirements` as JSON (YAML flow style works too).
///
/// # Errors
/// Text that is not a `ResourceRequirements` object, with the parser's message.
fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    serde_yaml::from_str(text)
        .map_err(|e| format!("not a ResourceRequirements object ({{\"requests\":{{...}},\"limits\":{{...}}}}): {e}"))
}

/// CA lifetime of self-managed webhook certificates, seconds.
pub const CA_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;
/// Time between tries of a start-up step that failed (webhook certificate, registration).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Longest time from SIGTERM to exit: in-flight admission requests and the Lease release get this long.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(1500);

/// Tries `attempt` every `interval` until it succeeds (`Some`) or `stop` turns true (`None`, checked before each
/// try and during each wait). Each failure goes to `failed` (log it, show it in `/readyz`).
pub async fn retry_until_stopped<T, E, F, Fut>(
    interval: Duration,
    stop: &mut watch::Receiver<bool>,
    mut attempt: F,
    mut failed: impl FnMut(&E),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            result = attempt() => match result {
                Ok(v) => return Some(v),
                Err(e) => failed(&e),
            },
            _ = stop.wait_for(|s| *s) => return None,
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
    }
}

/// The shared caches and publishers the webhook, the controller and the agent tracker use.
#[derive(Clone)]
struct Shared {
    pipelines: Store<TracingPipeline>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

/// Starts the webhook server on every replica: certificates (issued or read), registrations, the caches of
/// pipelines and namespaces. Serves until `stop`; `state` follows each step for `/readyz`. Returns `None` when
/// stopped before serving.
///
/// # Errors
/// The listen address cannot be bound, or the certificate cannot be served.
async fn start_webhook(
    client: Client,
    args: &Args,
    operator_ns: &str,
    shared: Shared,
    state: WebhookStatus,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Shared { pipelines, namespaces, recorder, metrics } = shared;
    let target = match &args.webhook_url {
        Some(url) => Target::Url(url.clone()),
        None => Target::Service {
            namespace: operator_ns.to_string(),
            name: args.webhook_service.clone(),
            port: args.webhook_service_port,
        },
    };
    let source = match &args.webhook_cert_dir {
        Some(dir) => CertSource::Dir(dir.clone()),
        None => CertSource::Managed {
            namespace: operator_ns.to_string(),
            name: args.webhook_secret.clone(),
            settings: CertSettings {
                names: target.cert_names(),
                lifetime_secs: args.webhook_cert_lifetime_secs.max(3),
                ca_lifetime_secs: CA_LIFETIME_SECS,
            },
        },
    };
    let interval = match &source {
        CertSource::Managed { settings, .. } => register::check_interval(settings.lifetime_secs),
        CertSource::Dir(_) => Duration::from_secs(60),
    };
    let registration =
        Registration { config_name: args.webhook_config_name.clone(), target, mode: args.webhook_registration };
    let listener = std::net::TcpListener::bind(args.webhook_addr)?;
    let certificate = retry_until_stopped(
        RETRY_INTERVAL,
        &mut stop,
        || register::current(&client, &source, &metrics),
        |e| {
            tracing::warn!(error = %e, "cannot set up the webhook certificate yet; retrying");
            state.set(WebhookState::Starting(format!("cannot set up the serving certificate: {e}")));
        },
    )
    .await;
    let Some(bundle) = certificate else { return Ok(None) };
    metrics.certificate_expiry.set(bundle.not_after);
    let tls = RustlsConfig::from_config(certs::server_config(&bundle)?);
    let keep_tls = tls.clone();
    let native_sidecar = match client.apiserver_version().await {
        Ok(v) => match parse_version(&v.major, &v.minor) {
            Some((major, minor)) => args.sidecar_mode.native(major, minor),
            None => args.sidecar_mode == SidecarMode::Native,
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the server version; injecting regular containers unless --sidecar-mode native");
            args.sidecar_mode == SidecarMode::Native
        }
    };
    let hook = Arc::new(Webhook {
        pipelines,
        namespaces,
        defaults: args.defaults(),
        native_sidecar,
        metrics: metrics.clone(),
        events: recorder.queue(),
    });
    let handle = axum_server::Handle::new();
    {
        let handle = handle.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            handle.graceful_shutdown(Some(SHUTDOWN_DEADLINE / 2));
        });
    }
    tracing::info!(addr = %args.webhook_addr, native_sidecar, "serving the admission webhooks");
    let server = tokio::spawn(async move {
        if let Err(e) = webhook::serve(listener, tls, webhook::router(hook), handle).await {
            tracing::error!(error = %e, "webhook server failed");
        }
    });
    // Registered only once the server answers, so the API server never calls a webhook that is not there yet.
    state.set(WebhookState::Registering(String::new()));
    let registered = retry_until_stopped(
        RETRY_INTERVAL,
        &mut stop,
        || register::register(&client, &registration, &bundle),
        |e| {
            tracing::warn!(error = %e, "cannot register the webhooks yet; retrying");
            state.set(WebhookState::Registering(e.to_string()));
        },
    )
    .await;
    if registered.is_some() {
        state.set(WebhookState::Ready);
        let upkeep = Upkeep { source, registration, interval };
        tokio::spawn(register::keep_certificates(client, upkeep, keep_tls, bundle, metrics, stop));
    }
    Ok(Some(server))
}

/// A store kept current by a watch of `api` (with backoff) in a background task; `what` names it in logs.
fn cache<K>(api: Api<K>, what: &'static str) -> Store<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    tokio::spawn(reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff()).for_each(
        move |e| async move {
            if let Err(e) = e {
                tracing::debug!(error = %e, what, "watch");
            }
        },
    ));
    store
}

/// Where the admission webhooks stand.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WebhookState {
    /// Turned off (`--webhook false`).
    Off,
    /// Not served yet: why.
    Starting(String),
    /// Served, not registered yet: the last registration error (empty before the first try ends).
    Registering(String),
    /// Served and registered with their `caBundle`.
    Ready,
}

/// The webhooks' state, shared between the webhook task and `/readyz`.
#[derive(Clone)]
struct WebhookStatus(Arc<Mutex<WebhookState>>);

impl WebhookStatus {
    fn set(&self, state: WebhookState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn get(&self) -> WebhookState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What `/readyz` reports on.
#[derive(Clone)]
struct Readiness {
    /// A TracingPipeline list succeeded.
    api: Arc<AtomicBool>,
    /// The webhooks.
    webhook: WebhookStatus,
}

impl Readiness {
    fn new(webhook: bool) -> Self {
        let state = if webhook { WebhookState::Starting("starting".into()) } else { WebhookState::Off };
        Self { api: Arc::default(), webhook: WebhookStatus(Arc::new(Mutex::new(state))) }
    }

    /// `/readyz`'s answer: ready, or everything that is missing.
    fn report(&self) -> (StatusCode, String) {
        let mut missing = Vec::new();
        if !self.api.load(Ordering::Relaxed) {
            missing.push("the API server or the TracingPipeline CRD is not reachable yet".to_string());
        }
        match self.webhook.get() {
            WebhookState::Off | WebhookState::Ready => {}
            WebhookState::Starting(why) => missing.push(format!("the admission webhooks are not served yet: {why}")),
            WebhookState::Registering(error) if error.is_empty() => {
                missing.push("the admission webhooks are served and being registered".into())
            }
            WebhookState::Registering(error) => {
                missing.push(format!("the admission webhooks are served but their registration keeps failing: {error}"))
            }
        }
        if missing.is_empty() {
            (StatusCode::OK, "ready".into())
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, missing.join("; "))
        }
    }
}

#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    ready: Readiness,
}

/// The health and metrics routes: `/healthz` (the process is up), `/readyz` (the API server answered, the CRD is
/// installed, and the webhooks are served — the webhook Service only sends admission requests to ready pods),
/// `/metrics`.
fn health_router(metrics: Arc<Metrics>, ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|State(h): State<Health>| async move { h.ready.report() }))
        .route("/metrics", get(|State(h): State<Health>| async move { h.metrics.render() }))
        .with_state(Health { metrics, ready })
}

/// Runs the operator until SIGTERM/SIGINT, then exits within [`SHUTDOWN_DEADLINE`].
///
/// # Errors
/// No Kubernetes configuration, an unusable listen address, or a failed Lease.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let mut stopped = stop_rx.clone();
    let deadline = async move {
        let _ = stopped.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    tokio::select! {
        result = operate(args, stop_rx) => result,
        _ = deadline => {
            tracing::warn!(deadline_ms = SHUTDOWN_DEADLINE.as_millis() as u64, "shutdown deadline reached; exiting");
            Ok(())
        }
    }
}

/// Everything the operator does, until `stop` turns true.
async fn operate(args: Args, stop_rx: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Readiness::new(args.webhook);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let server = {
        let router = health_router(metrics.clone(), ready.clone());
        let shutdown = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "health server failed");
            }
        })
    };
    tokio::spawn(check_ready(client.clone(), args.watch_namespace.clone(), ready.api.clone(), stop_rx.clone()));

    let defaults = args.defaults();
    let recorder = Recorder::new(client.clone(), FIELD_MANAGER, metrics.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        defaults.clone(),
        Arc::new(Scylla::default()),
        metrics.clone(),
        recorder.clone(),
    ));
    let operator_ns = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_string());
    // Every watched pipeline and every namespace's metadata, shared by the webhook and the agent tracker.
    let shared = Shared {
        pipelines: cache::<TracingPipeline>(
            match &args.watch_namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            },
            "pipeline",
        ),
        namespaces: cache(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), "namespace"),
        recorder,
        metrics: metrics.clone(),
    };
    let webhook = if args.webhook {
        let (client, shared, stop) = (client.clone(), shared.clone(), stop_rx.clone());
        let (args_ns, hook_args, state) = (operator_ns.clone(), args.clone(), ready.webhook.clone());
        Some(tokio::spawn(async move {
            match start_webhook(client, &hook_args, &args_ns, shared, state.clone(), stop).await {
                Ok(Some(server)) => {
                    let _ = server.await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the admission webhooks could not start");
                    state.set(WebhookState::Starting(format!("could not start: {e}")));
                }
            }
        }))
    } else {
        None
    };
    let agent_interval = Duration::from_secs(args.agent_status_interval_secs.max(1));
    let work = {
        let (ctx, ns, stop) = (ctx.clone(), args.watch_namespace.clone(), stop_rx.clone());
        let tracker = agents::Tracker {
            client: client.clone(),
            pipelines: shared.pipelines.clone(),
            namespaces: shared.namespaces.clone(),
            defaults: defaults.clone(),
            recorder: shared.recorder.clone(),
            metrics: metrics.clone(),
        };
        async move {
            tokio::join!(
                async {
                    controller::run(ctx, ns, stopped(stop.clone())).await;
                    tracing::info!("controller stopped");
                },
                async {
                    agents::run(tracker, agent_interval, stopped(stop.clone())).await;
                    tracing::info!("agent tracker stopped");
                },
            );
        }
    };
    let finish = async move {
        let _ = server.await;
        tracing::info!("health server stopped");
        if let Some(w) = webhook {
            let _ = w.await;
            tracing::info!("webhook server stopped");
        }
    };

    if !args.leader_election {
        metrics.leader.set(1);
        work.await;
        finish.await;
        return Ok(());
    }

    let lease_ns = args.lease_namespace.clone().unwrap_or_else(|| operator_ns.clone());
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
                let _ = tokio::time::timeout(SHUTDOWN_DEADLINE / 2, lease_task).await;
                finish.await;
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
        _ = work => {
            // Graceful shutdown: give the Lease up so a standby takes over at once.
            metrics.leader.set(0);
            let manager = tokio::time::timeout(SHUTDOWN_DEADLINE / 3, lease_task).await;
            if let Ok(Ok(Ok(manager))) = manager {
                let _ = tokio::time::timeout(SHUTDOWN_DEADLINE / 3, manager.release()).await;
            }
            finish.await;
            Ok(())
        }
        _leader = lost => {
            metrics.leader.set(0);
            anyhow::bail!("lost the leader lease; exiting so only one replica reconciles")
        }
    }
}

/// Marks the operator ready while a TracingPipeline list succeeds (API reachable, CRD installed, RBAC in place),
/// checking every 10 s until `stop`.
async fn check_ready(
    client: Client,
    namespace: Option<String>,
    ready: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<TracingPipeline> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let one = ListParams::default().limit(1);
    loop {
        let listed = tokio::select! {
            listed = api.list(&one) => listed,
            _ = stop.wait_for(|s| *s) => return,
        };
        match listed {
            Ok(_) => ready.store(true, Ordering::Relaxed),
            Err(e) => {
                ready.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot list TracingPipelines");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[test]
    fn flags_parse_with_their_defaults() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
        let a = Args::try_parse_from(["skein-operator"]).expect("defaults");
        assert!(a.webhook);
        assert_eq!(a.webhook_registration, register::Mode::Apply);
        assert_eq!(a.webhook_addr.port(), 9443);
        assert_eq!(a.sidecar_mode, SidecarMode::Auto);
        let a = Args::try_parse_from([
            "skein-operator",
            "--webhook-url",
            "https://127.0.0.1:9443",
            "--sidecar-mode",
            "container",
            "--webhook",
            "false",
        ])
        .expect("flags");
        assert_eq!(a.webhook_url.as_deref(), Some("https://127.0.0.1:9443"));
        assert_eq!(a.sidecar_mode, SidecarMode::Container);
        assert!(!a.webhook);
        assert!(Args::try_parse_from(["skein-operator", "--sidecar-mode", "sometimes"]).is_err());
        let a = Args::try_parse_from([
            "skein-operator",
            "--webhook-registration=ca-bundle",
            r#"--agent-resources={"requests":{"cpu":"20m"},"limits":{"memory":"64Mi"}}"#,
        ])
        .expect("flags");
        assert_eq!(a.webhook_registration, register::Mode::CaBundle);
        let limits = a.defaults().agent_resources.and_then(|r| r.limits).expect("limits");
        assert_eq!(limits["memory"].0, "64Mi");
        let err = Args::try_parse_from(["skein-operator", "--agent-resources=[1]"]).expect_err("not an object");
        assert!(err.to_string().contains("ResourceRequirements"), "{err}");
    }

    #[tokio::test]
    async fn health_routes_answer() {
        let ready = Readiness::new(true);
        let metrics = Arc::new(Metrics::default());
        metrics.error("ScyllaUnreachable");
        let router = health_router(metrics, ready.clone());
        let get = |path: &str| axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request");
        let r = router.clone().oneshot(get("/healthz")).await.expect("healthz");
        assert_eq!(r.status(), StatusCode::OK);
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        ready.api.store(true, Ordering::Relaxed);
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "the webhooks are not served yet");
        let refused = "webhooks[0].clientConfig: Required value: exactly one of url or service is required";
        ready.webhook.set(WebhookState::Registering(refused.into()));
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("served but their registration keeps failing") && text.contains(refused), "{text}");
        ready.webhook.set(WebhookState::Ready);
        let r = router.clone().oneshot(get("/readyz")).await.expect("readyz");
        assert_eq!(r.status(), StatusCode::OK);
        let r = router.oneshot(get("/metrics")).await.expect("metrics");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("skein_operator_reconcile_errors_total{error=\"ScyllaUnreachable\"} 1"), "{text}");
    }

    #[tokio::test]
    async fn a_failing_retry_loop_ends_as_soon_as_stop_turns_true() {
        let (tx, mut rx) = watch::channel(false);
        let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = tries.clone();
        let started = std::time::Instant::now();
        let task = tokio::spawn(async move {
            retry_until_stopped(
                Duration::from_secs(3600),
                &mut rx,
                || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    async { Err::<(), _>("refused") }
                },
                |_: &&str| {},
            )
            .await
        });
        // Wait (by polling, with a deadline) for the first failed try, then stop during the long wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tries.load(Ordering::Relaxed) == 0 {
            assert!(std::time::Instant::now() < deadline, "the first try never ran");
            tokio::task::yield_now().await;
        }
        tx.send(true).expect("stop");
        let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends on stop").expect("join");
        assert_eq!(result, None);
        assert_eq!(tries.load(Ordering::Relaxed), 1);
        assert!(started.elapsed() < Duration::from_secs(60), "did not wait out the hour-long interval");

        let (_tx, mut rx) = watch::channel(false);
        let mut n = 0;
        let ok = retry_until_stopped(
            Duration::from_millis(1),
            &mut rx,
            || {
                n += 1;
                let attempt = n;
                async move { if attempt < 3 { Err("not yet") } else { Ok(attempt) } }
            },
            |_| {},
        )
        .await;
        assert_eq!(ok, Some(3), "retries until it succeeds");
    }
}
