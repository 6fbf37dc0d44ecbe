//! The admission webhooks against a real Kubernetes API server (`KUBECONFIG` set; `#[ignore]`d otherwise:
//! `cargo test -p skein-e2e --test <name> -- --ignored`).
//!
//! The operator runs out of cluster as the real `skein-operator` binary and registers its webhooks by URL
//! (`--webhook-url https://127.0.0.1:<port>`) with its self-issued CA, so the API server calls it over TLS. Written
//! for a control plane without a scheduler or kubelet: pods are stored and stay Pending, which is all injection
//! needs (the webhook runs when the pod is created). Its own test binary, so it never runs beside `operator.rs`:
//! the validating webhook applies to every `TracingPipeline` in the cluster while it is registered.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skein_operator::crd::TracingPipeline;

use common::{MANAGER, Operator, eventually, pipeline};

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app.kubernetes.io/name": "checkout"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/checkout:1", "env": [
            {"name": "OTEL_PROPAGATORS", "value": "tracecontext"}
        ]}]}
    }))
    .expect("pod")
}

fn agent_of(pod: &Pod) -> Option<k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().chain(&spec.containers).find(|c| c.name == "skein-agent").cloned()
}

fn env(pod: &Pod, container: &str, name: &str) -> Option<String> {
    let c = pod.spec.as_ref()?.containers.iter().find(|c| c.name == container)?;
    c.env.iter().flatten().find(|e| e.name == name)?.value.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn webhooks_inject_skip_and_validate_on_a_real_api_server() {
    let client = common::cluster().await;
    let apply = PatchParams::apply(MANAGER).force();

    let id = std::process::id();
    let ns = format!("skein-webhook-e2e-{id}");
    let config_name = format!("skein-e2e-{id}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labelled = json!({"metadata": {"name": ns, "labels": {"skein.dev/injection": "enabled"}}});
    namespaces.create(&PostParams::default(), &serde_json::from_value(labelled).expect("ns")).await.expect("namespace");
    let _cleanup = common::Cleanup { config_name: config_name.clone(), namespaces: vec![ns.clone()] };

    let metrics_port = skein_e2e::free_port();
    let (_operator, url) = Operator::start_with_webhooks(&client, &ns, metrics_port, &config_name).await;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let v = validating.get(&config_name).await.expect("the validating webhook is registered too");
    let hook = &v.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hook.client_config.url, Some(format!("{url}/validate-tracingpipelines")));
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("skein-operator-webhook-tls")
        .await
        .expect("the operator keeps its certificate in a Secret");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // A valid pipeline passes the validating webhook; the reconciler accepts it.
    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), &ns);
    let spec = json!({
        "agent": {"rolloutOnChange": true},
        "sampling": {"head": {"default_strategy": {"type": "probabilistic", "param": 0.25}}},
        "redaction": [{"key": "(?i)^authorization$", "action": "mask"}],
    });
    pipelines.patch("prod", &apply, &Patch::Apply(pipeline("prod", spec.clone()))).await.expect("a valid pipeline");
    eventually("prod ConfigurationGenerated=True", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move {
            let tp = pipelines.get("prod").await.ok()?;
            tp.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "ConfigurationGenerated" && c.status == "True")
                .then_some(())
        }
    })
    .await;

    // An invalid pipeline is refused by the API server with the webhook's message naming the field.
    let bad = json!({"redaction": [{"key": "(", "action": "mask"}]});
    let refused = pipelines.patch("bad", &apply, &Patch::Apply(pipeline("bad", bad))).await;
    match &refused {
        Err(kube::Error::Api(e)) => {
            assert!(e.message.contains("validate.tracingpipelines.skein.dev"), "{}", e.message);
            assert!(e.message.contains("spec.redaction[0].key"), "{}", e.message);
        }
        other => panic!("the invalid pipeline must be refused, got {other:?}"),
    }
    assert!(pipelines.get_opt("bad").await.expect("get").is_none());

    // A pod in the labelled namespace is stored with the agent and the SDK environment.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created_at = Instant::now();
    let stored = pods.create(&PostParams::default(), &pod("checkout", json!({}))).await.expect("create pod");
    let create_latency = created_at.elapsed();
    let agent = agent_of(&stored).expect("the stored pod has the agent");
    assert!(
        agent.args.iter().flatten().any(|a| a == &format!("--collector-dns=prod-collector-headless.{ns}.svc:4317")),
        "{:?}",
        agent.args
    );
    assert!(agent.env.iter().flatten().any(|e| e.name == "SKEIN_CONFIG_YAML"), "redaction rules passed inline");
    assert_eq!(env(&stored, "app", "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(), Some("http://localhost:4317"));
    assert_eq!(env(&stored, "app", "OTEL_SERVICE_NAME").as_deref(), Some("checkout"));
    assert_eq!(env(&stored, "app", "OTEL_TRACES_SAMPLER").as_deref(), Some("parentbased_jaeger_remote"));
    assert_eq!(env(&stored, "app", "OTEL_PROPAGATORS").as_deref(), Some("tracecontext"), "user value kept");
    let injected = stored.annotations().get("skein.dev/injected").cloned().expect("injected annotation");
    assert!(injected.starts_with("prod@"), "{injected}");
    let native =
        stored.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|i| i[0].name == "skein-agent");

    // A pod asking for a pipeline that does not exist is stored unchanged, annotated, and a Warning Event says why.
    let skipped = pods
        .create(&PostParams::default(), &pod("orphan", json!({"skein.dev/inject": "missing"})))
        .await
        .expect("a skip never blocks the pod");
    assert!(agent_of(&skipped).is_none());
    assert_eq!(
        skipped.annotations().get("skein.dev/injection-status").map(String::as_str),
        Some(format!("skipped: TracingPipeline {ns}/missing not found").as_str())
    );
    assert_eq!(env(&skipped, "app", "OTEL_SERVICE_NAME"), None);
    let events: Api<Event> = Api::all(client.clone());
    let warning = eventually("the InjectionSkipped Warning Event", Duration::from_secs(30), || {
        let (events, ns) = (events.clone(), ns.clone());
        async move {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("InjectionSkipped")
                    && e.note.as_deref().is_some_and(|n| n.contains(&format!("pod {ns}/orphan")))
            })
        }
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // status.agents counts the injected pod.
    let first_hash = injected.rsplit_once('@').map(|(_, h)| h.to_string()).expect("hash");
    eventually("status.agents.injected >= 1", Duration::from_secs(60), || {
        let (pipelines, first_hash) = (pipelines.clone(), first_hash.clone());
        async move {
            let agents = pipelines.get("prod").await.ok()?.status?.agents?;
            (agents.injected >= 1 && agents.config_hash == first_hash).then_some(())
        }
    })
    .await;

    // A Deployment's pods are injected by the ReplicaSet controller's create; a changed agent setting makes them
    // stale and, with rolloutOnChange, the operator restarts the Deployment.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let web = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}}}
    });
    deployments.patch("web", &apply, &Patch::Apply(web)).await.expect("deployment");
    eventually("an injected pod of the Deployment", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items
                .iter()
                .any(|p| agent_of(p).is_some() && env(p, "web", "OTEL_SERVICE_NAME").as_deref() == Some("web"))
                .then_some(())
        }
    })
    .await;
    let mut changed = spec.clone();
    changed["agent"]["memoryBufferBytes"] = json!(8 << 20);
    let changed_at = Instant::now();
    pipelines.patch("prod", &apply, &Patch::Apply(pipeline("prod", changed))).await.expect("change the agent");
    let new_hash = eventually("the Deployment rolled onto the new agent hash", Duration::from_secs(90), || {
        let (deployments, first) = (deployments.clone(), injected.clone());
        async move {
            let d = deployments.get("web").await.ok()?;
            let h = d.spec?.template.metadata?.annotations?.get("skein.dev/agent-config-hash").cloned()?;
            (!first.ends_with(&h)).then_some(h)
        }
    })
    .await;
    let rollout_latency = changed_at.elapsed();
    let stale = eventually("status.agents with the new hash", Duration::from_secs(60), || {
        let (pipelines, h) = (pipelines.clone(), new_hash.clone());
        async move { pipelines.get("prod").await.ok()?.status?.agents.filter(|a| a.config_hash == h) }
    })
    .await;
    assert!(stale.stale >= 1, "the bare pod keeps its old agent: {stale:?}");

    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains(r#"skein_operator_admissions_total{webhook="mutate-pods",outcome="injected"}"#), "{text}");
    assert!(text.contains(r#"outcome="denied"}"#), "{text}");
    assert!(text.contains("skein_operator_agent_rollouts_total 1"), "{text}");

    eprintln!(
        "webhook e2e: pod create through the injection webhook: {} ms (native sidecar: {native}); agent change -> \
         Deployment rolled: {} ms",
        create_latency.as_millis(),
        rollout_latency.as_millis()
    );
}
