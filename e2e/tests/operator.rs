//! The operator against a real Kubernetes API server (`KUBECONFIG` set; `#[ignore]`d otherwise:
//! `cargo test -p skein-e2e --test <name> -- --ignored`).
//!
//! Written for a control plane without a scheduler or kubelet: pods stay Pending, so the test asserts objects,
//! owner references, hashes and conditions, never running pods. The operator runs out of cluster as the real
//! `skein-operator` binary, watching one fresh namespace, with leader election on a Lease in that namespace.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use skein_operator::crd::TracingPipeline;

use common::{MANAGER, Operator, eventually, pipeline};

fn condition(tp: &TracingPipeline, type_: &str) -> Option<(String, String, String)> {
    let c = tp.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn owned_by(meta: &kube::api::ObjectMeta, owner: &TracingPipeline) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "TracingPipeline" && Some(&o.uid) == owner.uid().as_ref() && o.controller == Some(true))
}

fn sts_hash(s: &StatefulSet) -> Option<String> {
    s.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get("skein.dev/config-hash").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs KUBECONFIG (a real Kubernetes API server)"]
async fn operator_reconciles_pipelines_on_a_real_api_server() {
    let client = common::cluster().await;
    let apply = PatchParams::apply(MANAGER).force();

    let ns = format!("skein-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"))
        .await
        .expect("create namespace");

    let metrics_port = skein_e2e::free_port();
    // Step 4 stores an invalid spec to see the reconciler refuse it; the admission webhooks (which would refuse it
    // first) have their own test, `webhook.rs`.
    let _operator = Operator::start(&ns, metrics_port, &["--webhook", "false"]);

    let pipelines: Api<TracingPipeline> = Api::namespaced(client.clone(), &ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    eventually("the operator to take the leader Lease", Duration::from_secs(60), || {
        let leases = leases.clone();
        async move { leases.get_opt("skein-operator-leader").await.ok()?.and_then(|l| l.spec?.holder_identity) }
    })
    .await;

    // 1. An embedded-storage pipeline: every child appears, owned by the pipeline, with the conditions.
    let started = Instant::now();
    pipelines.patch("emb", &apply, &Patch::Apply(pipeline("emb", json!({})))).await.expect("apply emb");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let emb = pipelines.get("emb").await.expect("emb");
    let children = eventually("every child of emb", Duration::from_secs(60), || {
        let (cm, sa, svc, sts, emb) =
            (config_maps.clone(), accounts.clone(), services.clone(), sets.clone(), emb.clone());
        async move {
            let mut metas = vec![
                cm.get_opt("emb-collector-config").await.ok()??.metadata,
                sa.get_opt("emb-skein").await.ok()??.metadata,
                svc.get_opt("emb-collector").await.ok()??.metadata,
                svc.get_opt("emb-collector-headless").await.ok()??.metadata,
                svc.get_opt("emb-query").await.ok()??.metadata,
            ];
            let set = sts.get_opt("emb-collector").await.ok()??;
            metas.push(set.metadata.clone());
            metas.iter().all(|m| owned_by(m, &emb)).then_some(set)
        }
    })
    .await;
    let apply_latency = started.elapsed();
    let first_hash = sts_hash(&children).expect("config hash on the pod template");
    let emb = eventually("emb's conditions", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move {
            let tp = pipelines.get("emb").await.ok()?;
            let generated = condition(&tp, "ConfigurationGenerated")?;
            (generated.0 == "True" && tp.status.as_ref()?.observed_generation == tp.meta().generation).then_some(tp)
        }
    })
    .await;
    // StorageReady follows the claim the StatefulSet controller makes: no kubelet and no default StorageClass
    // here, so it stays Pending and the condition carries the claim's Event (FailedBinding: "… no storage class is
    // set").
    let storage =
        eventually("emb StorageReady=False VolumePending with the claim's Event", Duration::from_secs(120), || {
            let pipelines = pipelines.clone();
            async move {
                let c = condition(&pipelines.get("emb").await.ok()?, "StorageReady")?;
                (c.0 == "False" && c.1 == "VolumePending" && c.2.contains("is Pending: ")).then_some(c.2)
            }
        })
        .await;
    assert!(storage.contains("PersistentVolumeClaim data-emb-collector-0"), "{storage}");
    eprintln!("operator e2e: StorageReady message for the unbound claim: {storage}");
    let wide = emb.status.clone().expect("status");
    assert_eq!(wide.sampling.as_deref(), Some("none"));
    // No kubelet: the pod never becomes ready, and the operator says so.
    assert_eq!(
        condition(&emb, "CollectorReady").map(|c| (c.0, c.1)),
        Some(("False".into(), "RolloutInProgress".into()))
    );
    assert_eq!(condition(&emb, "Ready").map(|c| c.0), Some("False".into()));
    let status = emb.status.clone().expect("status");
    assert_eq!(status.config_hash.as_deref(), Some(first_hash.as_str()));
    assert_eq!(status.storage.as_deref(), Some("embedded"));
    assert_eq!(status.endpoints.expect("endpoints").otlp_grpc, format!("emb-collector.{ns}.svc:4317"));
    assert_eq!(status.collectors.as_deref(), Some("0/1"));

    // 2. A policy change rolls a new hash onto the pod template.
    let policy = json!({"sampling": {"tail": {"policies": [
        {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}]}}});
    let changed_at = Instant::now();
    pipelines.patch("emb", &apply, &Patch::Apply(pipeline("emb", policy))).await.expect("change emb");
    let second_hash = eventually("a new config hash on the StatefulSet", Duration::from_secs(60), || {
        let (sets, first) = (sets.clone(), first_hash.clone());
        async move { sts_hash(&sets.get("emb-collector").await.ok()?).filter(|h| *h != first) }
    })
    .await;
    let change_latency = changed_at.elapsed();
    let cm = config_maps.get("emb-collector-config").await.expect("cm");
    assert!(cm.data.expect("data")["collector.yaml"].contains("status_code"));

    // 3. A child deleted by hand comes back.
    let old_uid = services.get("emb-query").await.expect("svc").uid();
    services.delete("emb-query", &DeleteParams::default()).await.expect("delete svc");
    eventually("emb-query to be recreated", Duration::from_secs(60), || {
        let (services, old_uid) = (services.clone(), old_uid.clone());
        async move { services.get_opt("emb-query").await.ok()?.filter(|s| s.uid() != old_uid).map(|_| ()) }
    })
    .await;

    // 4. A semantically invalid spec: ConfigurationGenerated=False naming the field; the children keep the last good
    // configuration.
    let broken = json!({"sampling": {"tail": {"policies": [{"name": "broken", "type": "latency"}]}}});
    pipelines.patch("emb", &apply, &Patch::Apply(pipeline("emb", broken))).await.expect("break emb");
    let message = eventually("ConfigurationGenerated=False", Duration::from_secs(60), || {
        let pipelines = pipelines.clone();
        async move {
            let c = condition(&pipelines.get("emb").await.ok()?, "ConfigurationGenerated")?;
            (c.0 == "False").then_some((c.1, c.2))
        }
    })
    .await;
    assert_eq!(message.0, "InvalidSamplingPolicy");
    assert!(message.1.contains("spec.sampling.tail"), "{}", message.1);
    assert_eq!(sts_hash(&sets.get("emb-collector").await.expect("sts")), Some(second_hash));

    // 5. ScyllaDB that does not answer: StorageReady=False (ScyllaUnreachable) and no collector rolled out.
    let scylla = json!({"storage": {"scylla": {"contactPoints": ["127.0.0.1:1"]}}, "collector": {"replicas": 2}});
    pipelines.patch("scy", &apply, &Patch::Apply(pipeline("scy", scylla))).await.expect("apply scy");
    let storage = eventually("scy StorageReady=False", Duration::from_secs(90), || {
        let pipelines = pipelines.clone();
        async move { condition(&pipelines.get("scy").await.ok()?, "StorageReady").filter(|c| c.0 == "False") }
    })
    .await;
    assert_eq!(storage.1, "ScyllaUnreachable", "{storage:?}");
    assert!(storage.2.contains("127.0.0.1:1"), "{storage:?}");
    assert!(
        deployments.get_opt("scy-collector").await.expect("get").is_none(),
        "collectors must wait for the keyspace"
    );
    assert!(deployments.get_opt("scy-query").await.expect("get").is_none());
    assert!(config_maps.get_opt("scy-collector-config").await.expect("get").is_some());
    let scy = pipelines.get("scy").await.expect("scy").status.expect("status");
    assert_eq!(scy.collectors.as_deref(), Some("0/2"), "the COLLECTORS column is never empty");
    assert_eq!(scy.storage.as_deref(), Some("scylla"));

    // 6. The CRD's own validation rejects what the schema can express.
    let both = json!({"storage": {"embedded": {}, "scylla": {"contactPoints": ["a:9042"]}}});
    let rejected = pipelines.patch("both", &apply, &Patch::Apply(pipeline("both", both))).await;
    assert!(matches!(&rejected, Err(kube::Error::Api(e)) if e.code == 422), "{rejected:?}");

    // 7. The operator's metrics and health.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics")).await.expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(text.contains("skein_operator_reconciles_total{result=\"success\"}"), "{text}");
    assert!(text.contains("skein_operator_leader 1"), "{text}");

    // 8. Deleting the pipelines takes their children with them (owner references, garbage collector).
    pipelines.delete("emb", &DeleteParams::default()).await.expect("delete emb");
    pipelines.delete("scy", &DeleteParams::default()).await.expect("delete scy");
    eventually("emb's children to be garbage-collected", Duration::from_secs(120), || {
        let (cm, svc, sts) = (config_maps.clone(), services.clone(), sets.clone());
        async move {
            let gone = cm.get_opt("emb-collector-config").await.ok()?.is_none()
                && svc.get_opt("emb-collector").await.ok()?.is_none()
                && sts.get_opt("emb-collector").await.ok()?.is_none()
                && cm.get_opt("scy-collector-config").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;

    eprintln!(
        "operator e2e: CR apply -> all 6 children applied and owned: {} ms; spec change -> new pod-template hash: {} ms",
        apply_latency.as_millis(),
        change_latency.as_millis()
    );
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
