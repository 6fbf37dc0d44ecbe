//! What an admin sees of injection on a real Kubernetes API server (`KUBECONFIG` set; `#[ignore]`d otherwise:
//! `cargo test -p skein-e2e --test injection -- --ignored`): a namespace pointed at a pipeline in another
//! namespace by annotation, admission warnings, one current Event per skipped pod on its workload, a pod created
//! while the webhook was down counted as `uninjected` with an Event saying how to fix it, and an Event on every
//! workload the operator rolls. Its own test binary, so it never runs beside `webhook.rs` (both register a
//! validating webhook that applies to every `TracingPipeline`). Written for a control plane without a kubelet: the
//! ReplicaSet controller creates pods, which stay Pending.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skein_operator::crd::TracingPipeline;

use common::{MANAGER, Operator, eventually, pipeline};

fn bare_pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}
    })
}

fn deployment(name: &str, template_annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}, "annotations": template_annotations},
                              "spec": {"containers": [{"name": name, "image": format!("registry.example.com/{name}:1")}]}}}
    })
}

fn has_agent(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.init_containers.iter().flatten().chain(&s.containers).any(|c| c.name == "skein-agent"))
}

/// Creates a pod through the raw API and returns the `Warning` headers of the answer (what `kubectl` prints).
async fn create_with_warnings(client: &Client, ns: &str, pod: &Value) -> Vec<String> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
        .create(&PostParams::default(), serde_json::to_vec(pod).expect("json"))
        .expect("request");
    let response = client.send(request.map(kube::client::Body::from)).await.expect("create pod");
    assert!(response.status().is_success(), "{}", response.status());
    response.headers().get_all("warning").iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
}

/// The Events in `ns` with `reason` about `kind/name`.
async fn events_about(events: &Api<Event>, reason: &str, kind: &str, name: &str) -> Vec<Event> {
    let list = events.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn injection_tells_the_admin_what_happened_on_a_real_api_server() {
    let client = common::cluster().await;
    let apply = PatchParams::apply(MANAGER).force();
    let id = std::process::id();
    let (tracing_ns, app_ns, config_name) =
        (format!("skein-inj-tracing-{id}"), format!("skein-inj-app-{id}"), format!("skein-inj-e2e-{id}"));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _cleanup =
        common::Cleanup { config_name: config_name.clone(), namespaces: vec![tracing_ns.clone(), app_ns.clone()] };
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": tracing_ns}})).expect("ns"))
        .await
        .expect("pipeline namespace");
    // The app namespace is pointed at the pipeline in the other namespace, by annotation alone.
    let app = json!({"metadata": {"name": app_ns, "annotations": {"skein.dev/inject": format!("{tracing_ns}/prod")}}});
    namespaces.create(&PostParams::default(), &serde_json::from_value(app).expect("ns")).await.expect("app namespace");

    // A pod created while no webhook answers: stored without the agent and without a skip reason.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &app_ns);
    let early: Pod = serde_json::from_value(bare_pod("early", json!({}))).expect("pod");
    let early = pods.create(&PostParams::default(), &early).await.expect("early pod");
    assert!(!has_agent(&early));

    let metrics_port = skein_e2e::free_port();
    let _operator = Operator::start_with_webhooks(&client, &tracing_ns, metrics_port, &config_name).await;
    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), &tracing_ns);
    let spec = json!({"agent": {"rolloutOnChange": true}});
    pipelines.patch("prod", &apply, &Patch::Apply(pipeline("prod", spec.clone()))).await.expect("pipeline");
    eventually("prod ConfigurationGenerated=True (ready for injection)", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move { skein_operator::inject::ready_for_injection(&pipelines.get("prod").await.ok()?).ok() }
    })
    .await;

    // 1. The early pod is counted as uninjected, with an Event on the pipeline that says how to fix it.
    let agents = eventually("status.agents.uninjected = 1", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move { pipelines.get("prod").await.ok()?.status?.agents.filter(|a| a.uninjected == 1) }
    })
    .await;
    assert_eq!((agents.injected, agents.namespaces), (0, 1), "{agents:?}");
    let tracing_events: Api<Event> = Api::namespaced(client.clone(), &tracing_ns);
    let warned = eventually("the PodsWithoutAgent Event", Duration::from_secs(30), || {
        let events = tracing_events.clone();
        async move { events_about(&events, "PodsWithoutAgent", "TracingPipeline", "prod").await.into_iter().next() }
    })
    .await;
    let note = warned.note.unwrap_or_default();
    assert!(note.contains(&format!("{app_ns}/early")), "{note}");

    // 2. A Deployment in the annotated namespace gets the agent with the collectors' cross-namespace address.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app_ns);
    deployments.patch("web", &apply, &Patch::Apply(deployment("web", json!({})))).await.expect("deployment web");
    let injected = eventually("an injected pod of web", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
            list.items.into_iter().find(has_agent)
        }
    })
    .await;
    let spec_of = injected.spec.clone().expect("spec");
    let agent = spec_of.init_containers.iter().flatten().chain(&spec_of.containers).find(|c| c.name == "skein-agent");
    let args = agent.and_then(|c| c.args.clone()).unwrap_or_default();
    let want = format!("--collector-dns=prod-collector-headless.{tracing_ns}.svc:4317");
    assert!(args.contains(&want), "{args:?}");
    let first = injected.annotations().get("skein.dev/injected").cloned().expect("injected annotation");

    // 3. Two pods skipped for different reasons: each gets its own Event with its own text, on the pod (bare
    //    pods have no workload), and whoever created them gets the reason as an admission warning.
    let app_events: Api<Event> = Api::namespaced(client.clone(), &app_ns);
    let mut warnings = Vec::new();
    for (name, wanted) in [("lost-a", "missing-a"), ("lost-b", "missing-b")] {
        let w = create_with_warnings(&client, &app_ns, &bare_pod(name, json!({"skein.dev/inject": wanted}))).await;
        assert!(w.iter().any(|w| w.contains(&format!("TracingPipeline {app_ns}/{wanted} not found"))), "{w:?}");
        warnings.extend(w);
    }
    for (name, wanted) in [("lost-a", "missing-a"), ("lost-b", "missing-b")] {
        let event = eventually(&format!("the InjectionSkipped Event of {name}"), Duration::from_secs(30), || {
            let events = app_events.clone();
            async move { events_about(&events, "InjectionSkipped", "Pod", name).await.into_iter().next() }
        })
        .await;
        let note = event.note.unwrap_or_default();
        assert!(note.contains(&format!("pod {app_ns}/{name} ")), "{note}");
        assert!(note.contains(wanted), "the note is this pod's own reason: {note}");
        assert_eq!(event.type_.as_deref(), Some("Warning"));
    }

    // 4. A Deployment whose pods name a missing pipeline: the Event is on the Deployment.
    let lost = deployment("lost", json!({"skein.dev/inject": "nope"}));
    deployments.patch("lost", &apply, &Patch::Apply(lost)).await.expect("deployment lost");
    let event = eventually("the InjectionSkipped Event on Deployment lost", Duration::from_secs(60), || {
        let events = app_events.clone();
        async move { events_about(&events, "InjectionSkipped", "Deployment", "lost").await.into_iter().next() }
    })
    .await;
    assert!(event.note.unwrap_or_default().contains("nope not found"));

    // 5. A changed agent setting rolls web, and web gets an Event with the old and new hash.
    let mut changed = spec.clone();
    changed["agent"]["memoryBufferBytes"] = json!(8 << 20);
    pipelines.patch("prod", &apply, &Patch::Apply(pipeline("prod", changed))).await.expect("change the agent");
    let rolled = eventually("the AgentRolledOut Event on Deployment web", Duration::from_secs(90), || {
        let events = app_events.clone();
        async move { events_about(&events, "AgentRolledOut", "Deployment", "web").await.into_iter().next() }
    })
    .await;
    let note = rolled.note.unwrap_or_default();
    let old_hash = first.rsplit_once('@').map(|(_, h)| h.to_string()).expect("hash");
    let new_hash = deployments
        .get("web")
        .await
        .expect("web")
        .spec
        .and_then(|s| s.template.metadata?.annotations?.get("skein.dev/agent-config-hash").cloned())
        .expect("rolled");
    assert!(note.contains(&old_hash) && note.contains(&new_hash), "old {old_hash}, new {new_hash}: {note}");
    assert_eq!(rolled.type_.as_deref(), Some("Normal"));
    eprintln!("injection e2e: admission warnings {warnings:?}; rollout Event: {note}");
}
