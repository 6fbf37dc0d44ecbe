//! Injected agents after injection: counting them into each pipeline's `status.agents`, finding pods that asked
//! for an agent and run without one, and rolling the workloads of pods on an old agent configuration when the
//! pipeline asks for it (`spec.agent.rolloutOnChange`).
//!
//! Pods are watched metadata-only (names, labels, annotations and owners, never whole pod specs; about 1 KiB per
//! pod). An injected pod carries the labels the webhook sets (`skein.dev/pipeline`,
//! `skein.dev/pipeline-namespace`); it is stale when the hash in its `skein.dev/injected` annotation differs from
//! [`inject::agent_hash`] of the pipeline now. A pod is *uninjected* when its namespace or its own annotation asks
//! for a pipeline ([`inject::asked_for`], [`inject::resolve`]) and it has neither `skein.dev/injected` nor a
//! `skein.dev/injection-status` skip reason: it was created before injection was enabled or while no operator
//! replica answered the webhook (`failurePolicy: Ignore`). The pipeline gets a Warning Event `PodsWithoutAgent`
//! naming the workloads to restart whenever that set changes.
//!
//! A rollout is the `kubectl rollout restart` of the workload: a pod-template annotation
//! (`skein.dev/agent-config-hash`) set to the new hash, once per workload and hash, with a Normal Event
//! `AgentRolledOut` on the workload giving the old and new hash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{AgentsStatus, TracingPipeline};
use crate::events::{Kind, Note, Recorder};
use crate::inject::{
    self, INJECTED_ANNOTATION, PIPELINE_LABEL, PIPELINE_NAMESPACE_LABEL, ROLLOUT_ANNOTATION, STATUS_ANNOTATION,
};
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

/// The workload that controls a pod, if it is one the operator can roll.
fn owner_of(pod: &ObjectMeta) -> Option<Owner> {
    let ns = pod.namespace.clone().unwrap_or_default();
    let o = pod.owner_references.iter().flatten().find(|o| o.controller == Some(true))?;
    match o.kind.as_str() {
        "ReplicaSet" => Some(Owner::ReplicaSet(ns, o.name.clone())),
        "StatefulSet" => Some(Owner::StatefulSet(ns, o.name.clone())),
        "DaemonSet" => Some(Owner::DaemonSet(ns, o.name.clone())),
        _ => None,
    }
}

/// The workloads owning pods on another hash than `hash`, each with one old hash its pods carry (bare pods have no
/// workload and are left alone).
pub fn stale_owners<'a>(pods: impl IntoIterator<Item = &'a ObjectMeta>, hash: &str) -> BTreeMap<Owner, String> {
    let mut owners = BTreeMap::new();
    for pod in pods {
        if pod.deletion_timestamp.is_some() || pod_hash(pod) == Some(hash) {
            continue;
        }
        if let Some(owner) = owner_of(pod) {
            owners.entry(owner).or_insert_with(|| pod_hash(pod).unwrap_or("none").to_string());
        }
    }
    owners
}

/// Whether a pod (metadata) asked for an agent and has none and no skip reason.
fn without_agent(pod: &ObjectMeta) -> bool {
    let annotations = pod.annotations.as_ref();
    pod.deletion_timestamp.is_none()
        && !annotations.is_some_and(|a| a.contains_key(INJECTED_ANNOTATION) || a.contains_key(STATUS_ANNOTATION))
        && !pod.labels.as_ref().is_some_and(|l| l.contains_key(PIPELINE_LABEL))
}

/// The pipeline (`namespace/name`) a pod or namespace asks for, resolved against `pipelines`.
fn wanted(
    pod_annotations: &BTreeMap<String, String>,
    namespace: &str,
    ns: Option<&PartialObjectMeta<Namespace>>,
    pipelines: &[Arc<TracingPipeline>],
) -> Option<(String, String)> {
    let empty = BTreeMap::new();
    let labels = ns.and_then(|n| n.metadata.labels.as_ref()).unwrap_or(&empty);
    let annotations = ns.and_then(|n| n.metadata.annotations.as_ref()).unwrap_or(&empty);
    let asked = inject::asked_for(pod_annotations, namespace, labels, annotations)?;
    let tp = inject::resolve(asked, namespace, pipelines).ok()?;
    Some((tp.namespace().unwrap_or_default(), tp.name_any()))
}

/// What one pass found for one pipeline.
#[derive(Debug, Default)]
pub struct Census<'a> {
    /// Its injected pods.
    pub injected: Vec<&'a ObjectMeta>,
    /// Pods that ask for it and run without an agent.
    pub uninjected: Vec<&'a ObjectMeta>,
    /// Namespaces sent to it or running its agents.
    pub namespaces: BTreeSet<String>,
}

/// Sorts pods and namespaces by the pipeline they belong to or ask for (`namespace/name` keys).
pub fn census<'a>(
    pods: &'a [Arc<PartialObjectMeta<Pod>>],
    namespaces: &[Arc<PartialObjectMeta<Namespace>>],
    pipelines: &[Arc<TracingPipeline>],
) -> HashMap<(String, String), Census<'a>> {
    let mut by: HashMap<(String, String), Census<'a>> = HashMap::new();
    let ns_meta: HashMap<String, &PartialObjectMeta<Namespace>> =
        namespaces.iter().map(|n| (n.name_any(), n.as_ref())).collect();
    let empty = BTreeMap::new();
    for n in namespaces {
        let name = n.name_any();
        if let Some(key) = wanted(&empty, &name, Some(n), pipelines) {
            by.entry(key).or_default().namespaces.insert(name);
        }
    }
    for pod in pods.iter().map(|p| &p.metadata) {
        let ns = pod.namespace.clone().unwrap_or_default();
        let labels = pod.labels.as_ref();
        if let (Some(name), Some(pns)) =
            (labels.and_then(|l| l.get(PIPELINE_LABEL)), labels.and_then(|l| l.get(PIPELINE_NAMESPACE_LABEL)))
        {
            let entry = by.entry((pns.clone(), name.clone())).or_default();
            if pod.deletion_timestamp.is_none() {
                entry.namespaces.insert(ns);
            }
            entry.injected.push(pod);
        } else if without_agent(pod)
            && let Some(key) =
                wanted(pod.annotations.as_ref().unwrap_or(&empty), &ns, ns_meta.get(&ns).copied(), pipelines)
        {
            by.entry(key).or_default().uninjected.push(pod);
        }
    }
    by
}

/// The Warning Event note for pods running without the agent: how many, and the commands that fix it.
pub fn uninjected_note(pods: &[&ObjectMeta]) -> String {
    let mut fixes = BTreeSet::new();
    let mut bare = BTreeSet::new();
    for pod in pods {
        let ns = pod.namespace.clone().unwrap_or_default();
        match inject::workload(pod) {
            Some(w) if matches!(w.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet") => {
                fixes.insert(format!("kubectl -n {ns} rollout restart {}/{}", w.kind.to_lowercase(), w.name));
            }
            _ => {
                bare.insert(format!("{ns}/{}", pod.name.clone().unwrap_or_default()));
            }
        }
    }
    let mut note = format!(
        "{} pod(s) asked for the Skein agent and run without it (created before injection was enabled for them, or \
         while no operator replica answered the webhook). Recreate them:",
        pods.len()
    );
    for fix in fixes.iter().take(5) {
        note.push_str(&format!(" `{fix}`;"));
    }
    if fixes.len() > 5 {
        note.push_str(&format!(" and {} more workloads;", fixes.len() - 5));
    }
    if !bare.is_empty() {
        let shown: Vec<&String> = bare.iter().take(5).collect();
        note.push_str(&format!(
            " delete and recreate the pods {}",
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
        if bare.len() > 5 {
            note.push_str(&format!(" and {} more", bare.len() - 5));
        }
        note.push(';');
    }
    note.pop();
    note
}

/// The merge patch that rolls a workload onto `hash`.
pub fn rollout_patch(hash: &str) -> serde_json::Value {
    json!({"spec": {"template": {"metadata": {"annotations": {ROLLOUT_ANNOTATION: hash}}}}})
}

fn template_hash(meta: Option<&ObjectMeta>) -> Option<&str> {
    meta?.annotations.as_ref()?.get(ROLLOUT_ANNOTATION).map(String::as_str)
}

/// Rolls `owner`'s workload onto `hash` unless its template already carries it. Returns the workload it patched.
///
/// # Errors
/// Kubernetes API failures (RBAC: `get` ReplicaSets; `get`, `patch` Deployments, StatefulSets, DaemonSets).
pub async fn roll(client: &Client, owner: &Owner, hash: &str) -> kube::Result<Option<ObjectReference>> {
    match owner {
        Owner::ReplicaSet(ns, name) => {
            let Some(rs) = Api::<ReplicaSet>::namespaced(client.clone(), ns).get_opt(name).await? else {
                return Ok(None);
            };
            let deployment =
                rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment");
            let Some(d) = deployment else { return Ok(None) };
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

/// Patches workload `name` onto `hash` unless `template` (its pod-template metadata) already carries it; returns
/// the patched workload's reference.
async fn roll_template<K>(
    api: &Api<K>,
    name: &str,
    hash: &str,
    template: impl Fn(&K) -> Option<&ObjectMeta>,
) -> kube::Result<Option<ObjectReference>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(current) = api.get_opt(name).await? else { return Ok(None) };
    if template_hash(template(&current)) == Some(hash) {
        return Ok(None);
    }
    api.patch(name, &PatchParams::default(), &Patch::Merge(rollout_patch(hash))).await?;
    Ok(Some(current.object_ref(&())))
}

/// What the agent tracker works with.
#[derive(Clone)]
pub struct Tracker {
    /// Kubernetes client.
    pub client: Client,
    /// Every watched pipeline.
    pub pipelines: Store<TracingPipeline>,
    /// Every namespace's metadata (injection labels and annotations).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Images and resources, for the agent hash.
    pub defaults: Defaults,
    /// Events on pipelines and rolled workloads.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// One pass over every pipeline: write `status.agents` where it changed, warn about pods without their agent when
/// that set changed (`warned` remembers the last note per pipeline), and roll stale workloads of pipelines with
/// `rolloutOnChange`.
pub async fn pass(t: &Tracker, pods: &Store<PartialObjectMeta<Pod>>, warned: &Mutex<HashMap<String, String>>) {
    let pods = pods.state();
    let pipelines = t.pipelines.state();
    let mut found = census(&pods, &t.namespaces.state(), &pipelines);
    for tp in &pipelines {
        let (ns, name) = (tp.namespace().unwrap_or_default(), tp.name_any());
        let Ok(hash) = inject::agent_hash(tp, &t.defaults) else { continue };
        let mine = found.remove(&(ns.clone(), name.clone())).unwrap_or_default();
        let mut status = count(mine.injected.iter().copied(), &hash);
        status.uninjected = i32::try_from(mine.uninjected.len()).unwrap_or(i32::MAX);
        status.namespaces = i32::try_from(mine.namespaces.len()).unwrap_or(i32::MAX);
        if tp.status.as_ref().and_then(|s| s.agents.as_ref()) != Some(&status) {
            let body = json!({
                "apiVersion": "skein.dev/v1alpha1",
                "kind": "TracingPipeline",
                "status": {"agents": status},
            });
            let api: Api<TracingPipeline> = Api::namespaced(t.client.clone(), &ns);
            if let Err(e) =
                api.patch_status(&name, &PatchParams::apply(STATUS_MANAGER).force(), &Patch::Apply(&body)).await
            {
                tracing::warn!(pipeline = %format!("{ns}/{name}"), error = %e, "cannot write status.agents");
            }
        }
        warn_uninjected(t, tp, &mine.uninjected, warned).await;
        if tp.spec.agent.rollout_on_change && status.stale > 0 {
            roll_stale(t, tp, &mine.injected, &hash).await;
        }
    }
}

fn key(tp: &TracingPipeline) -> String {
    format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any())
}

/// Publishes `PodsWithoutAgent` on `tp` when its set of pods without the agent changed since the last warning
/// (`warned` holds the last note per pipeline; an empty set forgets it).
async fn warn_uninjected(
    t: &Tracker,
    tp: &TracingPipeline,
    uninjected: &[&ObjectMeta],
    warned: &Mutex<HashMap<String, String>>,
) {
    let fresh = {
        let mut warned = warned.lock().unwrap_or_else(|p| p.into_inner());
        if uninjected.is_empty() {
            warned.remove(&key(tp));
            None
        } else {
            let note = uninjected_note(uninjected);
            (warned.insert(key(tp), note.clone()).as_ref() != Some(&note)).then_some(note)
        }
    };
    if let Some(note) = fresh {
        let regarding = tp.object_ref(&());
        let event =
            Note { regarding, kind: Kind::Warning, reason: "PodsWithoutAgent".into(), action: "CountAgents", note };
        t.recorder.publish(&event).await;
    }
}

/// Rolls the workloads of `tp`'s pods on another agent hash than `hash`, with an `AgentRolledOut` Event on each.
async fn roll_stale(t: &Tracker, tp: &TracingPipeline, injected: &[&ObjectMeta], hash: &str) {
    for (owner, old) in stale_owners(injected.iter().copied(), hash) {
        match roll(&t.client, &owner, hash).await {
            Ok(Some(workload)) => {
                t.metrics.agent_rollouts.inc();
                tracing::info!(?owner, %old, %hash, "rolling the workload onto the new agent configuration");
                let kind = workload.kind.clone().unwrap_or_default().to_lowercase();
                let note = format!(
                    "restarting {kind}/{} onto agent configuration {hash} (pods run {old}) of TracingPipeline {}, \
                     which sets agent.rolloutOnChange",
                    workload.name.clone().unwrap_or_default(),
                    key(tp)
                );
                let event = Note {
                    regarding: workload,
                    kind: Kind::Normal,
                    reason: "AgentRolledOut".into(),
                    action: "Rollout",
                    note,
                };
                t.recorder.publish(&event).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(?owner, error = %e, "cannot roll the workload"),
        }
    }
}

/// Runs [`pass`] every `interval` until `shutdown` completes, watching every pod's metadata (injected pods live in
/// the apps' namespaces, and uninjected ones carry no label to select them by).
pub async fn run(t: Tracker, interval: Duration, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let (pods, writer) = reflector::store();
    let api: Api<PartialObjectMeta<Pod>> = Api::all(t.client.clone());
    let watch = watcher(api, watcher::Config::default());
    let reflect = reflector::reflector(writer, watch.default_backoff()).for_each(|event| async move {
        if let Err(e) = event {
            tracing::debug!(error = %e, "pod metadata watch");
        }
    });
    let passes = async {
        let _ = t.pipelines.wait_until_ready().await;
        let _ = t.namespaces.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        let warned = Mutex::default();
        loop {
            pass(&t, &pods, &warned).await;
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
    use serde_json::Value;

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
        let owners: Vec<(Owner, String)> = stale_owners(all.iter().copied(), "new").into_iter().collect();
        assert_eq!(
            owners,
            [
                (Owner::ReplicaSet("shop".into(), "web-1".into()), "old".into()),
                (Owner::StatefulSet("shop".into(), "db".into()), "old".into()),
                (Owner::DaemonSet("shop".into(), "node".into()), "old".into()),
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
        // A pod of namespace `shop`, which points at tracing/prod, created while no webhook answered: no agent,
        // no skip reason.
        let missed: PartialObjectMeta<Pod> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "api-5c9-x1", "namespace": "shop", "labels": {"pod-template-hash": "5c9"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-5c9", "uid": "r", "controller": true}]}
        }))
        .expect("pod");
        pods.apply_watcher_event(&watcher::Event::Apply(missed));
        let mut namespaces: Writer<PartialObjectMeta<Namespace>> = Writer::default();
        let shop: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "shop", "annotations": {inject::INJECT_ANNOTATION: "tracing/prod"}}
        }))
        .expect("namespace");
        namespaces.apply_watcher_event(&watcher::Event::Apply(shop));
        let metrics = Arc::new(Metrics::default());
        let tracker = Tracker {
            client: client.clone(),
            pipelines: tps.as_reader(),
            namespaces: namespaces.as_reader(),
            defaults: defaults.clone(),
            recorder: Recorder::new(client.clone(), crate::FIELD_MANAGER, metrics.clone()),
            metrics: metrics.clone(),
        };
        let warned = Mutex::default();
        pass(&tracker, &pods.as_reader(), &warned).await;
        let calls = api.calls();
        let status = calls.iter().find(|c| c.path.ends_with("/tracingpipelines/prod/status")).expect("status written");
        assert!(status.query.contains("fieldManager=skein-operator-agents"), "{}", status.query);
        assert_eq!(
            status.body["status"]["agents"],
            json!({"injected": 2, "stale": 1, "uninjected": 1, "namespaces": 1, "configHash": hash})
        );
        let patch = calls.iter().find(|c| c.method == "PATCH" && c.path == deployment).expect("deployment rolled");
        assert_eq!(patch.body, rollout_patch(&hash));
        assert_eq!(metrics.agent_rollouts.get(), 1);
        let events: Vec<&Value> = calls.iter().filter(|c| c.path.ends_with("/events")).map(|c| &c.body).collect();
        let rolled = events.iter().find(|e| e["reason"] == "AgentRolledOut").expect("rollout Event");
        assert_eq!(
            (rolled["regarding"]["kind"].as_str(), rolled["regarding"]["name"].as_str()),
            (Some("Deployment"), Some("web"))
        );
        let note = rolled["note"].as_str().expect("note");
        assert!(note.contains(&hash) && note.contains("0ld0ld0ld0ld0ld0"), "old and new hash: {note}");
        let missing = events.iter().find(|e| e["reason"] == "PodsWithoutAgent").expect("uninjected Event");
        assert_eq!(missing["regarding"]["name"], "prod");
        let note = missing["note"].as_str().expect("note");
        assert!(note.contains("kubectl -n shop rollout restart deployment/api"), "{note}");

        // The next pass changes nothing: no second status write, no second warning.
        api.world.lock().expect("world").objects.get_mut(deployment).expect("deployment")["spec"]["template"]["metadata"] =
            json!({"annotations": {ROLLOUT_ANNOTATION: hash}});
        api.clear();
        pass(&tracker, &pods.as_reader(), &warned).await;
        assert!(api.calls().iter().all(|c| !c.path.ends_with("/events")), "{:?}", api.calls());

        // The template already carries the hash (the rollout is under way): no second patch.
        api.clear();
        assert!(roll(&client, &Owner::ReplicaSet("shop".into(), "web-1".into()), &hash).await.expect("roll").is_none());
        assert!(api.calls().iter().all(|c| c.method == "GET"));
    }
}
