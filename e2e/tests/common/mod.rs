//! Helpers shared by the cluster tests (`operator.rs`, `webhook.rs`, `chart.rs`, `injection.rs`, `quick_start.rs`,
//! `shutdown.rs`): the operator process, polling, the CRD, Helm through `helm-sdkpy`, and running the operator as
//! the chart's ServiceAccount.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use skein_operator::crd::TracingPipeline;

/// Deletes webhook configurations `config_name` (both kinds) and `namespaces` when dropped, even after a failed
/// assertion: a left-over validating webhook with `failurePolicy: Fail` would refuse every later `TracingPipeline`
/// in the cluster.
pub struct Cleanup {
    /// Name of the Mutating- and ValidatingWebhookConfiguration.
    pub config_name: String,
    /// Namespaces the test created.
    pub namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        use k8s_openapi::api::admissionregistration::v1::{
            MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
        };
        use k8s_openapi::api::core::v1::Namespace;
        let (name, namespaces) = (self.config_name.clone(), self.namespaces.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else { return };
                let dp = kube::api::DeleteParams::default();
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(&name, &dp).await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone()).delete(&name, &dp).await;
                for ns in namespaces {
                    let _ = Api::<Namespace>::all(client.clone()).delete(&ns, &dp).await;
                }
            });
        })
        .join();
    }
}

/// Field manager of the tests' own server-side applies.
pub const MANAGER: &str = "skein-e2e";

/// The operator process, killed when dropped.
pub struct Operator(pub Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Operator {
    /// Starts the real `skein-operator` watching namespace `ns` (its Lease and, via `POD_NAMESPACE`, its webhook
    /// Secret live there too), metrics on `127.0.0.1:metrics_port`, plus `extra` flags.
    pub fn start(ns: &str, metrics_port: u16, extra: &[&str]) -> Self {
        let metrics = format!("127.0.0.1:{metrics_port}");
        Self(
            std::process::Command::new(skein_e2e::bin("skein-operator"))
                .args(["--watch-namespace", ns, "--lease-namespace", ns, "--metrics-addr", &metrics])
                .args(extra)
                .env("POD_NAMESPACE", ns)
                .env("RUST_LOG", "info,kube=warn")
                .stdout(std::process::Stdio::inherit())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("start skein-operator (cargo build --workspace --bins first)"),
        )
    }
}

impl Operator {
    /// Starts the operator watching `ns` with its webhooks on a free local port, registered by URL under
    /// `config_name` (`--webhook-registration apply`) and injected pods counted every second, and waits until the
    /// API server holds the mutating webhook with a `caBundle`. Returns the operator and the URL it registered.
    pub async fn start_with_webhooks(
        client: &Client,
        ns: &str,
        metrics_port: u16,
        config_name: &str,
    ) -> (Self, String) {
        use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
        let port = skein_e2e::free_port();
        let (addr, url) = (format!("127.0.0.1:{port}"), format!("https://127.0.0.1:{port}"));
        let operator = Self::start(
            ns,
            metrics_port,
            &[
                "--webhook-addr",
                &addr,
                "--webhook-url",
                &url,
                "--webhook-config-name",
                config_name,
                "--agent-status-interval-secs",
                "1",
            ],
        );
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let registered = eventually("the webhooks to be registered with a caBundle", Duration::from_secs(60), || {
            let (m, name) = (mutating.clone(), config_name.to_string());
            async move {
                let hook = m.get_opt(&name).await.ok()??.webhooks?.into_iter().next()?;
                hook.client_config.ca_bundle.filter(|b| !b.0.is_empty()).map(|_| hook.client_config.url)
            }
        })
        .await;
        assert_eq!(registered, Some(format!("{url}/mutate-pods")));
        (operator, url)
    }
}

pub use skein_testkit::eventually;

/// A client for the cluster in `KUBECONFIG`, with the CRD installed. Cluster tests are `#[ignore]`d, so this runs
/// only under `--ignored`, where a missing `KUBECONFIG` is a failure, not a skip.
pub async fn cluster() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: cluster tests need a real Kubernetes API server (cargo test -p skein-e2e -- --ignored)"
    );
    let client = Client::try_default().await.expect("a client from KUBECONFIG");
    install_crd(&client).await;
    client
}

/// Applies the CRD exactly as generated and waits until the API server serves it.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(MANAGER).force();
    crds.patch("tracingpipelines.skein.dev", &apply, &Patch::Apply(TracingPipeline::crd())).await.expect("apply CRD");
    eventually("the CRD to be Established", Duration::from_secs(60), || {
        let crds = crds.clone();
        async move {
            let crd = crds.get("tracingpipelines.skein.dev").await.ok()?;
            crd.status?.conditions?.into_iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        }
    })
    .await;
}

/// A `TracingPipeline` manifest for server-side apply.
pub fn pipeline(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline", "metadata": {"name": name}, "spec": spec})
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python interpreter with `helm-sdkpy`; in a cluster test its absence is a failure, not a skip.
pub fn helm_python() -> String {
    let py = std::env::var("SKEIN_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py).args(["-c", "import helm_sdkpy"]).status().is_ok_and(|s| s.success());
    assert!(ok, "{py} lacks helm-sdkpy: .venv/bin/pip install --ignore-requires-python helm-sdkpy");
    py
}

/// Runs `scripts/helm.py` (real Helm through `helm-sdkpy`) with `args`; its output, or the error output.
pub fn helm(py: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(py).arg(repo().join("scripts/helm.py")).args(args).output().map_err(|e| e.to_string())?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(text) }
}

/// `config` acting as ServiceAccount `namespace/service_account` (`as`, `as-groups`), written to `dir`.
pub fn impersonating(
    mut config: kube::config::Kubeconfig,
    dir: &Path,
    namespace: &str,
    service_account: &str,
) -> PathBuf {
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{service_account}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = dir.join("kubeconfig-as-operator.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("kubeconfig yaml")).expect("write kubeconfig");
    path
}

/// Starts the real `skein-operator` out of cluster with the arguments of the chart's Deployment (`argv`, program
/// name first) as its ServiceAccount `service_account` in `namespace`: the listen addresses move to
/// `127.0.0.1:metrics_port` and `127.0.0.1:webhook_port`, and `extra` flags are appended.
pub fn run_as_chart(
    argv: &[String],
    namespace: &str,
    service_account: &str,
    metrics_port: u16,
    webhook_port: u16,
    extra: &[String],
    dir: &Path,
) -> Operator {
    let mut args: Vec<String> = argv[1..]
        .iter()
        .map(|a| match a.split_once('=') {
            Some(("--metrics-addr", _)) => format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            Some(("--webhook-addr", _)) => format!("--webhook-addr=127.0.0.1:{webhook_port}"),
            _ => a.clone(),
        })
        .collect();
    args.extend(extra.iter().cloned());
    let kubeconfig =
        impersonating(kube::config::Kubeconfig::read().expect("read KUBECONFIG"), dir, namespace, service_account);
    Operator(
        Command::new(skein_e2e::bin("skein-operator"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", namespace)
            .env("POD_NAME", format!("{service_account}-e2e"))
            .env("RUST_LOG", "info,kube=warn")
            .spawn()
            .expect("start skein-operator (cargo build --workspace --bins first)"),
    )
}
