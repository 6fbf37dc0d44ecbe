//! Injected agents after injection: counting them into each pipeline's `status.agents`, and rolling the workloads
//! of pods on an old agent configuration when the pipeline asks for it (`spec.agent.rolloutOnChange`).
//!
//! Pods are found by the labels the webhook sets (`skein.dev/pipeline`, `skein.dev/pipeline-namespace`) through a
//! metadata-only watch, so the operator holds names, labels, annotations and owners, never whole pod specs. A pod
//! is stale when the hash in its `skein.dev/injected` annotation differs from [`inject::agent_hash`] of the pipeline
//! now. A rollout is the `kubectl rollout restart` of the workload: a pod-template annotation
//! (`skein.dev/agent-config-hash`) set to the new hash, once per workload and hash.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::{AgentsStatus, TracingPipeline};
use crate::inject::{self, INJECTED_ANNOTATION, PIPELINE_LABEL, PIPELINE_NAMESPACE_LABEL, ROLLOUT_ANNOTATION};
use crate::metrics::Metrics;
use crate::resources::Defaults;

/// Field manager of `status.agents` (kept apart from the reconciler's status fields).
pub const STATUS_MANAGER: &str = "skein-operator-agents";

/// A workload that owns injected pods.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A ReplicaSet (its Deployment, if any, is looked up).
    ReplicaSet(String, String),
    /// A StatefulSet.
    StatefulSet(String, String),
    /// A DaemonSet.
    DaemonSet(String, String),
}

/// Whether a pod belongs to pipeline `namespace/name`.
pub fn belongs(pod: &ObjectMeta, namespace: &str, name: &str) -> bool {
    let labels = pod.labels.as_ref();
    labels.and_then(|l| l.get(PIPELINE_LABEL)).is_some_and(|v| v == name)
        && labels.and_then(|l| l.get(PIPELINE_NAMESPACE_LABEL)).is_some_and(|v| v == namespace)
}

fn pod_hash(pod: &ObjectMeta) -> Option<&str> {
    pod.annotations.as_ref()?.get(INJECTED_ANNOTATION).and_then(|a| inject::injected_hash(a))
}

/// Counts a pipeline's injected pods and those on another agent-config hash than `hash`.
pub fn count<'a>(pods: impl IntoIterator<Item = &'a ObjectMeta>, hash: &str) -> AgentsStatus {
    let mut status = AgentsStatus { config_hash: hash.to_string(), ..Default::default() };
    for pod in pods {
        if pod.deletion_timestamp.is_some() {
            continue;
        }
        status.injected += 1;
        if pod_hash(pod) != Some(hash) {
            status.stale += 1;
        }
    }
    status
}

/// The workloads owning pods on another hash than `hash` (bare pods have none and are left alone).
pub fn stale_owners<'a>(pods: impl IntoIterator<Item = &'a ObjectMeta>, hash: &str) -> BTreeSet<Owner> {
    let mut owners = BTreeSet::new();
    for pod in pods {
        if pod.deletion_timestamp.is_some() || pod_hash(pod) == Some(hash) {
            continue;
        }
        let ns = pod.namespace.clone().unwrap_or_default();
        let controller = pod.owner_references.iter().flatten().find(|o| o.controller == Some(true));
        if let Some(o) = controller {
            match o.kind.as_str() {
                "ReplicaSet" => owners.insert(Owner::ReplicaSet(ns, o.name.clone())),
                "StatefulSet" => owners.insert(Owner::StatefulSet(ns, o.name.clone())),
                "DaemonSet" => owners.insert(Owner::DaemonSet(ns, o.name.clone())),
                _ => false,
            };
        }
    }
    owners
}

/// The merge patch that rolls a workload onto `hash`.
pub fn rollout_patch(hash: &str) -> serde_json::Value {
    json!({"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: hash}}}}})
}

fn template_hash(meta: Option<&ObjectMeta>) -> Option<&str> {
    meta?.annotations.as_ref()?.get(ROLLOUT_ANNOTATION).map(String::as_str)
}

/// Rolls `owner`'s workload onto `hash` unless its template already carries it. Returns whether it patched.
///
/// # Errors
/// Kubernetes API failures (RBAC: `get` ReplicaSets; `get`, `patch` Deployments, StatefulSets, DaemonSets).
pub async fn roll(client: &Client, owner: &Owner, hash: &str) -> kube::Result<bool> {
    match owner {
        Owner::ReplicaSet(ns, name) => {
            let Some(rs) = Api::<ReplicaSet>::namespaced(client.clone(), ns).get_opt(name).await? else {
                return Ok(false);
            };
            let deployment =
                rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment");
            let Some(d) = deployment else { return Ok(false) };
            let api = Api::<Deployment>::namespaced(client.clone(), ns);
            roll_template(&api, &d.name, hash, |d| d.spec.as_ref().and_then(|s| s.template.metadata.as_ref())).await
        }
        Owner::StatefulSet(ns, name) => {
            let api = Api::<StatefulSet>::namespaced(client.clone(), ns);
            roll_template(&api, name, hash, |s| s.spec.as_ref().and_then(|s| s.template.metadata.as_ref())).await
        }
        Owner::DaemonSet(ns, name) => {
            let api = Api::<DaemonSet>::namespaced(client.clone(), ns);
            roll_template(&api, name, hash, |d| d.spec.as_ref().and_then(|s| s.template.metadata.as_ref())).await
        }
    }
}

/// Patches workload `name` onto `hash` unless `template` (its pod-template metadata) already carries it.
async fn roll_template<K>(
    api: &Api<K>,
    name: &str,
    hash: &str,
    template: impl Fn(&K) -> Option<&ObjectMeta>,
) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(current) = api.get_opt(name).await? else { return Ok(false) };
    if template_hash(template(&current)) == Some(hash) {
        return Ok(false);
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(rollout_patch(hash))).await?;
    Ok(true)
}

/// One pass over every pipeline: write `status.agents` where it changed, and roll stale workloads of pipelines with
/// `rolloutOnChange`.
pub async fn pass(
    client: &Client,
    pipelines: &Store<TracingPipeline>,
    pods: &Store<PartialObjectMeta<Pod>>,
    defaults: &Defaults,
    metrics: &Metrics,
) {
    let pods = pods.state();
    for tp in pipelines.state() {
        let (ns, name) = (tp.namespace().unwrap_or_default(), tp.name_any());
        let Ok(hash) = inject::agent_hash(&tp, defaults) else { continue };
        let mine: Vec<&ObjectMeta> = pods.iter().map(|p| &p.metadata).filter(|m| belongs(m, &ns, &name)).collect();
        let status = count(mine.iter().copied(), &hash);
        if tp.status.as_ref().and_then(|s| s.agents.as_ref()) != Some(&status) {
            let body = json!({
                "apiVersion": "skein.dev/v1alpha1",
                "kind": "TracingPipeline",
                "status": {"agents": status},
            });
            let api: Api<TracingPipeline> = Api::namespaced(client.clone(), &ns);
            if let Err(e) =
                api.patch_status(&name, &PatchParams::apply(STATUS_MANAGER).force(), &Patch::Apply(&body)).await
            {
                tracing::warn!(pipeline = %format!("{ns}/{name}"), error = %e, "cannot write status.agents");
            }
        }
        if tp.spec.agent.rollout_on_change && status.stale > 0 {
            for owner in stale_owners(mine.iter().copied(), &hash) {
                match roll(client, &owner, &hash).await {
                    Ok(true) => {
                        metrics.agent_rollouts.inc();
                        tracing::info!(?owner, %hash, "rolling the workload onto the new agent configuration");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(?owner, error = %e, "cannot roll the workload"),
                }
            }
        }
    }
}

/// Runs [`pass`] every `interval` until `shutdown` completes, watching injected pods' metadata (all namespaces:
/// injected pods live in the apps' namespaces, not the pipeline's).
pub async fn run(
    client: Client,
    pipelines: Store<TracingPipeline>,
    defaults: Defaults,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (pods, writer) = reflector::store();
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
    let watch = watcher(api, watcher::Config::default().labels(PIPELINE_LABEL));
    let reflect = reflector::reflector(writer, watch.default_backoff()).for_each(|event| async move {
        if let Err(e) = event {
            tracing::debug!(error = %e, "injected-pod watch");
        }
    });
    let passes = async {
        let _ = pipelines.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        loop {
            pass(&client, &pipelines, &pods, &defaults, &metrics).await;
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        _ = reflect => {}
        _ = passes => {}
        _ = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, hash: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
        serde_json::from_value(json!({
            "name": name, "namespace": "shop",
            "labels": {PIPELINE_LABEL: "prod", PIPELINE_NAMESPACE_LABEL: "tracing"},
            "annotations": {INJECTED_ANNOTATION: format!("tracing/prod@{hash}")},
            "ownerReferences": owner.map(|(kind, n)| vec![json!({"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": "u", "controller": true})]).unwrap_or_default(),
        }))
        .expect("meta")
    }

    #[test]
    fn counts_injected_and_stale_pods_and_finds_their_workloads() {
        let pods = [
            pod("a", "new", Some(("ReplicaSet", "web-1"))),
            pod("b", "old", Some(("ReplicaSet", "web-1"))),
            pod("c", "old", Some(("ReplicaSet", "web-1"))),
            pod("d", "old", Some(("StatefulSet", "db"))),
            pod("e", "old", Some(("DaemonSet", "node"))),
            pod("f", "old", Some(("Job", "batch"))),
            pod("g", "old", None),
        ];
        let mut gone = pod("h", "old", Some(("StatefulSet", "cache")));
        gone.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        let all: Vec<&ObjectMeta> = pods.iter().chain([&gone]).collect();
        assert!(all.iter().all(|p| belongs(p, "tracing", "prod")));
        assert!(!belongs(&pods[0], "shop", "prod"), "same name, other namespace");
        let status = count(all.iter().copied(), "new");
        assert_eq!((status.injected, status.stale, status.config_hash.as_str()), (7, 6, "new"));
        let owners: Vec<Owner> = stale_owners(all.iter().copied(), "new").into_iter().collect();
        assert_eq!(
            owners,
            [
                Owner::ReplicaSet("shop".into(), "web-1".into()),
                Owner::StatefulSet("shop".into(), "db".into()),
                Owner::DaemonSet("shop".into(), "node".into()),
            ],
            "once per workload; Jobs, bare and terminating pods are not rolled"
        );
        assert_eq!(rollout_patch("new")["spec"]["template"]["metadata"]["annotations"][ROLLOUT_ANNOTATION], "new");
    }

    #[tokio::test]
    async fn a_pass_writes_the_counts_and_rolls_a_deployment_once() {
        use crate::fixtures::{MockApi, World, pipeline};
        use kube::runtime::reflector::store::Writer;

        let mut tp = pipeline("prod", Default::default());
        tp.spec.agent.rollout_on_change = true;
        let defaults = Defaults::default();
        let hash = inject::agent_hash(&tp, &defaults).expect("hash");
        let rs = "/apis/apps/v1/namespaces/shop/replicasets/web-1";
        let deployment = "/apis/apps/v1/namespaces/shop/deployments/web";
        let mut world = World::default();
        world.objects.insert(
            rs.into(),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "shop",
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d", "controller": true}]}}),
        );
        world.objects.insert(
            deployment.into(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"selector": {}, "template": {"metadata": {}}}}),
        );
        let (client, api) = MockApi::start(world);

        let mut tps: Writer<TracingPipeline> = Writer::default();
        tps.apply_watcher_event(&watcher::Event::Apply(tp));
        let mut pods: Writer<PartialObjectMeta<Pod>> = Writer::default();
        for (name, h) in [("a", hash.as_str()), ("b", "0ld0ld0ld0ld0ld0")] {
            let meta = PartialObjectMeta::<Pod> {
                metadata: pod(name, h, Some(("ReplicaSet", "web-1"))),
                ..Default::default()
            };
            pods.apply_watcher_event(&watcher::Event::Apply(meta));
        }
        let metrics = Metrics::default();
        pass(&client, &tps.as_reader(), &pods.as_reader(), &defaults, &metrics).await;
        let calls = api.calls();
        let status = calls.iter().find(|c| c.path.ends_with("/tracingpipelines/prod/status")).expect("status written");
        assert!(status.query.contains("fieldManager=skein-operator-agents"), "{}", status.query);
        assert_eq!(status.body["status"]["agents"], json!({"injected": 2, "stale": 1, "configHash": hash}));
        let patch = calls.iter().find(|c| c.method == "PATCH" && c.path == deployment).expect("deployment rolled");
        assert_eq!(patch.body, rollout_patch(&hash));
        assert_eq!(metrics.agent_rollouts.get(), 1);

        // The template already carries the hash (the rollout is under way): no second patch.
        api.world.lock().expect("world").objects.get_mut(deployment).expect("deployment")["spec"]["template"]["metadata"] =
            json!({"annotations": {ROLLOUT_ANNOTATION: hash}});
        api.clear();
        assert!(!roll(&client, &Owner::ReplicaSet("shop".into(), "web-1".into()), &hash).await.expect("roll"));
        assert!(api.calls().iter().all(|c| c.method == "GET"));
    }
}
