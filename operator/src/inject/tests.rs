//! `inject()` over Pod JSON as the API server sends it to a mutating webhook (after defaulting), with the patch
//! applied by `json-patch` to that raw JSON and the resulting Pod checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::fixtures::{configured, pipeline, pipeline_yaml};

/// A pod as the ReplicaSet controller of Deployment `checkout` creates it: `generateName`, owner reference,
/// `pod-template-hash`, no name yet, defaults filled in, a projected service-account token volume.
fn deployment_pod() -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "generateName": "checkout-7d4b9c8f6-",
            "namespace": "shop",
            "creationTimestamp": null,
            "labels": {"pod-template-hash": "7d4b9c8f6", "tier": "backend"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d4b9c8f6",
                "uid": "8f0e4c1a-0d7b-4f5e-9a53-0c3c1d2e4f5a", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-x2v9q", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
            ], "defaultMode": 420}}],
            "containers": [{
                "name": "app",
                "image": "registry.example.com/checkout:1.4.2",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "kube-api-access-x2v9q", "readOnly": true,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

/// A hand-written pod with its own OpenTelemetry settings and an init container, asking for a pipeline in another
/// namespace by annotation.
fn configured_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "worker",
            "namespace": "batch",
            "labels": {"app.kubernetes.io/name": "worker"},
            "annotations": {"skein.dev/inject": "tracing/prod"}
        },
        "spec": {
            // `resizePolicy`-style fields a newer API server may send are unknown to the Pod type: they must stay
            // on their own container.
            "initContainers": [{"name": "migrate", "image": "registry.example.com/migrate:2", "args": ["up"],
                                "futureField": {"enabled": true}}],
            "containers": [
                {"name": "worker", "image": "registry.example.com/worker:2", "env": [
                    {"name": "OTEL_SERVICE_NAME", "value": "billing-worker"},
                    {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"},
                    {"name": "OTEL_TRACES_SAMPLER", "value": "always_on"},
                    {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
                ]},
                {"name": "metrics", "image": "registry.example.com/exporter:1"}
            ]
        }
    })
}

fn ready(tp: TracingPipeline) -> Arc<TracingPipeline> {
    Arc::new(configured(tp))
}

fn in_namespace(ns: &str, tp: TracingPipeline) -> TracingPipeline {
    let mut tp = tp;
    tp.metadata.namespace = Some(ns.into());
    tp
}

/// `prod` in `shop`: remote head sampling, one redaction rule, a 1 MiB buffer and 64 MiB of spill.
fn shop_pipeline() -> Arc<TracingPipeline> {
    ready(in_namespace(
        "shop",
        pipeline_yaml(
            "prod",
            r#"
agent: {memoryBufferBytes: 1048576, spillMaxBytes: 67108864}
sampling:
  head: {default_strategy: {type: probabilistic, param: 0.1}}
redaction: [{key: "(?i)^authorization$", action: mask}]
"#,
        ),
    ))
}

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_LABEL.to_string(), "enabled".to_string())])
}

#[derive(Clone, Default)]
struct Case {
    namespace: &'static str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pipelines: Vec<Arc<TracingPipeline>>,
    native: bool,
}

impl Case {
    fn run(&self, raw: &Value) -> Decision {
        let pod: Pod = serde_json::from_value(raw.clone()).expect("pod json");
        let defaults = Defaults::default();
        let env = Env {
            namespace: self.namespace,
            namespace_labels: &self.labels,
            namespace_annotations: &self.annotations,
            pipelines: &self.pipelines,
            defaults: &defaults,
            native_sidecar: self.native,
        };
        inject(&pod, &env).expect("inject")
    }
}

/// Namespace `shop`, labelled for injection, with `pipelines`, native sidecars.
fn shop_case(pipelines: Vec<Arc<TracingPipeline>>) -> Case {
    Case { namespace: "shop", labels: enabled(), pipelines, native: true, ..Default::default() }
}

fn apply(raw: &Value, patch: &json_patch::Patch) -> Value {
    let mut doc = raw.clone();
    json_patch::patch(&mut doc, patch).expect("the patch applies to the pod as sent");
    doc
}

fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .map(|e| e.iter().map(|v| (v["name"].as_str().unwrap_or("").to_string(), v.clone())).collect())
        .unwrap_or_default()
}

fn value(env: &BTreeMap<String, Value>, name: &str) -> String {
    env.get(name).and_then(|v| v["value"].as_str()).unwrap_or_else(|| panic!("{name} missing: {env:?}")).to_string()
}

#[test]
fn a_deployment_pod_gets_a_native_sidecar_and_the_sdk_environment() {
    let case = shop_case(vec![shop_pipeline()]);
    let raw = deployment_pod();
    let Decision::Inject { pipeline: target, hash, patch } = case.run(&raw) else { panic!("expected injection") };
    assert_eq!(target, PipelineRef { namespace: "shop".into(), name: "prod".into() });
    let pod = apply(&raw, &patch);

    let agent = &pod["spec"]["initContainers"][0];
    assert_eq!(agent["name"], AGENT_CONTAINER);
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(agent["image"], Defaults::default().agent_image);
    let args: Vec<&str> = agent["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for want in [
        "--collector-dns=prod-collector-headless.shop.svc:4317",
        "--sampling-upstream=http://prod-collector.shop.svc:5778",
        "--memory-max-bytes=1048576",
        "--spill-dir=/var/lib/skein-agent/spill",
        "--spill-max-bytes=67108864",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    let agent_env = env_of(agent);
    for (name, path) in [
        ("K8S_POD_NAME", "metadata.name"),
        ("K8S_NAMESPACE", "metadata.namespace"),
        ("K8S_NODE_NAME", "spec.nodeName"),
        ("K8S_POD_UID", "metadata.uid"),
        ("K8S_POD_IP", "status.podIP"),
    ] {
        assert_eq!(agent_env[name]["valueFrom"]["fieldRef"]["fieldPath"], path, "{name}");
    }
    assert!(!agent_env.contains_key("K8S_CONTAINER_NAME"), "the agent's own name would mislabel the app's spans");
    let config =
        skein_agent::config::AgentConfig::parse(&value(&agent_env, "SKEIN_CONFIG_YAML")).expect("agent config");
    assert_eq!(config.redaction.len(), 1);
    assert_eq!(agent["securityContext"]["runAsNonRoot"], true);
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(agent["resources"]["limits"]["memory"], "50Mi");
    assert_eq!(agent["volumeMounts"][0]["mountPath"], SPILL_DIR);

    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 2, "the service-account volume is kept");
    assert_eq!(volumes[1]["name"], SPILL_VOLUME);
    assert_eq!(volumes[1]["emptyDir"]["sizeLimit"], (67108864 + SPILL_HEADROOM_BYTES).to_string());

    let app = &pod["spec"]["containers"][0];
    assert_eq!(pod["spec"]["containers"].as_array().map(Vec::len), Some(1), "native: no extra container");
    let env = env_of(app);
    assert_eq!(value(&env, "OTEL_SERVICE_NAME"), "checkout", "the Deployment's name, from the ReplicaSet");
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://localhost:4317");
    assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc");
    assert_eq!(value(&env, "OTEL_PROPAGATORS"), "tracecontext,baggage,b3");
    assert_eq!(value(&env, "OTEL_TRACES_SAMPLER"), "parentbased_jaeger_remote");
    assert!(value(&env, "OTEL_TRACES_SAMPLER_ARG").starts_with("endpoint=http://localhost:5778"));
    let attrs = value(&env, "OTEL_RESOURCE_ATTRIBUTES");
    for want in [
        "k8s.namespace.name=shop",
        "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)",
        "k8s.container.name=app",
        "k8s.deployment.name=checkout",
    ] {
        assert!(attrs.contains(want), "{want} in {attrs}");
    }
    // `$(VAR)` expands only variables defined earlier in the list.
    let names: Vec<&str> = app["env"].as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).expect(n);
    assert!(pos("OTEL_RESOURCE_ATTRIBUTES_POD_NAME") < pos("OTEL_RESOURCE_ATTRIBUTES"));

    assert_eq!(pod["metadata"]["annotations"][INJECTED_ANNOTATION], format!("prod@{hash}"));
    assert_eq!(pod["metadata"]["labels"][PIPELINE_LABEL], "prod");
    assert_eq!(pod["metadata"]["labels"][PIPELINE_NAMESPACE_LABEL], "shop");
    assert_eq!(pod["metadata"]["labels"]["tier"], "backend", "existing labels kept");
    assert_eq!(pod["metadata"]["creationTimestamp"], Value::Null, "fields the patch does not touch stay as sent");
    assert!(pod["metadata"]["annotations"].get(STATUS_ANNOTATION).is_none());
    let parsed: Pod = serde_json::from_value(pod.clone()).expect("still a Pod");
    assert!(parsed.spec.is_some());

    assert!(matches!(case.run(&pod), Decision::AlreadyInjected), "a second run yields no patch");
}

#[test]
fn user_settings_and_init_containers_are_kept() {
    let prod = ready(pipeline("prod", Default::default()));
    let case =
        Case { namespace: "batch", labels: BTreeMap::new(), pipelines: vec![prod], native: true, ..Default::default() };
    let raw = configured_pod();
    let Decision::Inject { hash, patch, .. } = case.run(&raw) else { panic!("expected injection") };
    let pod = apply(&raw, &patch);

    let inits = pod["spec"]["initContainers"].as_array().expect("init containers");
    assert_eq!(inits.iter().map(|c| c["name"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["skein-agent", "migrate"]);
    assert!(env_of(&inits[1]).is_empty(), "init containers are not given the SDK environment");
    assert_eq!(inits[1]["futureField"]["enabled"], true, "unknown fields stay with their container");
    assert_eq!(inits[1]["args"], json!(["up"]));
    assert!(inits[0].get("futureField").is_none());
    assert!(!env_of(&inits[0]).contains_key("SKEIN_CONFIG_YAML"), "no redaction rules: no config");

    let worker = env_of(&pod["spec"]["containers"][0]);
    assert_eq!(value(&worker, "OTEL_SERVICE_NAME"), "billing-worker", "never overwritten");
    assert_eq!(value(&worker, "OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf");
    assert_eq!(value(&worker, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://localhost:4318", "follows the user's protocol");
    assert_eq!(value(&worker, "OTEL_TRACES_SAMPLER"), "always_on");
    assert!(!worker.contains_key("OTEL_TRACES_SAMPLER_ARG"));
    assert_eq!(worker["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"], "db");
    let names: Vec<&str> = pod["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        &names[..4],
        ["OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_SAMPLER", "DATABASE_URL"]
    );

    let exporter = env_of(&pod["spec"]["containers"][1]);
    assert_eq!(value(&exporter, "OTEL_SERVICE_NAME"), "worker", "from app.kubernetes.io/name");
    assert!(value(&exporter, "OTEL_RESOURCE_ATTRIBUTES").contains("k8s.container.name=metrics"));
    assert!(!exporter.contains_key("OTEL_TRACES_SAMPLER"), "no remote head sampling in this pipeline");

    assert_eq!(pod["metadata"]["annotations"][INJECTED_ANNOTATION], format!("tracing/prod@{hash}"));
    assert_eq!(pod["metadata"]["labels"][PIPELINE_NAMESPACE_LABEL], "tracing");
    assert!(matches!(case.run(&pod), Decision::AlreadyInjected));
}

#[test]
fn injected_and_opted_out_pods_are_left_alone() {
    let case = shop_case(vec![shop_pipeline()]);
    let mut raw = deployment_pod();
    raw["metadata"]["annotations"] = json!({INJECTED_ANNOTATION: "prod@0123456789abcdef"});
    assert!(matches!(case.run(&raw), Decision::AlreadyInjected));

    let mut raw = deployment_pod();
    raw["spec"]["containers"][0]["name"] = json!(AGENT_CONTAINER);
    assert!(matches!(case.run(&raw), Decision::AlreadyInjected), "an agent added by hand counts");

    let mut raw = deployment_pod();
    raw["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "false"});
    assert!(matches!(case.run(&raw), Decision::NotRequested), "the pod opts out of its namespace's injection");

    let quiet = Case {
        namespace: "shop",
        labels: BTreeMap::new(),
        pipelines: vec![shop_pipeline()],
        native: true,
        ..Default::default()
    };
    assert!(matches!(quiet.run(&deployment_pod()), Decision::NotRequested), "nothing asked for injection");
    let disabled = Case {
        namespace: "shop",
        labels: BTreeMap::from([(NAMESPACE_LABEL.to_string(), "disabled".to_string())]),
        pipelines: vec![shop_pipeline()],
        native: true,
        ..Default::default()
    };
    assert!(matches!(disabled.run(&deployment_pod()), Decision::NotRequested));
}

fn skipped(case: &Case, raw: &Value) -> (String, Option<PipelineRef>, Value) {
    let Decision::Skip { reason, pipeline, patch } = case.run(raw) else { panic!("expected a skip") };
    let pod = apply(raw, &patch);
    assert_eq!(pod["metadata"]["annotations"][STATUS_ANNOTATION], format!("skipped: {reason}"));
    let mut unchanged = pod.clone();
    unchanged["metadata"]["annotations"].as_object_mut().expect("annotations").remove(STATUS_ANNOTATION);
    if unchanged["metadata"]["annotations"].as_object().is_some_and(|a| a.is_empty())
        && raw["metadata"].get("annotations").is_none()
    {
        unchanged["metadata"].as_object_mut().expect("metadata").remove("annotations");
    }
    assert_eq!(&unchanged, raw, "a skip changes nothing but the status annotation");
    (reason, pipeline, pod)
}

#[test]
fn no_pipeline_several_pipelines_and_unready_pipelines_are_skipped_with_a_reason() {
    let none = shop_case(vec![]);
    let (reason, target, pod) = skipped(&none, &deployment_pod());
    assert!(reason.contains("no TracingPipeline in namespace shop"), "{reason}");
    assert_eq!(target, None, "the Event goes on the namespace");
    assert!(matches!(none.run(&pod), Decision::Skip { .. }), "a skipped pod is not marked injected");

    let blue = ready(in_namespace("shop", pipeline("blue", Default::default())));
    let green = ready(in_namespace("shop", pipeline("green", Default::default())));
    let several = shop_case(vec![green, blue.clone()]);
    let (reason, _, _) = skipped(&several, &deployment_pod());
    assert!(reason.contains("2 TracingPipelines in namespace shop (blue, green)"), "{reason}");
    let mut named = deployment_pod();
    named["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "blue"});
    assert!(matches!(several.run(&named), Decision::Inject { .. }), "the annotation resolves the ambiguity");

    let mut missing = deployment_pod();
    missing["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "nope"});
    let (reason, _, _) = skipped(&several, &missing);
    assert_eq!(reason, "TracingPipeline shop/nope not found (named by the pod annotation skein.dev/inject=\"nope\")");

    let mut refused = in_namespace("shop", pipeline("prod", Default::default()));
    let mut status = shop_pipeline().status.clone().expect("status");
    status.conditions[0].status = "False".into();
    status.conditions[0].reason = "InvalidSamplingPolicy".into();
    status.conditions[0].message = "spec.sampling.tail: unknown policy type".into();
    refused.status = Some(status);
    let unready = shop_case(vec![Arc::new(refused)]);
    let (reason, target, _) = skipped(&unready, &deployment_pod());
    assert!(reason.contains("TracingPipeline shop/prod is not ready: InvalidSamplingPolicy"), "{reason}");
    assert_eq!(target, Some(PipelineRef { namespace: "shop".into(), name: "prod".into() }));

    let fresh = shop_case(vec![Arc::new(in_namespace("shop", pipeline("prod", Default::default())))]);
    let (reason, _, _) = skipped(&fresh, &deployment_pod());
    assert!(reason.contains("not reconciled"), "{reason}");
}

#[test]
fn before_kubernetes_1_29_the_agent_is_a_regular_container() {
    let case = Case {
        namespace: "shop",
        labels: enabled(),
        pipelines: vec![shop_pipeline()],
        native: false,
        ..Default::default()
    };
    let raw = deployment_pod();
    let Decision::Inject { patch, .. } = case.run(&raw) else { panic!("expected injection") };
    let pod = apply(&raw, &patch);
    let containers = pod["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[1]["name"], AGENT_CONTAINER);
    assert!(containers[1].get("restartPolicy").is_none(), "restartPolicy is for init containers only");
    assert!(pod["spec"].get("initContainers").is_none());
    assert_eq!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"], "app");
    assert!(matches!(case.run(&pod), Decision::AlreadyInjected));

    assert!(SidecarMode::Auto.native(1, 29));
    assert!(SidecarMode::Auto.native(1, 33));
    assert!(!SidecarMode::Auto.native(1, 28));
    assert!(SidecarMode::Native.native(1, 27));
    assert!(!SidecarMode::Container.native(1, 33));
    assert_eq!(parse_version("1", "29+"), Some((1, 29)));
    assert_eq!(parse_version("1", ""), None);
}

#[test]
fn the_agent_hash_follows_agent_settings_only() {
    let d = Defaults::default();
    let base = shop_pipeline();
    let h = agent_hash(&base, &d).expect("hash");
    assert_eq!(h.len(), 16);
    let mut more_collectors = (*base).clone();
    more_collectors.spec.collector.replicas = Some(5);
    assert_eq!(agent_hash(&more_collectors, &d).expect("hash"), h, "collector settings do not touch agents");
    let mut bigger = (*base).clone();
    bigger.spec.agent.memory_buffer_bytes = Some(8 << 20);
    assert_ne!(agent_hash(&bigger, &d).expect("hash"), h);
    let mut redacted = (*base).clone();
    redacted.spec.redaction.clear();
    assert_ne!(agent_hash(&redacted, &d).expect("hash"), h);
    let mut local = (*base).clone();
    local.spec.sampling.head = None;
    assert_ne!(agent_hash(&local, &d).expect("hash"), h, "the apps' sampler changes");
    assert_eq!(injected_hash(&format!("tracing/prod@{h}")), Some(h.as_str()));

    // The operator's default agent resources reach agents of pipelines that set none, and only those.
    let limited: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_value(json!({"limits": {"memory": "64Mi"}})).expect("resources");
    let with_default = Defaults { agent_resources: Some(limited.clone()), ..Defaults::default() };
    assert_ne!(agent_hash(&base, &with_default).expect("hash"), h);
    let mut own = (*base).clone();
    own.spec.agent.resources = Some(serde_json::from_value(json!({"limits": {"memory": "1Gi"}})).expect("resources"));
    assert_eq!(agent_hash(&own, &with_default).expect("hash"), agent_hash(&own, &d).expect("hash"));
}

#[test]
fn a_pipeline_name_too_long_for_a_label_value_never_invalidates_the_pod() {
    let long = "p".repeat(70);
    let case = shop_case(vec![ready(in_namespace("shop", pipeline(&long, Default::default())))]);
    let raw = deployment_pod();
    let Decision::Inject { patch, .. } = case.run(&raw) else { panic!("expected injection") };
    let pod = apply(&raw, &patch);
    assert!(pod["metadata"]["labels"].get(PIPELINE_LABEL).is_none(), "label values stop at 63 characters");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], AGENT_CONTAINER);
}

#[test]
fn tls_mounts_the_agents_secret_optionally_and_passes_its_files() {
    let mut tp = (*shop_pipeline()).clone();
    let before = agent_hash(&tp, &Defaults::default()).expect("hash");
    tp.spec.tls = Some(
        serde_json::from_value(
            json!({"secretRef": {"name": "collector-tls"}, "clientAuth": true, "agentSecretName": "agent-tls"}),
        )
        .expect("tls spec"),
    );
    assert_ne!(agent_hash(&tp, &Defaults::default()).expect("hash"), before, "TLS changes the agent");
    let case = shop_case(vec![ready(tp.clone())]);
    let raw = deployment_pod();
    let Decision::Inject { patch, .. } = case.run(&raw) else { panic!("expected injection") };
    let pod = apply(&raw, &patch);
    let agent = &pod["spec"]["initContainers"][0];
    let args: Vec<&str> = agent["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    for want in [
        format!("--collector-tls-ca={AGENT_TLS_DIR}/ca.crt"),
        format!("--collector-tls-cert={AGENT_TLS_DIR}/tls.crt"),
        format!("--collector-tls-key={AGENT_TLS_DIR}/tls.key"),
    ] {
        assert!(args.contains(&want.as_str()), "{want} in {args:?}");
    }
    let mounts = agent["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == AGENT_TLS_VOLUME && m["mountPath"] == AGENT_TLS_DIR && m["readOnly"] == true)
    );
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let tls = volumes.iter().find(|v| v["name"] == AGENT_TLS_VOLUME).expect("TLS volume");
    assert_eq!(
        tls["secret"],
        json!({"secretName": "agent-tls", "optional": true}),
        "a missing Secret never blocks the pod"
    );
    assert!(volumes.iter().any(|v| v["name"] == SPILL_VOLUME), "the spill volume stays");

    // Server-only TLS: the CA, no client certificate; the Secret defaults to the collectors' name.
    tp.spec.tls = Some(serde_json::from_value(json!({"secretRef": {"name": "collector-tls"}})).expect("tls spec"));
    let case = shop_case(vec![ready(tp)]);
    let Decision::Inject { patch, .. } = case.run(&raw) else { panic!("expected injection") };
    let pod = apply(&raw, &patch);
    let args = pod["spec"]["initContainers"][0]["args"].to_string();
    assert!(args.contains("--collector-tls-ca=") && !args.contains("--collector-tls-cert"), "{args}");
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let tls = volumes.iter().find(|v| v["name"] == AGENT_TLS_VOLUME).expect("TLS volume");
    assert_eq!(tls["secret"]["secretName"], "collector-tls");
}

fn annotated(value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(INJECT_ANNOTATION.to_string(), value.to_string())])
}

fn target_of(decision: Decision) -> PipelineRef {
    match decision {
        Decision::Inject { pipeline, .. } => pipeline,
        other => panic!("expected injection, got {other:?}"),
    }
}

#[test]
fn a_namespace_annotation_names_a_pipeline_in_another_namespace_and_the_pod_annotation_wins() {
    let dev = ready(in_namespace("tracing", pipeline("dev", Default::default())));
    let other = ready(in_namespace("tracing", pipeline("other", Default::default())));
    let local = ready(in_namespace("shop", pipeline("local", Default::default())));
    let pipelines = vec![dev, other, local];
    let case = Case {
        namespace: "shop",
        annotations: annotated("tracing/dev"),
        pipelines: pipelines.clone(),
        native: true,
        ..Default::default()
    };
    let raw = deployment_pod();
    let Decision::Inject { pipeline: target, patch, .. } = case.run(&raw) else { panic!("expected injection") };
    assert_eq!(target, PipelineRef { namespace: "tracing".into(), name: "dev".into() }, "no label needed");
    let pod = apply(&raw, &patch);
    let args = pod["spec"]["initContainers"][0]["args"].to_string();
    assert!(args.contains("--collector-dns=dev-collector-headless.tracing.svc:4317"), "cross-namespace DNS: {args}");
    assert!(args.contains("--sampling-upstream=http://dev-collector.tracing.svc:5778"), "{args}");
    let shown = pod["metadata"]["annotations"][INJECTED_ANNOTATION].as_str().expect("annotation");
    assert!(shown.starts_with("tracing/dev@"), "{shown}");
    assert_eq!(pod["metadata"]["labels"][PIPELINE_NAMESPACE_LABEL], "tracing");

    // The label and the annotation together: the annotation names the pipeline.
    let both = Case { labels: enabled(), ..case.clone() };
    assert_eq!(target_of(both.run(&raw)), PipelineRef { namespace: "tracing".into(), name: "dev".into() });

    // A pod's own annotation wins: another pipeline, "true" (follows the namespace), or "false".
    let mut pod_named = deployment_pod();
    pod_named["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "tracing/other"});
    assert_eq!(target_of(case.run(&pod_named)).name, "other");
    pod_named["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "local"});
    assert_eq!(target_of(case.run(&pod_named)), PipelineRef { namespace: "shop".into(), name: "local".into() });
    pod_named["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "true"});
    assert_eq!(target_of(case.run(&pod_named)).name, "dev");
    pod_named["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "false"});
    assert!(matches!(case.run(&pod_named), Decision::NotRequested));

    // A bare name on the namespace is relative to that namespace; "true" picks its only pipeline.
    let relative = Case { annotations: annotated("local"), ..case.clone() };
    assert_eq!(target_of(relative.run(&raw)).namespace, "shop");
    let auto = Case { annotations: annotated("true"), ..case.clone() };
    assert_eq!(target_of(auto.run(&raw)).name, "local");

    // A namespace that opts out overrides its label, but a pod may still ask by name.
    let out = Case { labels: enabled(), annotations: annotated("false"), ..case.clone() };
    assert!(matches!(out.run(&raw), Decision::NotRequested));
    assert_eq!(target_of(out.run(&pod_named_with("tracing/dev"))).name, "dev");

    // A namespace annotation naming a pipeline that does not exist is a skip that says where the name came from.
    let missing = Case { annotations: annotated("tracing/nope"), ..case.clone() };
    let (reason, _, _) = skipped(&missing, &raw);
    assert!(reason.contains("TracingPipeline tracing/nope not found (named by the namespace annotation"), "{reason}");
}

#[test]
fn a_labelled_namespace_without_a_pipeline_is_told_the_command_that_points_it_at_one() {
    let dev = ready(in_namespace("tracing", pipeline("dev", Default::default())));
    let case = shop_case(vec![dev.clone()]);
    let (reason, _, _) = skipped(&case, &deployment_pod());
    assert!(reason.contains("kubectl annotate namespace shop skein.dev/inject=tracing/dev"), "{reason}");
    let prod = ready(in_namespace("observability", pipeline("prod", Default::default())));
    let two = Case { pipelines: vec![dev, prod], ..case.clone() };
    let (reason, _, _) = skipped(&two, &deployment_pod());
    assert!(reason.contains("one of tracing/dev, observability/prod"), "{reason}");
}

fn pod_named_with(value: &str) -> Value {
    let mut raw = deployment_pod();
    raw["metadata"]["annotations"] = json!({INJECT_ANNOTATION: value});
    raw
}
