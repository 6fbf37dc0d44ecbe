//! Reconciler tests against a mocked API server: every assertion is on the requests the operator sent (method,
//! path, field manager, body), as a real API server would receive them.

use super::*;
use crate::crd::TracingPipelineSpec;
use crate::fixtures::{Call, World, context, pipeline, pipeline_yaml};

const NS_PATH: &str = "/apis/skein.dev/v1alpha1/namespaces/tracing/tracingpipelines";
const SCYLLA: &str = r#"
storage:
  scylla:
    contactPoints: ["scylla.db:9042"]
    credentialsSecretRef: {name: creds}
    reclaimPolicy: Delete
sampling:
  tail:
    policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]
"#;

fn world(tp: &TracingPipeline) -> World {
    let mut w = World::default();
    w.objects.insert(format!("{NS_PATH}/{}", tp.name_any()), serde_json::to_value(tp).expect("json"));
    w.objects.insert(
        "/api/v1/namespaces/tracing/secrets/creds".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "tracing"},
               "data": {"username": "c2tlaW4=", "password": "aHVudGVyMgo="}}),
    );
    w
}

fn ready_world(tp: &TracingPipeline) -> World {
    let mut w = world(tp);
    w.workload_status = Some(json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}));
    w
}

fn applies(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "PATCH" && !c.path.ends_with("/status") && !is_event(c) && c.body.get("kind").is_some())
        .collect()
}

/// Event writes: a new message is a POST; a repeat of the same message is a PATCH of its series.
fn is_event(c: &Call) -> bool {
    c.path.starts_with("/apis/events.k8s.io/v1/")
}

fn event_reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| is_event(c) && c.method == "POST")
        .filter_map(|c| c.body["reason"].as_str().map(String::from))
        .collect()
}

fn applied<'a>(calls: &'a [Call], path_end: &str) -> Option<&'a Call> {
    applies(calls).into_iter().rev().find(|c| c.path.ends_with(path_end))
}

fn status_of(calls: &[Call]) -> Value {
    calls.iter().rev().find(|c| c.path.ends_with("/status")).expect("status written").body["status"].clone()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == type_).expect(type_)
}

use serde_json::Value;

#[tokio::test]
async fn create_applies_every_child_with_server_side_apply_and_reports_conditions() {
    let tp = pipeline("demo", TracingPipelineSpec::default());
    let (ctx, api, _) = context(world(&tp));
    let action = reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile");
    assert_eq!(action, Action::requeue(REQUEUE_PROGRESSING), "pods are not ready yet");
    let calls = api.calls();
    // Idempotent: a second reconcile of the same object sends the same apply bodies.
    api.clear();
    reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile again");
    let again = api.calls();
    let bodies = |calls: &[Call]| applies(calls).iter().map(|c| (c.line(), c.body.clone())).collect::<Vec<_>>();
    assert_eq!(bodies(&calls), bodies(&again));
    let lines: Vec<String> = applies(&calls).iter().map(|c| c.line()).collect();
    assert_eq!(
        lines,
        [
            "PATCH /api/v1/namespaces/tracing/configmaps/demo-collector-config",
            "PATCH /api/v1/namespaces/tracing/serviceaccounts/demo-skein",
            "PATCH /api/v1/namespaces/tracing/services/demo-collector",
            "PATCH /api/v1/namespaces/tracing/services/demo-collector-headless",
            "PATCH /api/v1/namespaces/tracing/services/demo-query",
            "PATCH /apis/apps/v1/namespaces/tracing/statefulsets/demo-collector",
        ]
    );
    for c in applies(&calls) {
        assert!(
            c.query.contains("fieldManager=skein-operator") && c.query.contains("force=true"),
            "{}?{}",
            c.path,
            c.query
        );
        let owner = &c.body["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str()),
            (Some("TracingPipeline"), Some("uid-demo")),
            "{}",
            c.path
        );
        assert_eq!(c.body["metadata"]["labels"]["app.kubernetes.io/managed-by"], "skein-operator");
    }
    let sts = applied(&calls, "statefulsets/demo-collector").expect("sts");
    assert_eq!(sts.body["spec"]["template"]["spec"]["containers"][0]["command"][0], "skein-all-in-one");
    // The embedded pipeline has no Deployments to clean up, and nothing was deleted.
    assert!(calls.iter().all(|c| c.method != "DELETE"));
    let status_call = calls.iter().rev().find(|c| c.path.ends_with("/status")).expect("status");
    assert_eq!(status_call.path, format!("{NS_PATH}/demo/status"));
    assert!(status_call.query.contains("fieldManager=skein-operator"));
    let status = status_of(&calls);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["storage"], "embedded");
    assert_eq!(condition(&status, "ConfigurationGenerated")["status"], "True");
    // No claim yet (the StatefulSet controller makes it from the template): the storage is not ready.
    let storage = condition(&status, "StorageReady");
    assert_eq!((storage["status"].as_str(), storage["reason"].as_str()), (Some("False"), Some("VolumePending")));
    assert!(storage["message"].as_str().is_some_and(|m| m.contains("demo-collector-0")), "{storage}");
    assert_eq!(status["sampling"], "none");
    assert_eq!(condition(&status, "CollectorReady")["reason"], "RolloutInProgress");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "VolumePending", "the first condition that is not True");
    assert_eq!(status["endpoints"]["otlpGrpc"], "demo-collector.tracing.svc:4317");
    assert_eq!(status["endpoints"]["query"], "http://demo-query.tracing.svc:16686");
    // One Event per condition that appeared, each its own message.
    assert_eq!(calls.iter().filter(|c| is_event(c)).count(), 5);
    assert_eq!(
        event_reasons(&calls),
        ["ConfigurationValid", "VolumePending", "RolloutInProgress", "RolloutInProgress", "VolumePending"]
    );

    // The claim binds and pods become ready: Ready=True, long requeue, and only the changed conditions publish
    // events.
    let claim = "/api/v1/namespaces/tracing/persistentvolumeclaims/data-demo-collector-0";
    api.world.lock().expect("world").objects.insert(
        claim.into(),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-demo-collector-0"},
               "spec": {"storageClassName": "standard"},
               "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}}),
    );
    api.world.lock().expect("world").workload_status =
        Some(json!({"observedGeneration": 1, "readyReplicas": 1, "updatedReplicas": 1}));
    let mut tp2 = tp.clone();
    tp2.status = serde_json::from_value(status).expect("status");
    api.clear();
    let action = reconcile(Arc::new(tp2), ctx).await.expect("reconcile");
    assert_eq!(action, Action::requeue(REQUEUE_READY));
    let calls = api.calls();
    let status = status_of(&calls);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["collectors"], "1/1");
    let storage = condition(&status, "StorageReady");
    assert_eq!(storage["reason"], "VolumeBound");
    assert!(storage["message"].as_str().is_some_and(|m| m.contains("kept when the pipeline is deleted")), "{storage}");
    assert_eq!(calls.iter().filter(|c| is_event(c)).count(), 4, "unchanged conditions publish nothing");
    assert_eq!(event_reasons(&calls), ["VolumeBound", "RolloutComplete", "RolloutComplete", "PipelineReady"]);
}

#[tokio::test]
async fn changed_policy_rolls_a_new_hash_and_deleted_children_come_back() {
    let tp = pipeline_yaml("prod", SCYLLA);
    let (ctx, api, schema) = context(ready_world(&tp));
    reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile");
    let calls = api.calls();
    let hash = |calls: &[Call]| {
        applied(calls, "deployments/prod-collector").expect("collector applied").body["spec"]["template"]["metadata"]
            ["annotations"]["skein.dev/config-hash"]
            .as_str()
            .expect("hash")
            .to_string()
    };
    let first = hash(&calls);
    assert_eq!(
        schema.ensured.lock().expect("lock").clone(),
        [("skein_tracing_prod".to_string(), Some("skein".to_string()))]
    );
    let cm = applied(&calls, "configmaps/prod-collector-config").expect("cm");
    assert!(cm.body["data"]["collector.yaml"].as_str().expect("yaml").contains("status_code"));
    assert!(applied(&calls, "poddisruptionbudgets/prod-collector").is_some());
    assert!(applied(&calls, "deployments/prod-query").is_some());
    let status = status_of(&calls);
    assert_eq!(status["schema"]["keyspace"], "skein_tracing_prod");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status}");
    // No HPA wanted: an existing one is looked up (and would be deleted only if the pipeline owned it).
    assert!(
        calls
            .iter()
            .any(|c| c.line() == "GET /apis/autoscaling/v2/namespaces/tracing/horizontalpodautoscalers/prod-collector")
    );

    // The admin deletes the collector Deployment by hand and changes the tail policy.
    api.world.lock().expect("world").objects.remove("/apis/apps/v1/namespaces/tracing/deployments/prod-collector");
    let mut changed = pipeline_yaml(
        "prod",
        &SCYLLA.replace(
            "name: errors, type: status_code, status_code: {status_codes: [ERROR]}",
            "name: slow, type: latency, latency: {threshold_ms: 250}",
        ),
    );
    changed.metadata.generation = Some(2);
    changed.status = serde_json::from_value(status).expect("status");
    api.clear();
    reconcile(Arc::new(changed), ctx).await.expect("reconcile");
    let calls = api.calls();
    let second = hash(&calls);
    assert_ne!(first, second, "a new policy must roll the collectors");
    assert!(
        api.world
            .lock()
            .expect("world")
            .objects
            .contains_key("/apis/apps/v1/namespaces/tracing/deployments/prod-collector")
    );
    let cm = applied(&calls, "configmaps/prod-collector-config").expect("cm");
    assert!(cm.body["data"]["collector.yaml"].as_str().expect("yaml").contains("threshold_ms: 250"));
    assert_eq!(status_of(&calls)["configHash"], second);
    assert_eq!(status_of(&calls)["observedGeneration"], 2);
    // Same status and reason, new message: a new Event says what is true now (the new hash).
    let notes: Vec<&str> = calls
        .iter()
        .filter(|c| is_event(c) && c.method == "POST" && c.body["reason"] == "ConfigurationValid")
        .filter_map(|c| c.body["note"].as_str())
        .collect();
    assert_eq!(notes, [format!("ConfigurationGenerated is True: config hash {second}")], "{calls:?}");
    // The schema is recorded in the status, so it is not re-applied on every reconcile.
    assert_eq!(schema.ensured.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn invalid_spec_changes_no_child_and_names_the_field() {
    let tp = pipeline_yaml("bad", "sampling:\n  tail:\n    policies: [{name: broken, type: latency}]\n");
    let (ctx, api, _) = context(world(&tp));
    let action = reconcile(Arc::new(tp), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let calls = api.calls();
    assert!(applies(&calls).is_empty(), "no child may change: {:?}", calls.iter().map(Call::line).collect::<Vec<_>>());
    assert!(calls.iter().all(|c| c.method != "DELETE"));
    let status = status_of(&calls);
    let c = condition(&status, "ConfigurationGenerated");
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("InvalidSamplingPolicy")));
    let message = c["message"].as_str().expect("message");
    assert!(message.contains("spec.sampling.tail") && message.contains("broken"), "{message}");
    assert_eq!(condition(&status, "Ready")["status"], "False");
}

#[tokio::test]
async fn unreachable_scylla_keeps_collectors_back_and_retries_with_backoff() {
    let tp = pipeline_yaml("prod", SCYLLA);
    let (ctx, api, schema) = context(ready_world(&tp));
    *schema.unreachable.lock().expect("lock") = true;
    let mut delays = Vec::new();
    for _ in 0..3 {
        delays.push(reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile"));
    }
    assert_eq!(
        delays,
        [Action::requeue(FIRST_BACKOFF), Action::requeue(FIRST_BACKOFF * 2), Action::requeue(FIRST_BACKOFF * 4)]
    );
    let calls = api.calls();
    assert!(applied(&calls, "deployments/prod-collector").is_none(), "collectors must wait for the keyspace");
    assert!(applied(&calls, "deployments/prod-query").is_none());
    assert!(applied(&calls, "configmaps/prod-collector-config").is_some());
    let status = status_of(&calls);
    let storage = condition(&status, "StorageReady");
    assert_eq!((storage["status"].as_str(), storage["reason"].as_str()), (Some("False"), Some("ScyllaUnreachable")));
    assert!(storage["message"].as_str().expect("msg").contains("scylla.db:9042"));
    assert_eq!(condition(&status, "CollectorReady")["reason"], "StorageNotReady");
    assert!(ctx.metrics.render().contains("skein_operator_reconcile_errors_total{error=\"ScyllaUnreachable\"} 3"));

    // Scylla comes back: the keyspace is created, then the collectors roll out, and the backoff resets.
    *schema.unreachable.lock().expect("lock") = false;
    api.clear();
    let action = reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile");
    assert_eq!(action, Action::requeue(REQUEUE_READY));
    let calls = api.calls();
    assert!(applied(&calls, "deployments/prod-collector").is_some());
    assert_eq!(condition(&status_of(&calls), "StorageReady")["reason"], "SchemaReady");
    *schema.unreachable.lock().expect("lock") = true;
    let mut fresh = tp.clone();
    fresh.spec.storage.scylla.as_mut().expect("scylla").keyspace = Some("other".into());
    let action = reconcile(Arc::new(fresh), ctx).await.expect("reconcile");
    assert_eq!(action, Action::requeue(FIRST_BACKOFF), "backoff starts over after a success");
}

#[tokio::test]
async fn reclaim_delete_holds_a_finalizer_and_drops_the_keyspace() {
    let tp = pipeline_yaml("prod", SCYLLA);
    let (ctx, api, schema) = context(ready_world(&tp));
    reconcile(Arc::new(tp.clone()), ctx.clone()).await.expect("reconcile");
    let calls = api.calls();
    let add =
        calls.iter().find(|c| c.method == "PATCH" && c.path == format!("{NS_PATH}/prod")).expect("finalizer patch");
    assert_eq!(add.body["metadata"]["finalizers"], json!(["skein.dev/keyspace"]));
    assert_eq!(add.body["metadata"]["resourceVersion"], "100", "optimistic concurrency");
    assert!(!add.query.contains("fieldManager"), "a merge patch, not an apply");

    // Deleted while ScyllaDB is down: the finalizer stays and the drop is retried.
    let mut deleting = tp.clone();
    deleting.metadata.finalizers = Some(vec!["skein.dev/keyspace".into()]);
    deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    *schema.unreachable.lock().expect("lock") = true;
    api.clear();
    let action = reconcile(Arc::new(deleting.clone()), ctx.clone()).await.expect("reconcile");
    assert!(matches!(action, a if a == Action::requeue(FIRST_BACKOFF)));
    assert!(api.calls().iter().all(|c| c.method != "PATCH" || is_event(c)), "finalizer kept");
    let warning = api.calls().into_iter().find(|c| c.method == "POST").expect("event");
    assert_eq!(warning.body["reason"], "ScyllaUnreachable");

    *schema.unreachable.lock().expect("lock") = false;
    api.clear();
    let action = reconcile(Arc::new(deleting), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert_eq!(schema.dropped.lock().expect("lock").clone(), ["skein_tracing_prod"]);
    let calls = api.calls();
    let remove = calls.iter().find(|c| c.method == "PATCH" && c.path == format!("{NS_PATH}/prod")).expect("release");
    assert_eq!(remove.body["metadata"]["finalizers"], json!([]));
    assert!(applies(&calls).is_empty(), "nothing is applied to a pipeline being deleted");
}

#[tokio::test]
async fn retain_needs_no_finalizer_and_switching_storage_removes_owned_leftovers() {
    let tp = pipeline_yaml("prod", &SCYLLA.replace("reclaimPolicy: Delete", "reclaimPolicy: Retain"));
    let mut w = ready_world(&tp);
    // A StatefulSet left from when this pipeline used embedded storage, and an HPA someone else owns.
    w.objects.insert(
        "/apis/apps/v1/namespaces/tracing/statefulsets/prod-collector".into(),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "prod-collector", "namespace": "tracing",
               "ownerReferences": [{"apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline", "name": "prod", "uid": "uid-prod", "controller": true}]}}),
    );
    w.objects.insert(
        "/apis/autoscaling/v2/namespaces/tracing/horizontalpodautoscalers/prod-collector".into(),
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "prod-collector", "namespace": "tracing"},
               "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "x"}}}),
    );
    let (ctx, api, _) = context(w);
    reconcile(Arc::new(tp), ctx).await.expect("reconcile");
    let calls = api.calls();
    assert!(
        calls.iter().all(|c| c.path != format!("{NS_PATH}/prod") || c.method != "PATCH"),
        "no finalizer with Retain"
    );
    let deletes: Vec<String> = calls.iter().filter(|c| c.method == "DELETE").map(Call::line).collect();
    assert_eq!(deletes, ["DELETE /apis/apps/v1/namespaces/tracing/statefulsets/prod-collector"]);
}
