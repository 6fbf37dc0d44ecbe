//! The Helm chart against a real Kubernetes API server (`KUBECONFIG` set; `#[ignore]`d otherwise:
//! `cargo test -p skein-e2e --test <name> -- --ignored`).
//!
//! Installs `charts/skein` with real Helm (`helm-sdkpy`'s `Install`, `wait=False`: the review cluster has no
//! kubelet, so the operator's pods stay Pending), checks every object the chart promises, then runs the real
//! `skein-operator` out of cluster with the arguments of the installed Deployment, impersonating the chart's
//! ServiceAccount — so the operator works with exactly the chart's RBAC: it takes the Lease, issues its webhook
//! certificate, patches `caBundle` into the chart's webhook configurations, reconciles an example pipeline and
//! removes its finalizer. Finally `helm uninstall` removes everything the chart created.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use skein_operator::crd::TracingPipeline;
use skein_operator::run::Args;
use skein_operator::webhook::register::Mode;

use common::{MANAGER, eventually, helm, helm_python, repo};

const RELEASE: &str = "skein-e2e";
/// `<fullname>-operator`: the release name contains the chart name, so the fullname is the release name.
const OPERATOR: &str = "skein-e2e-operator";

/// Uninstalls the release and deletes the namespace even when an assertion fails: a left-over validating webhook
/// would stand in front of every later `TracingPipeline` in the cluster.
struct Cleanup {
    py: String,
    namespace: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = helm(&self.py, &["uninstall", RELEASE, &self.namespace]);
        let ns = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else { return };
                let dp = DeleteParams::default();
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(OPERATOR, &dp).await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone()).delete(OPERATOR, &dp).await;
                let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(OPERATOR, &dp).await;
                let _ = Api::<ClusterRole>::all(client.clone()).delete(OPERATOR, &dp).await;
                let _ = Api::<Namespace>::all(client).delete(&ns, &dp).await;
            });
        })
        .join();
    }
}

async fn exists<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("get")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn the_chart_installs_a_working_operator_with_its_rbac_and_uninstalls_cleanly() {
    let client = common::cluster().await;
    let py = helm_python();
    let ns = format!("skein-chart-e2e-{}", std::process::id());
    let _cleanup = Cleanup { py: py.clone(), namespace: ns.clone() };

    // 1. Install. Validation is set to Ignore because no operator pod can run here (no kubelet): the API server
    //    cannot reach the webhook Service, and the default `Fail` would refuse the pipeline of step 4.
    let tmp = tempfile::tempdir().expect("tempdir");
    let values = tmp.path().join("values.json");
    std::fs::write(&values, r#"{"webhook": {"validation": {"failurePolicy": "Ignore"}}}"#).expect("values");
    let chart = repo().join("charts/skein");
    let started = Instant::now();
    let out = helm(&py, &["install", RELEASE, chart.to_str().expect("utf8"), &ns, values.to_str().expect("utf8")])
        .unwrap_or_else(|e| panic!("helm install failed:\n{e}"));
    println!("helm install: {out} in {:?}", started.elapsed());

    // 2. Everything the chart promises is stored.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment = exists(&deployments, OPERATOR).await.expect("the operator Deployment");
    let spec = deployment.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
    let container = &pod.containers[0];
    let image = container.image.as_deref().expect("image");
    assert_eq!(image, format!("ghcr.io/skein-dev/skein-operator:{}", env!("CARGO_PKG_VERSION")));
    let sc = container.security_context.as_ref().expect("securityContext");
    assert_eq!((sc.read_only_root_filesystem, sc.run_as_non_root), (Some(true), Some(true)));
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "helm.sh/chart"] {
        assert!(labels.contains_key(key), "{key} on the Deployment: {labels:?}");
    }
    assert!(exists(&Api::<ServiceAccount>::namespaced(client.clone(), &ns), OPERATOR).await.is_some());
    let role = exists(&Api::<ClusterRole>::all(client.clone()), OPERATOR).await.expect("ClusterRole");
    let rules = role.rules.unwrap_or_default();
    assert!(rules.iter().any(|r| r.resources.iter().flatten().any(|x| x == "tracingpipelines/status")));
    assert!(
        !rules.iter().any(|r| r.verbs.iter().any(|v| v == "*") || r.resources.iter().flatten().any(|x| x == "*")),
        "no wildcards"
    );
    assert!(exists(&Api::<ClusterRoleBinding>::all(client.clone()), OPERATOR).await.is_some());
    assert!(exists(&Api::<Role>::namespaced(client.clone(), &ns), OPERATOR).await.is_some());
    assert!(exists(&Api::<RoleBinding>::namespaced(client.clone(), &ns), OPERATOR).await.is_some());
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let webhook_service = format!("{OPERATOR}-webhook");
    let svc = exists(&services, &webhook_service).await.expect("webhook Service");
    assert_eq!(svc.spec.and_then(|s| s.ports).expect("ports")[0].port, 443);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let m = exists(&mutating, OPERATOR).await.expect("MutatingWebhookConfiguration");
    let hook = &m.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    let target = hook.client_config.service.as_ref().expect("service reference");
    assert_eq!((target.namespace.as_str(), target.name.as_str()), (ns.as_str(), webhook_service.as_str()));
    assert!(exists(&validating, OPERATOR).await.is_some());

    // 3. The Deployment's arguments, as Helm rendered them, are the operator's own flags.
    let mut argv = vec!["skein-operator".to_string()];
    argv.extend(container.args.clone().unwrap_or_default());
    let args = Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert_eq!(args.webhook_registration, Mode::CaBundle);
    assert_eq!(
        (args.webhook_service.as_str(), args.webhook_config_name.as_str()),
        (webhook_service.as_str(), OPERATOR)
    );
    assert!(args.leader_election);

    // 4. Those arguments, as the chart's ServiceAccount (listen addresses moved to free local ports).
    let metrics_port = skein_e2e::free_port();
    let webhook_port = skein_e2e::free_port();
    let mut operator = common::run_as_chart(&argv, &ns, OPERATOR, metrics_port, webhook_port, &[], tmp.path());
    let started = Instant::now();
    let http = reqwest::Client::new();
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    eventually("the operator to turn ready with the chart's RBAC", Duration::from_secs(90), || {
        let (http, readyz) = (http.clone(), readyz.clone());
        async move { http.get(&readyz).send().await.ok()?.status().is_success().then_some(()) }
    })
    .await;
    println!("operator ready (Lease, certificate, caBundle) in {:?}", started.elapsed());
    let secret = exists(&Api::<Secret>::namespaced(client.clone(), &ns), &format!("{OPERATOR}-webhook-tls"))
        .await
        .expect("the webhook certificate Secret");
    let ca = secret.data.as_ref().and_then(|d| d.get("ca.crt")).expect("ca.crt").0.clone();
    let m = exists(&mutating, OPERATOR).await.expect("mutating");
    let hook = &m.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(hook.client_config.ca_bundle.as_ref().map(|b| b.0.clone()), Some(ca.clone()), "caBundle patched in");
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"), "the chart's own fields are kept");
    let v = exists(&validating, OPERATOR).await.expect("validating");
    assert_eq!(
        v.webhooks.as_ref().expect("webhooks")[0].client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        Some(ca)
    );
    let lease = exists(&Api::<Lease>::namespaced(client.clone(), &ns), &format!("{OPERATOR}-leader")).await;
    assert!(lease.and_then(|l| l.spec?.holder_identity).is_some(), "the leader Lease is held");

    // An example pipeline is reconciled (children applied, status written) and deleted (finalizer removed).
    let example: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/skein/examples/pipeline-dev.yaml")).expect("read"),
    )
    .expect("example yaml");
    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), &ns);
    pipelines
        .patch("dev", &PatchParams::apply(MANAGER).force(), &Patch::Apply(&example))
        .await
        .expect("apply pipeline");
    eventually("the pipeline's configuration to be generated", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move {
            let tp = pipelines.get("dev").await.ok()?;
            let conditions = tp.status?.conditions;
            conditions.iter().any(|c| c.type_ == "ConfigurationGenerated" && c.status == "True").then_some(())
        }
    })
    .await;
    assert!(exists(&Api::<StatefulSet>::namespaced(client.clone(), &ns), "dev-collector").await.is_some());
    assert!(exists(&services, "dev-query").await.is_some());
    pipelines.delete("dev", &DeleteParams::default()).await.expect("delete pipeline");
    eventually("the pipeline's finalizer to be removed", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move { pipelines.get_opt("dev").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let _ = operator.0.kill();
    let _ = operator.0.wait();

    // 5. Uninstall removes what the chart created.
    helm(&py, &["uninstall", RELEASE, &ns]).unwrap_or_else(|e| panic!("helm uninstall failed:\n{e}"));
    eventually("the chart's objects to be deleted", Duration::from_secs(60), || {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let gone = exists(&Api::<Deployment>::namespaced(client.clone(), &ns), OPERATOR).await.is_none()
                && exists(&Api::<ServiceAccount>::namespaced(client.clone(), &ns), OPERATOR).await.is_none()
                && exists(&Api::<Role>::namespaced(client.clone(), &ns), OPERATOR).await.is_none()
                && exists(&Api::<RoleBinding>::namespaced(client.clone(), &ns), OPERATOR).await.is_none()
                && exists(&Api::<Service>::namespaced(client.clone(), &ns), &format!("{OPERATOR}-webhook"))
                    .await
                    .is_none()
                && exists(&Api::<ClusterRole>::all(client.clone()), OPERATOR).await.is_none()
                && exists(&Api::<ClusterRoleBinding>::all(client.clone()), OPERATOR).await.is_none()
                && exists(&Api::<MutatingWebhookConfiguration>::all(client.clone()), OPERATOR).await.is_none()
                && exists(&Api::<ValidatingWebhookConfiguration>::all(client.clone()), OPERATOR).await.is_none();
            gone.then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn the_impersonating_kubeconfig_keeps_the_credentials_and_acts_as_the_service_account() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("ca.crt"), "not read here").expect("ca");
    let original = tmp.path().join("config");
    std::fs::write(
        &original,
        "apiVersion: v1\nkind: Config\ncurrent-context: admin\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: ca.crt}\ncontexts:\n- name: admin\n  context: {cluster: c, user: admin}\nusers:\n- name: admin\n  user: {token: s3cret}\n",
    )
    .expect("kubeconfig");
    let path = common::impersonating(
        kube::config::Kubeconfig::read_from(&original).expect("read"),
        tmp.path(),
        "ns1",
        OPERATOR,
    );
    let written = kube::config::Kubeconfig::read_from(&path).expect("read back");
    let auth = written.auth_infos[0].auth_info.clone().expect("user");
    assert_eq!(auth.impersonate.as_deref(), Some("system:serviceaccount:ns1:skein-e2e-operator"));
    assert!(auth.impersonate_groups.unwrap_or_default().contains(&"system:serviceaccounts:ns1".to_string()));
    let config = kube::Config::from_custom_kubeconfig(written, &kube::config::KubeConfigOptions::default())
        .await
        .expect("a usable config");
    assert_eq!(config.auth_info.impersonate.as_deref(), Some("system:serviceaccount:ns1:skein-e2e-operator"));
    // The relative CA path was made absolute, so the copy works from another directory.
    let text = std::fs::read_to_string(&path).expect("written");
    let ca = tmp.path().join("ca.crt");
    assert!(text.contains(&format!("certificate-authority: {}", ca.display())), "{text}");
}
