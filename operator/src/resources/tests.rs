use super::*;
use crate::fixtures::{pipeline, pipeline_yaml};

fn build(tp: &TracingPipeline) -> Desired {
    desired(tp, &Defaults::default()).expect("valid")
}

const SCYLLA: &str = r#"
storage:
  scylla:
    contactPoints: ["scylla-0.db", "10.0.0.7:19042"]
    localDatacenter: dc1
    credentialsSecretRef: {name: scylla-creds}
    replication: {networkTopology: {datacenters: {dc1: 3}}}
    consistency: LOCAL_ONE
    reclaimPolicy: Delete
"#;

fn container(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> &k8s_openapi::api::core::v1::Container {
    &template.spec.as_ref().expect("pod spec").containers[0]
}

#[test]
fn empty_spec_is_one_hardened_all_in_one_pod_with_a_volume() {
    let tp = pipeline("demo", TracingPipelineSpec::default());
    let d = build(&tp);
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!("embedded by default") };
    let spec = stateful_set.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.service_name.as_deref(), Some("demo-collector-headless"));
    let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    let size = &claim.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()).expect("req")
        ["storage"];
    assert_eq!(size.0, "10Gi");
    let c = container(&spec.template);
    assert_eq!(c.command.as_deref(), Some(&["skein-all-in-one".to_string()][..]));
    let args = c.args.clone().unwrap_or_default();
    for a in ["--storage=embedded", "--data-dir=/var/lib/skein/data", "--retention=72h", "--retention-important=336h"] {
        assert!(args.contains(&a.to_string()), "{a} in {args:?}");
    }
    assert_eq!(c.image.as_deref(), Some(Defaults::default().all_in_one_image.as_str()));
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
    assert!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    let mounts: Vec<_> = c.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/tmp") && mounts.contains(&"/var/lib/skein/data"), "writable paths: {mounts:?}");
    let ports: Vec<_> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert!(
        ports.contains(&4317) && ports.contains(&16686) && ports.contains(&16685) && ports.contains(&14269),
        "{ports:?}"
    );
    // Queries (HTTP and gRPC) go to the all-in-one pod.
    let service_ports: Vec<_> = d
        .query_service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(service_ports, [16686, 16685]);
    let query_selector = d.query_service.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector");
    assert_eq!(query_selector["app.kubernetes.io/component"], "collector");
    // Every child is owned by the pipeline.
    for meta in
        [&d.config_map.metadata, &d.service_account.metadata, &d.collector_service.metadata, &stateful_set.metadata]
    {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("TracingPipeline", "demo", "uid-demo")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("tracing"));
    }
}

#[test]
fn scylla_spec_splits_collectors_and_query_and_never_runs_ddl_in_pods() {
    let tp = pipeline_yaml("prod", SCYLLA);
    let d = build(&tp);
    let Workloads::Scylla { target, collector, query, pdb, hpa } = &d.workloads else { panic!("scylla") };
    assert_eq!(target.contact_points, ["scylla-0.db:9042", "10.0.0.7:19042"]);
    assert_eq!(target.schema.keyspace, "skein_tracing_prod");
    assert_eq!(target.schema.default_ttl_secs, 72 * 3600);
    assert_eq!(target.credentials_secret.as_deref(), Some("scylla-creds"));
    assert!(hpa.is_none());
    let spec = collector.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2), "two collectors by default");
    let c = container(&spec.template);
    let args = c.args.clone().unwrap_or_default();
    for a in [
        "--storage=scylla",
        "--scylla-nodes=scylla-0.db:9042,10.0.0.7:19042",
        "--scylla-keyspace=skein_tracing_prod",
        "--scylla-consistency=LOCAL_ONE",
        "--scylla-local-dc=dc1",
        "--scylla-skip-schema",
        "--scylla-password-file=/etc/skein/scylla/password",
        "--config=/etc/skein/config/collector.yaml",
    ] {
        assert!(args.contains(&a.to_string()), "{a} in {args:?}");
    }
    let env = c.env.clone().unwrap_or_default();
    let user = env.iter().find(|e| e.name == "SKEIN_SCYLLA_USERNAME").expect("username env");
    let secret = user.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).expect("secret ref");
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("scylla-creds", "username"));
    let annotations = spec.template.metadata.as_ref().and_then(|m| m.annotations.clone()).expect("annotations");
    assert_eq!(annotations[CONFIG_HASH_ANNOTATION], d.config_hash);
    let q = query.spec.as_ref().expect("query");
    assert_eq!(q.replicas, Some(1));
    assert_eq!(container(&q.template).command.as_deref(), Some(&["skein-query".to_string()][..]));
    let pdb = pdb.spec.as_ref().expect("pdb");
    assert_eq!(pdb.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
    let headless = d.headless_service.spec.as_ref().expect("headless");
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        d.query_service.spec.as_ref().and_then(|s| s.selector.clone()).expect("selector")["app.kubernetes.io/component"],
        "query"
    );
}

#[test]
fn autoscaling_adds_an_hpa_and_leaves_replicas_to_it() {
    let tp = pipeline_yaml(
        "prod",
        &format!(
            "{SCYLLA}collector:\n  autoscaling: {{minReplicas: 3, maxReplicas: 12}}\n  nodeSelector: {{pool: tracing}}\n"
        ),
    );
    let d = build(&tp);
    let Workloads::Scylla { collector, hpa, .. } = &d.workloads else { panic!("scylla") };
    let hpa = hpa.as_ref().expect("hpa").spec.clone().expect("spec");
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 12));
    assert_eq!(hpa.scale_target_ref.name, "prod-collector");
    let target = hpa.metrics.expect("metrics")[0].resource.clone().expect("resource").target;
    assert_eq!(target.average_utilization, Some(70));
    let spec = collector.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, None, "the HPA owns replicas");
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.node_selector.clone().expect("nodeSelector")["pool"], "tracing");
    // The serialized apply body carries no replicas field either.
    let body = serde_json::to_value(collector.as_ref()).expect("json");
    assert!(body["spec"].get("replicas").is_none());
}

#[test]
fn sampling_policy_change_changes_the_hash_and_the_pod_template() {
    let a = pipeline_yaml(
        "p",
        &format!(
            "{SCYLLA}sampling:\n  tail:\n    policies: [{{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}]\n"
        ),
    );
    let b = pipeline_yaml(
        "p",
        &format!(
            "{SCYLLA}sampling:\n  tail:\n    policies: [{{name: slow, type: latency, latency: {{threshold_ms: 500}}}}]\n"
        ),
    );
    let (da, db) = (build(&a), build(&b));
    assert_ne!(da.config_hash, db.config_hash);
    assert_eq!(build(&a).config_hash, da.config_hash, "rendering is deterministic");
    let yaml = &db.config_map.data.as_ref().expect("data")[CONFIG_KEY];
    let parsed = CollectorConfig::from_yaml(yaml, std::path::Path::new("cm")).expect("collector parses it");
    assert_eq!(parsed.tail_sampling.expect("tail").policies[0].name, "slow");
    let hash_of = |d: &Desired| match &d.workloads {
        Workloads::Scylla { collector, .. } => collector
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .expect("annotations")[CONFIG_HASH_ANNOTATION]
            .clone(),
        Workloads::Embedded { .. } => unreachable!(),
    };
    assert_eq!(hash_of(&db), db.config_hash);
    assert_ne!(hash_of(&da), hash_of(&db));
}

#[test]
fn invalid_specs_name_the_field() {
    let cases = [
        (
            "sampling:\n  tail:\n    policies: [{name: x, type: latency}]\n",
            "InvalidSamplingPolicy",
            "spec.sampling.tail",
        ),
        (
            "sampling:\n  head:\n    default_strategy: {type: probabilistic, param: 2}\n",
            "InvalidSamplingPolicy",
            "spec.sampling.head",
        ),
        ("redaction: [{key: \"(\", action: mask}]\n", "InvalidRedaction", "spec.redaction[0].key"),
        (
            "storage: {scylla: {contactPoints: [a], keyspace: \"1bad\"}}\n",
            "InvalidStorage",
            "spec.storage.scylla.keyspace",
        ),
        ("storage: {scylla: {contactPoints: []}}\n", "InvalidStorage", "spec.storage.scylla.contactPoints"),
        (
            "storage: {scylla: {contactPoints: [a], consistency: MOST}}\n",
            "InvalidStorage",
            "spec.storage.scylla.consistency",
        ),
        ("storage: {embedded: {}, scylla: {contactPoints: [a]}}\n", "InvalidStorage", "spec.storage"),
        ("collector: {replicas: 3}\n", "InvalidStorage", "spec.collector"),
        (
            "storage: {scylla: {contactPoints: [a]}}\ncollector: {autoscaling: {minReplicas: 5, maxReplicas: 2}}\n",
            "InvalidSpec",
            "spec.collector.autoscaling",
        ),
        ("retention: {traces: 72h, importantTraces: 1h}\n", "InvalidSpec", "spec.retention"),
    ];
    for (yaml, reason, field) in cases {
        let tp = pipeline_yaml("bad", yaml);
        let e = validate(&tp).expect_err(yaml);
        assert_eq!((e.reason, e.field.as_str()), (reason, field), "{yaml}: {e}");
        assert!(matches!(desired(&tp, &Defaults::default()), Err(Error::InvalidSpec(_))));
    }
}

#[test]
fn defaults_and_overrides() {
    assert_eq!(default_keyspace("team-a", "prod.eu"), "skein_team_a_prod_eu");
    assert!(default_keyspace(&"n".repeat(40), &"m".repeat(40)).len() <= 48);
    let tp = pipeline_yaml(
        "p",
        "collector:\n  image: reg/skein:dev\nquery: {serviceType: LoadBalancer}\nstorage: {embedded: {size: 50Gi, storageClassName: fast}}\nretention: {traces: 24h, importantTraces: 48h, importantLatency: 2s}\n",
    );
    let d = build(&tp);
    assert_eq!(d.query_service.spec.as_ref().and_then(|s| s.type_.clone()).as_deref(), Some("LoadBalancer"));
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!() };
    let spec = stateful_set.spec.as_ref().expect("spec");
    let c = container(&spec.template);
    assert_eq!(c.image.as_deref(), Some("reg/skein:dev"));
    let args = c.args.clone().unwrap_or_default();
    assert!(args.contains(&"--retention=24h".into()) && args.contains(&"--important-latency=2s".into()), "{args:?}");
    let claim = &spec.volume_claim_templates.as_ref().expect("claims")[0];
    assert_eq!(claim.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()), Some("fast"));
    let retention = spec.persistent_volume_claim_retention_policy.as_ref().expect("retention policy");
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"), "retainOnDelete defaults to true");
    let mut deleting = tp.clone();
    deleting.spec.storage.embedded.as_mut().expect("embedded").retain_on_delete = false;
    let Workloads::Embedded { stateful_set } = &build(&deleting).workloads else { panic!() };
    let policy = stateful_set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    assert_eq!(policy.and_then(|p| p.when_deleted.as_deref()), Some("Delete"));
    // A pipeline without a uid (not from the API server) cannot own children.
    let mut orphan = pipeline("x", TracingPipelineSpec::default());
    orphan.metadata.uid = None;
    assert!(matches!(desired(&orphan, &Defaults::default()), Err(Error::MissingField(_))));
}

#[test]
fn a_query_auth_secret_is_mounted_and_required_by_every_pod_that_serves_queries() {
    let expect = |template: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        let c = container(template);
        let args = c.args.clone().unwrap_or_default();
        assert!(args.contains(&"--query-auth-token-file=/etc/skein/query-auth/tokens".to_string()), "{args:?}");
        let mount = c.volume_mounts.as_ref().and_then(|m| m.iter().find(|m| m.name == "query-auth")).expect("mount");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/skein/query-auth", Some(true)));
        let volumes = template.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        let secret = volumes.iter().find(|v| v.name == "query-auth").and_then(|v| v.secret.clone()).expect("volume");
        assert_eq!(secret.secret_name.as_deref(), Some("query-tokens"));
        let items = secret.items.unwrap_or_default();
        assert_eq!((items[0].key.as_str(), items[0].path.as_str()), ("tokens", "tokens"));
    };
    let auth = "query:\n  authTokenSecretRef: {name: query-tokens}\n";
    // Embedded: the all-in-one pod serves queries.
    let d = build(&pipeline_yaml("dev", auth));
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!("embedded") };
    expect(&stateful_set.spec.as_ref().expect("spec").template);
    // ScyllaDB: the query pods do; the collectors, which serve no queries, get neither flag nor Secret.
    let d = build(&pipeline_yaml("prod", &format!("{SCYLLA}{auth}")));
    let Workloads::Scylla { collector, query, .. } = &d.workloads else { panic!("scylla") };
    expect(&query.spec.as_ref().expect("query").template);
    let c = container(&collector.spec.as_ref().expect("collector").template);
    assert!(!c.args.clone().unwrap_or_default().iter().any(|a| a.contains("query-auth")));
    // Without the field, no flag.
    let d = build(&pipeline_yaml("open", "{}"));
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!("embedded") };
    let c = container(&stateful_set.spec.as_ref().expect("spec").template);
    assert!(!c.args.clone().unwrap_or_default().iter().any(|a| a.contains("query-auth")));
}

#[test]
fn tls_serves_the_otlp_receiver_from_the_secret_on_every_collector() {
    let expect = |template: &k8s_openapi::api::core::v1::PodTemplateSpec, mutual: bool| {
        let c = container(template);
        let args = c.args.clone().unwrap_or_default();
        assert!(args.contains(&"--otlp-tls-cert-file=/etc/skein/tls/tls.crt".to_string()), "{args:?}");
        assert!(args.contains(&"--otlp-tls-key-file=/etc/skein/tls/tls.key".to_string()), "{args:?}");
        assert_eq!(args.contains(&"--otlp-tls-client-ca-file=/etc/skein/tls/ca.crt".to_string()), mutual, "{args:?}");
        let mount = c.volume_mounts.as_ref().and_then(|m| m.iter().find(|m| m.name == "otlp-tls")).expect("mount");
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/skein/tls", Some(true)));
        let volumes = template.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        let secret = volumes.iter().find(|v| v.name == "otlp-tls").and_then(|v| v.secret.clone()).expect("volume");
        assert_eq!(secret.secret_name.as_deref(), Some("collector-tls"));
    };
    let mtls = "tls: {secretRef: {name: collector-tls}, clientAuth: true}\n";
    let d = build(&pipeline_yaml("dev", mtls));
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!("embedded") };
    expect(&stateful_set.spec.as_ref().expect("spec").template, true);
    let d = build(&pipeline_yaml("prod", &format!("{SCYLLA}tls: {{secretRef: {{name: collector-tls}}}}\n")));
    let Workloads::Scylla { collector, query, .. } = &d.workloads else { panic!("scylla") };
    expect(&collector.spec.as_ref().expect("collector").template, false);
    let q = container(&query.spec.as_ref().expect("query").template);
    assert!(
        !q.args.clone().unwrap_or_default().iter().any(|a| a.contains("otlp-tls")),
        "the query pods ingest nothing"
    );
    let bad = pipeline_yaml("bad", "tls: {secretRef: {name: ''}}\n");
    match crate::resources::validate(&bad) {
        Err(e) => assert_eq!(e.field, "spec.tls.secretRef.name"),
        Ok(_) => panic!("an empty Secret name is refused"),
    }
}

#[test]
fn every_container_the_operator_runs_is_non_root_with_a_read_only_root_filesystem() {
    let check = |what: &str, template: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        let pod = template.spec.as_ref().expect("pod spec");
        let all = pod.containers.iter().chain(pod.init_containers.iter().flatten());
        let mut n = 0;
        for c in all {
            let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{what}/{}: no securityContext", c.name));
            assert_eq!(sc.run_as_non_root, Some(true), "{what}/{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{what}/{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{what}/{}", c.name);
            assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
            n += 1;
        }
        assert!(n > 0, "{what} has containers");
    };
    let d = build(&pipeline_yaml("dev", "tls: {secretRef: {name: collector-tls}}\n"));
    let Workloads::Embedded { stateful_set } = &d.workloads else { panic!("embedded") };
    check("all-in-one", &stateful_set.spec.as_ref().expect("spec").template);
    let d = build(&pipeline_yaml("prod", SCYLLA));
    let Workloads::Scylla { collector, query, .. } = &d.workloads else { panic!("scylla") };
    check("collector", &collector.spec.as_ref().expect("collector").template);
    check("query", &query.spec.as_ref().expect("query").template);
}
