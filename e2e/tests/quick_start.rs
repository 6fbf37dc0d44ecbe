//! README.md's "Run on Kubernetes" step 2, line by line, against a real Kubernetes API server (`KUBECONFIG` set;
//! `#[ignore]`d otherwise: `cargo test -p skein-e2e --test quick_start -- --ignored`).
//!
//! The test reads the commands out of the README's code block and performs each one as `kubectl`/`helm` would
//! (a line it does not understand fails the test, so the README cannot drift from what is tested). Two things stand
//! in for what a cluster without a kubelet cannot do: the operator's Deployment (its pods never start) is replaced
//! by the real `skein-operator` binary run out of cluster with the Deployment's own arguments as the chart's
//! ServiceAccount (as `chart.rs` does), and since no Service can route to it, the chart's two webhook
//! configurations are pointed at its local URL (`clientConfig.url` instead of `clientConfig.service`, the `caBundle`
//! left to the operator). `kubectl rollout status` becomes "the operator's `/readyz` answers 200".
//!
//! Before the README's steps, the admin's app already runs: namespace `shop` with a Deployment `web`, whose pod is
//! created without the agent. After them, `web`'s new pod has the agent, pointed at the collectors in namespace
//! `tracing`.

mod common;

use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use skein_operator::crd::TracingPipeline;

use common::{MANAGER, eventually, helm, helm_python, repo};

/// One README line, as the test performs it.
#[derive(Debug, PartialEq)]
enum Step {
    HelmInstall { release: String, chart: String, namespace: String },
    RolloutStatus { namespace: String, deployment: String },
    CreateNamespace(String),
    Apply { namespace: String, file: String },
    GetPipelines { namespace: String, name: Option<String> },
    AnnotateNamespace { namespace: String, key: String, value: String },
    LabelNamespace { namespace: String, key: String, value: String },
    RestartDeployments { namespace: String },
}

/// The commands of the README's step 2 code block, comments removed.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let step = readme.find("**2. Install the chart**").expect("README has step 2 of Run on Kubernetes");
    let block = &readme[step..];
    let start = block.find("```sh\n").expect("a sh block in step 2") + "```sh\n".len();
    let end = block[start..].find("```").expect("the block ends") + start;
    block[start..end]
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The step a README line asks for; panics on a line the test cannot perform.
fn parse(line: &str) -> Step {
    let words: Vec<&str> = line.split_whitespace().collect();
    let key_value = |kv: &str| {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}: expected key=value"));
        (k.to_string(), v.to_string())
    };
    match words.as_slice() {
        ["helm", "install", release, chart, "-n", ns, "--create-namespace"] => {
            Step::HelmInstall { release: (*release).into(), chart: (*chart).into(), namespace: (*ns).into() }
        }
        ["kubectl", "-n", ns, "rollout", "status", target] => Step::RolloutStatus {
            namespace: (*ns).into(),
            deployment: target.strip_prefix("deploy/").unwrap_or_else(|| panic!("{line}")).into(),
        },
        ["kubectl", "create", "namespace", ns] => Step::CreateNamespace((*ns).into()),
        ["kubectl", "-n", ns, "apply", "-f", file] => Step::Apply { namespace: (*ns).into(), file: (*file).into() },
        ["kubectl", "-n", ns, "get", "tp", rest @ ..] => {
            Step::GetPipelines { namespace: (*ns).into(), name: rest.first().map(|n| (*n).to_string()) }
        }
        ["kubectl", "annotate", "namespace", ns, kv] => {
            let (key, value) = key_value(kv);
            Step::AnnotateNamespace { namespace: (*ns).into(), key, value }
        }
        ["kubectl", "label", "namespace", ns, kv] => {
            let (key, value) = key_value(kv);
            Step::LabelNamespace { namespace: (*ns).into(), key, value }
        }
        ["kubectl", "-n", ns, "rollout", "restart", "deploy"] => Step::RestartDeployments { namespace: (*ns).into() },
        _ => panic!("README line not understood by the quick-start test (teach it, or fix the README): {line}"),
    }
}

#[test]
fn the_readme_quick_start_is_a_list_of_steps_the_cluster_test_performs() {
    let steps: Vec<Step> = readme_commands().iter().map(|l| parse(l)).collect();
    assert!(matches!(&steps[0], Step::HelmInstall { chart, .. } if chart == "charts/skein"), "{steps:?}");
    assert!(
        steps.iter().any(|s| matches!(s, Step::AnnotateNamespace { key, value, .. } if key == "skein.dev/inject" && value.contains('/'))),
        "the README enables a namespace for a pipeline in another namespace: {steps:?}"
    );
}

/// Uninstalls the release and deletes the README's namespaces even when an assertion fails.
struct Cleanup {
    py: String,
    release: String,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let operator_ns = self.namespaces[0].clone();
        let _ = helm(&self.py, &["uninstall", &self.release, &operator_ns]);
        let (namespaces, release) = (self.namespaces.clone(), self.release.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(client) = Client::try_default().await else { return };
                let dp = DeleteParams::default();
                let name = format!("{release}-operator");
                let _ = Api::<MutatingWebhookConfiguration>::all(client.clone()).delete(&name, &dp).await;
                let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone()).delete(&name, &dp).await;
                let ns = Api::<Namespace>::all(client.clone());
                for n in namespaces {
                    let _ = ns.delete(&n, &dp).await;
                }
            });
        })
        .join();
    }
}

/// Points every webhook of the chart-made configuration `name` at `url` + `path` instead of its Service (see the
/// module docs); the `caBundle` stays the operator's to set.
async fn to_url<K>(api: &Api<K>, name: &str, url: &str, path: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut config =
        serde_json::to_value(api.get(name).await.expect("the chart's webhook configuration")).expect("json");
    for hook in config["webhooks"].as_array_mut().expect("webhooks") {
        let client = hook["clientConfig"].as_object_mut().expect("clientConfig");
        client.remove("service");
        client.insert("url".into(), json!(format!("{url}{path}")));
    }
    api.replace(name, &PostParams::default(), &serde_json::from_value(config).expect("config")).await.expect("to url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn readme_quick_start_on_a_real_api_server() {
    let client = common::cluster().await;
    let py = helm_python();
    let steps: Vec<Step> = readme_commands().iter().map(|l| parse(l)).collect();
    let Step::HelmInstall { release, namespace: operator_ns, .. } = &steps[0] else { panic!("{steps:?}") };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // The README's fixed names: wait out a previous run's namespaces still terminating.
    let mut touched = vec![operator_ns.clone(), "shop".to_string()];
    for s in &steps {
        if let Step::CreateNamespace(n) = s {
            touched.push(n.clone());
        }
    }
    for n in &touched {
        eventually(&format!("namespace {n} to be absent"), Duration::from_secs(120), || {
            let (namespaces, n) = (namespaces.clone(), n.clone());
            async move { namespaces.get_opt(&n).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }
    let _cleanup = Cleanup { py: py.clone(), release: release.clone(), namespaces: touched };

    // The admin's app, running before Skein: namespace shop, Deployment web, a pod without the agent.
    let shop = serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("ns");
    namespaces.create(&PostParams::default(), &shop).await.expect("namespace shop");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}}}
    });
    let apply = PatchParams::apply(MANAGER).force();
    deployments.patch("web", &apply, &Patch::Apply(&web)).await.expect("deployment web");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let has_agent = |p: &Pod| {
        let spec = p.spec.as_ref();
        spec.is_some_and(|s| s.init_containers.iter().flatten().chain(&s.containers).any(|c| c.name == "skein-agent"))
    };
    eventually("web's first pod, without the agent", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.iter().find(|p| !has_agent(p)).map(|_| ())
        }
    })
    .await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let mut operator = None;
    let (metrics_port, webhook_port) = (skein_e2e::free_port(), skein_e2e::free_port());
    for (line, step) in readme_commands().iter().zip(&steps) {
        eprintln!("quick start: {line}");
        match step {
            Step::HelmInstall { release, chart, namespace } => {
                let chart = repo().join(chart);
                helm(&py, &["install", release, chart.to_str().expect("utf8"), namespace])
                    .unwrap_or_else(|e| panic!("{line}:\n{e}"));
            }
            Step::RolloutStatus { namespace, deployment } => {
                // The stand-ins for the operator's pods and its webhook Service (module docs).
                let url = format!("https://127.0.0.1:{webhook_port}");
                let name = deployment.clone();
                to_url(&Api::<MutatingWebhookConfiguration>::all(client.clone()), &name, &url, "/mutate-pods").await;
                let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone());
                to_url(&validating, &name, &url, "/validate-tracingpipelines").await;
                let d = Api::<Deployment>::namespaced(client.clone(), namespace)
                    .get(deployment)
                    .await
                    .expect("operator Deployment");
                let container =
                    &d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec").containers[0];
                let mut argv = vec!["skein-operator".to_string()];
                argv.extend(container.args.clone().unwrap_or_default());
                skein_operator::run::Args::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
                let sa =
                    d.spec.as_ref().and_then(|s| s.template.spec.as_ref()?.service_account_name.clone()).expect("sa");
                operator = Some(common::run_as_chart(
                    &argv,
                    namespace,
                    &sa,
                    metrics_port,
                    webhook_port,
                    &[format!("--webhook-url={url}")],
                    tmp.path(),
                ));
                let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
                eventually("the operator's /readyz to answer 200", Duration::from_secs(120), || {
                    let readyz = readyz.clone();
                    async move { reqwest::get(&readyz).await.ok()?.status().is_success().then_some(()) }
                })
                .await;
            }
            Step::CreateNamespace(n) => {
                let ns = serde_json::from_value(json!({"metadata": {"name": n}})).expect("ns");
                namespaces.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("{line}: {e}"));
            }
            Step::Apply { namespace, file } => {
                let text = std::fs::read_to_string(repo().join(file)).expect("manifest");
                let object: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
                let name = object["metadata"]["name"].as_str().expect("name").to_string();
                let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), namespace);
                pipelines
                    .patch(&name, &PatchParams::apply("kubectl").force(), &Patch::Apply(&object))
                    .await
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
            }
            Step::GetPipelines { namespace, name } => {
                // The admin reads the output before going on: the pipelines are listed and reconciled (their
                // spec accepted, ConfigurationGenerated=True, which is what injection waits for).
                let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), namespace);
                let listed =
                    eventually(&format!("{line} to show reconciled pipelines"), Duration::from_secs(60), || {
                        let pipelines = pipelines.clone();
                        async move {
                            let items = pipelines.list(&ListParams::default()).await.ok()?.items;
                            let reconciled =
                                items.iter().all(|tp| skein_operator::inject::ready_for_injection(tp).is_ok());
                            (!items.is_empty() && reconciled).then_some(items)
                        }
                    })
                    .await;
                if let Some(name) = name {
                    assert!(listed.iter().any(|tp| &tp.name_any() == name), "{line}");
                }
            }
            Step::AnnotateNamespace { namespace, key, value } => {
                let patch = json!({"metadata": {"annotations": {key: value}}});
                namespaces.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
                // Taken in: the pipeline it names counts the namespace (NAMESPACES in `kubectl get tp`), from the
                // same namespace cache the webhook decides with. An admin types the next line seconds later.
                if let Some((pns, name)) = value.split_once('/') {
                    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), pns);
                    eventually(
                        &format!("{pns}/{name} to count namespace {namespace}"),
                        Duration::from_secs(60),
                        || {
                            let (pipelines, name) = (pipelines.clone(), name.to_string());
                            async move {
                                let agents = pipelines.get(&name).await.ok()?.status?.agents?;
                                (agents.namespaces >= 1).then_some(())
                            }
                        },
                    )
                    .await;
                }
            }
            Step::LabelNamespace { namespace, key, value } => {
                let patch = json!({"metadata": {"labels": {key: value}}});
                namespaces.patch(namespace, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("label");
            }
            Step::RestartDeployments { namespace } => {
                // What `kubectl rollout restart` writes, on every Deployment of the namespace.
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                for d in api.list(&ListParams::default()).await.expect("deployments").items {
                    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
                    api.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.expect("restart");
                }
            }
        }
    }
    assert!(operator.is_some(), "the README waits for the operator");

    // web's new pod has the agent, sending to the collectors of tracing/dev across namespaces.
    let pod = eventually("a pod of web with the agent", Duration::from_secs(90), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.into_iter().find(|p| has_agent(p))
        }
    })
    .await;
    let spec = pod.spec.clone().expect("spec");
    let agent =
        spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == "skein-agent").expect("agent");
    let args = agent.args.clone().unwrap_or_default();
    assert!(args.contains(&"--collector-dns=dev-collector-headless.tracing.svc:4317".to_string()), "{args:?}");
    assert!(
        pod.annotations().get("skein.dev/injected").is_some_and(|a| a.starts_with("tracing/dev@")),
        "{:?}",
        pod.annotations()
    );
    // And `kubectl -n tracing get tp dev -o wide` counts it.
    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), "tracing");
    let agents = eventually("status.agents of dev to count shop's pod", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move { pipelines.get("dev").await.ok()?.status?.agents.filter(|a| a.injected >= 1 && a.namespaces >= 1) }
    })
    .await;
    eprintln!("quick start: status.agents of tracing/dev: {agents:?}");
}
