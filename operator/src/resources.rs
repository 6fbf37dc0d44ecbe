//! Pure builders: a `TracingPipeline` in, the Kubernetes objects it stands for out. No I/O here; the controller
//! applies what these return with server-side apply.
//!
//! With `storage.scylla`: a collector Deployment (config hash on the pod template), a query Deployment, a
//! PodDisruptionBudget and, with `autoscaling`, a HorizontalPodAutoscaler. With `storage.embedded`: one
//! StatefulSet running `skein-all-in-one` with a PersistentVolumeClaim. Both: the collector ConfigMap, a
//! ServiceAccount, the `<name>-collector` ClusterIP Service, the `<name>-collector-headless` Service agents route
//! through, and the `<name>-query` Service. Names are the same in both modes, so agents and users need not know
//! which storage is in use.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skein_config::scylla::{Consistency, Replication, validate_keyspace};
use skein_config::{CollectorConfig, ConfigError};
use skein_storage::scylla::{BUCKET_SECS, SchemaConfig};

use crate::crd::{Endpoints, ReclaimPolicy, ScyllaStorage, TracingPipeline, TracingPipelineSpec};
use crate::{Error, Result};

/// Pod-template annotation holding the rendered configuration's hash; a new hash rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "skein.dev/config-hash";
/// Key of the collector configuration in its ConfigMap.
pub const CONFIG_KEY: &str = "collector.yaml";
/// Default Service ports (DESIGN §3).
pub const OTLP_GRPC_PORT: i32 = 4317;
/// OTLP HTTP.
pub const OTLP_HTTP_PORT: i32 = 4318;
/// Query HTTP API and UI.
pub const QUERY_HTTP_PORT: i32 = 16686;
/// Query gRPC API (`skein.query.v1.QueryService`).
pub const QUERY_GRPC_PORT: i32 = 16685;
const ZIPKIN_PORT: i32 = 9411;
/// The collectors' Jaeger remote-sampling HTTP port.
pub const SAMPLING_HTTP_PORT: i32 = 5778;
const SAMPLING_GRPC_PORT: i32 = 5779;
const COLLECTOR_ADMIN_PORT: i32 = 14269;
const QUERY_ADMIN_PORT: i32 = 16687;
/// Non-root user of every Skein container (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;
const CONFIG_DIR: &str = "/etc/skein/config";
/// Where the query auth Secret's `tokens` key is mounted.
const QUERY_AUTH_DIR: &str = "/etc/skein/query-auth";
/// Where the collectors' TLS Secret (`spec.tls.secretRef`) is mounted.
pub const TLS_DIR: &str = "/etc/skein/tls";
const PASSWORD_DIR: &str = "/etc/skein/scylla";
const DATA_DIR: &str = "/var/lib/skein/data";
const WAL_DIR: &str = "/var/lib/skein/wal";

/// Operator-wide defaults (flags of `skein-operator`): one image per binary, as `docker/<binary>.Dockerfile`
/// builds them.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Image with `skein-collector` (ScyllaDB pipelines' collectors).
    pub collector_image: String,
    /// Image with `skein-query` (ScyllaDB pipelines' query service).
    pub query_image: String,
    /// Image with `skein-all-in-one` (embedded-storage pipelines).
    pub all_in_one_image: String,
    /// Image of the sidecar agent.
    pub agent_image: String,
    /// Resources of injected agents whose pipeline sets none (`None`: requests 10m CPU / 16Mi and a memory limit
    /// of 48 MiB plus twice the pipeline's memory buffer).
    pub agent_resources: Option<ResourceRequirements>,
}

/// Registry and repository prefix of Skein's released images.
pub const IMAGE_REPOSITORY: &str = "ghcr.io/skein-dev";

impl Default for Defaults {
    fn default() -> Self {
        let image = |binary: &str| format!("{IMAGE_REPOSITORY}/{binary}:{}", env!("CARGO_PKG_VERSION"));
        Self {
            collector_image: image("skein-collector"),
            query_image: image("skein-query"),
            all_in_one_image: image("skein-all-in-one"),
            agent_image: image("skein-agent"),
            agent_resources: None,
        }
    }
}

/// Why a spec cannot be used: the condition reason, the field at fault and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// Condition reason (`InvalidSamplingPolicy`, `InvalidStorage`, `InvalidRedaction`, `InvalidSpec`).
    pub reason: &'static str,
    /// JSON path of the field, e.g. `spec.sampling.tail`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl InvalidSpec {
    fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason, field: field.into(), message: message.into() }
    }
}

/// The names of a pipeline's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// Collector Deployment/StatefulSet and ClusterIP Service, PDB, HPA.
    pub collector: String,
    /// Headless Service the agents resolve.
    pub headless: String,
    /// Collector ConfigMap.
    pub config: String,
    /// Query Deployment and Service.
    pub query: String,
    /// ServiceAccount of every pod.
    pub service_account: String,
}

impl Names {
    /// The names for pipeline `name`.
    pub fn new(name: &str) -> Self {
        Self {
            collector: format!("{name}-collector"),
            headless: format!("{name}-collector-headless"),
            config: format!("{name}-collector-config"),
            query: format!("{name}-query"),
            service_account: format!("{name}-skein"),
        }
    }
}

/// The keyspace a scylla pipeline writes to, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaTarget {
    /// Contact points, `host:port`.
    pub contact_points: Vec<String>,
    /// Preferred datacenter.
    pub local_datacenter: Option<String>,
    /// Secret with `username` and `password`.
    pub credentials_secret: Option<String>,
    /// Keyspace, replication, TTL.
    pub schema: SchemaConfig,
    /// Keep or drop the keyspace on deletion.
    pub reclaim_policy: ReclaimPolicy,
}

/// The storage-specific workloads.
#[derive(Clone, Debug, PartialEq)]
pub enum Workloads {
    /// One all-in-one StatefulSet.
    Embedded {
        /// The StatefulSet (named like the collector Deployment would be).
        stateful_set: Box<StatefulSet>,
    },
    /// Split collector and query Deployments on ScyllaDB.
    Scylla {
        /// The keyspace to create before the collectors roll out.
        target: ScyllaTarget,
        /// Collector Deployment.
        collector: Box<Deployment>,
        /// Query Deployment.
        query: Box<Deployment>,
        /// Collector PodDisruptionBudget (`maxUnavailable: 1`).
        pdb: Box<PodDisruptionBudget>,
        /// Collector autoscaler, when `autoscaling` is set.
        hpa: Option<Box<HorizontalPodAutoscaler>>,
    },
}

/// Everything a pipeline stands for.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Child names.
    pub names: Names,
    /// Hash of the rendered collector configuration (hex, 16 characters).
    pub config_hash: String,
    /// The collector ConfigMap.
    pub config_map: ConfigMap,
    /// The pods' ServiceAccount.
    pub service_account: ServiceAccount,
    /// `<name>-collector` (ClusterIP: OTLP, Zipkin, remote sampling).
    pub collector_service: Service,
    /// `<name>-collector-headless` (agents resolve it to route by trace ID).
    pub headless_service: Service,
    /// `<name>-query`.
    pub query_service: Service,
    /// Storage-specific workloads.
    pub workloads: Workloads,
}

/// Checks the sampling part of a spec with the collector's own validation and renders the collector
/// configuration (YAML).
///
/// # Errors
/// [`InvalidSpec`] naming `spec.sampling.tail` or `spec.sampling.head`.
pub fn render_config(spec: &TracingPipelineSpec) -> Result<String, InvalidSpec> {
    let config =
        CollectorConfig { tail_sampling: spec.sampling.tail.clone(), sampling_strategies: spec.sampling.head.clone() };
    config.validate().map_err(|e| {
        let field = match e {
            ConfigError::Strategy(_) => "spec.sampling.head",
            _ => "spec.sampling.tail",
        };
        InvalidSpec::new("InvalidSamplingPolicy", field, e.to_string())
    })?;
    serde_yaml::to_string(&config).map_err(|e| InvalidSpec::new("InvalidSpec", "spec.sampling", e.to_string()))
}

/// What [`validate`] computed on the way: the rendered collector configuration and, with scylla storage, the
/// keyspace target.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The collector configuration (YAML).
    pub config_yaml: String,
    /// The ScyllaDB target, with `storage.scylla`.
    pub scylla: Option<ScyllaTarget>,
}

/// Checks the parts of a spec the API server's schema cannot (regexes, policies, names, combinations).
///
/// # Errors
/// [`InvalidSpec`] naming the first field at fault.
pub fn validate(tp: &TracingPipeline) -> Result<Validated, InvalidSpec> {
    let spec = &tp.spec;
    let config_yaml = render_config(spec)?;
    for (i, rule) in spec.redaction.iter().enumerate() {
        rule.validate().map_err(|e| InvalidSpec::new("InvalidRedaction", format!("spec.redaction[{i}].key"), e.0))?;
    }
    if let Some(tls) = &spec.tls {
        let dns = |n: &str| {
            !n.is_empty()
                && n.len() <= 253
                && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        };
        if !dns(&tls.secret_ref.name) {
            let message = format!("{:?} is not a Secret name", tls.secret_ref.name);
            return Err(InvalidSpec::new("InvalidTls", "spec.tls.secretRef.name".to_string(), message));
        }
        if let Some(name) = tls.agent_secret_name.as_deref().filter(|n| !dns(n)) {
            let message = format!("{name:?} is not a Secret name");
            return Err(InvalidSpec::new("InvalidTls", "spec.tls.agentSecretName".to_string(), message));
        }
    }
    let storage = &spec.storage;
    match (&storage.embedded, &storage.scylla) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(InvalidSpec::new("InvalidStorage", "spec.storage", "set exactly one of embedded or scylla"));
        }
        (Some(e), None) => {
            if spec.collector.autoscaling.is_some() || spec.collector.replicas.is_some_and(|r| r != 1) {
                return Err(InvalidSpec::new(
                    "InvalidStorage",
                    "spec.collector",
                    "embedded storage runs one all-in-one pod: set replicas to 1 and no autoscaling, or use scylla",
                ));
            }
            if e.size.trim().is_empty() {
                return Err(InvalidSpec::new("InvalidStorage", "spec.storage.embedded.size", "must not be empty"));
            }
        }
        (None, Some(_)) => {}
    }
    if let Some(a) = &spec.collector.autoscaling
        && (a.min_replicas < 1 || a.min_replicas > a.max_replicas)
    {
        return Err(InvalidSpec::new(
            "InvalidSpec",
            "spec.collector.autoscaling",
            format!("need 1 <= minReplicas <= maxReplicas, got {} and {}", a.min_replicas, a.max_replicas),
        ));
    }
    let r = &spec.retention;
    if r.traces.0 < 1_000_000_000 || r.important_traces.0 < r.traces.0 {
        return Err(InvalidSpec::new(
            "InvalidSpec",
            "spec.retention",
            "traces must be at least 1s and importantTraces at least traces",
        ));
    }
    for (field, image) in [
        ("spec.collector.image", &spec.collector.image),
        ("spec.query.image", &spec.query.image),
        ("spec.agent.image", &spec.agent.image),
    ] {
        if image.as_deref().is_some_and(|i| i.trim().is_empty() || i.contains(char::is_whitespace)) {
            return Err(InvalidSpec::new("InvalidSpec", field, "not an image reference"));
        }
    }
    let scylla = spec.storage.scylla.as_ref().map(|s| scylla_target(tp, s)).transpose()?;
    Ok(Validated { config_yaml, scylla })
}

/// The default keyspace of a pipeline: `skein_<namespace>_<name>`, `-` and `.` as `_`, cut to 48 characters.
pub fn default_keyspace(namespace: &str, name: &str) -> String {
    let mut ks: String = format!("skein_{namespace}_{name}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    ks.truncate(48);
    ks
}

/// The ScyllaDB target of a pipeline.
///
/// # Errors
/// [`InvalidSpec`] for a bad keyspace, contact point, consistency or replication.
pub fn scylla_target(tp: &TracingPipeline, s: &ScyllaStorage) -> Result<ScyllaTarget, InvalidSpec> {
    let field = |f: &str| format!("spec.storage.scylla.{f}");
    let keyspace =
        s.keyspace.clone().unwrap_or_else(|| default_keyspace(&tp.namespace().unwrap_or_default(), &tp.name_any()));
    validate_keyspace(&keyspace).map_err(|m| InvalidSpec::new("InvalidStorage", field("keyspace"), m))?;
    if s.contact_points.is_empty() {
        return Err(InvalidSpec::new("InvalidStorage", field("contactPoints"), "at least one host:port is needed"));
    }
    for (i, cp) in s.contact_points.iter().enumerate() {
        if cp.trim().is_empty() || cp.contains(char::is_whitespace) || cp.contains(',') {
            return Err(InvalidSpec::new("InvalidStorage", field(&format!("contactPoints[{i}]")), "not a host:port"));
        }
    }
    if let Some(c) = &s.consistency {
        c.parse::<Consistency>().map_err(|m| InvalidSpec::new("InvalidStorage", field("consistency"), m))?;
    }
    let replication = s.replication.clone().unwrap_or(Replication::Simple { replication_factor: 1 });
    match &replication {
        Replication::Simple { replication_factor } if *replication_factor == 0 => {
            return Err(InvalidSpec::new("InvalidStorage", field("replication"), "replicationFactor must be >= 1"));
        }
        Replication::NetworkTopology { datacenters }
            if datacenters.is_empty()
                || datacenters.iter().any(|(dc, rf)| {
                    *rf == 0 || dc.is_empty() || !dc.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                }) =>
        {
            return Err(InvalidSpec::new(
                "InvalidStorage",
                field("replication"),
                "networkTopology needs datacenter names (letters, digits, - _ .) with factors >= 1",
            ));
        }
        _ => {}
    }
    Ok(ScyllaTarget {
        contact_points: s.contact_points.iter().map(|c| with_default_port(c)).collect(),
        local_datacenter: s.local_datacenter.clone(),
        credentials_secret: s.credentials_secret_ref.as_ref().map(|r| r.name.clone()),
        schema: SchemaConfig {
            keyspace,
            replication,
            default_ttl_secs: tp.spec.retention.traces.0 / 1_000_000_000,
            bucket_secs: BUCKET_SECS,
        },
        reclaim_policy: s.reclaim_policy,
    })
}

fn with_default_port(contact_point: &str) -> String {
    let has_port = contact_point.rsplit_once(':').is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    if has_port { contact_point.to_string() } else { format!("{contact_point}:9042") }
}

/// A pipeline's in-cluster endpoints (`<service>.<namespace>.svc`), as reported in its status and given to agents.
pub fn endpoints(names: &Names, ns: &str) -> Endpoints {
    let host = |svc: &str| format!("{svc}.{ns}.svc");
    Endpoints {
        otlp_grpc: format!("{}:{}", host(&names.collector), OTLP_GRPC_PORT),
        otlp_http: format!("http://{}:{}", host(&names.collector), OTLP_HTTP_PORT),
        collector_headless: format!("{}:{}", host(&names.headless), OTLP_GRPC_PORT),
        sampling: format!("http://{}:{}", host(&names.collector), SAMPLING_HTTP_PORT),
        query: format!("http://{}:{}", host(&names.query), QUERY_HTTP_PORT),
    }
}

/// Hex SHA-256 of `text`, first 16 characters.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

/// Builds every child of a pipeline.
///
/// # Errors
/// [`Error::InvalidSpec`] when [`validate`] fails, [`Error::MissingField`] when the object has no uid or
/// namespace, [`Error::Build`] on a builder bug.
pub fn desired(tp: &TracingPipeline, defaults: &Defaults) -> Result<Desired> {
    let Validated { config_yaml, scylla } = validate(tp).map_err(Error::InvalidSpec)?;
    let b = Builder::new(tp, defaults, &config_yaml)?;
    let workloads = match scylla {
        Some(target) => Workloads::Scylla {
            collector: Box::new(b.collector_deployment(&target)?),
            query: Box::new(b.query_deployment(&target)?),
            pdb: Box::new(b.pdb()?),
            hpa: b.hpa()?.map(Box::new),
            target,
        },
        None => Workloads::Embedded { stateful_set: Box::new(b.stateful_set()?) },
    };
    Ok(Desired {
        config_map: b.config_map(&config_yaml)?,
        service_account: b
            .typed("ServiceAccount", json!({"metadata": b.meta(&b.names.service_account, "collector")}))?,
        collector_service: b.collector_service()?,
        headless_service: b.headless_service()?,
        query_service: b.query_service()?,
        names: b.names.clone(),
        config_hash: b.config_hash.clone(),
        workloads,
    })
}

/// Shared state of the builders for one pipeline.
struct Builder<'a> {
    tp: &'a TracingPipeline,
    defaults: &'a Defaults,
    names: Names,
    namespace: String,
    owner: OwnerReference,
    config_hash: String,
    embedded: bool,
}

impl<'a> Builder<'a> {
    fn new(tp: &'a TracingPipeline, defaults: &'a Defaults, config_yaml: &str) -> Result<Self> {
        let owner = tp.controller_owner_ref(&()).ok_or(Error::MissingField("metadata.uid"))?;
        let namespace = tp.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
        Ok(Self {
            names: Names::new(&tp.name_any()),
            tp,
            defaults,
            namespace,
            owner,
            config_hash: hash(config_yaml),
            embedded: tp.spec.storage.scylla.is_none(),
        })
    }

    fn typed<T: DeserializeOwned>(&self, kind: &'static str, mut value: Value) -> Result<T> {
        if let Some(obj) = value.as_object_mut() {
            obj.entry("apiVersion").or_insert_with(|| json!(api_version(kind)));
            obj.entry("kind").or_insert_with(|| json!(kind));
        }
        serde_json::from_value(value).map_err(|e| Error::Build { kind, message: e.to_string() })
    }

    /// `app.kubernetes.io/*` labels of a component.
    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector(component);
        l.insert("app.kubernetes.io/managed-by".into(), crate::FIELD_MANAGER.into());
        l.insert("app.kubernetes.io/part-of".into(), "skein".into());
        l.insert("app.kubernetes.io/version".into(), env!("CARGO_PKG_VERSION").into());
        l
    }

    /// The labels a component's selector matches (never changed after creation).
    fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "skein".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.tp.name_any()),
            ("app.kubernetes.io/component".to_string(), component.to_string()),
        ])
    }

    fn meta(&self, name: &str, component: &str) -> Value {
        json!({
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [self.owner],
        })
    }

    /// The component serving queries: `query`, or the all-in-one pod (`collector`) with embedded storage.
    fn query_component(&self) -> &'static str {
        if self.embedded { "collector" } else { "query" }
    }

    fn config_map(&self, yaml: &str) -> Result<ConfigMap> {
        let mut meta = self.meta(&self.names.config, "collector");
        meta["annotations"] = json!({ CONFIG_HASH_ANNOTATION: self.config_hash });
        self.typed("ConfigMap", json!({"metadata": meta, "data": {CONFIG_KEY: yaml}}))
    }

    fn collector_service(&self) -> Result<Service> {
        let ports = json!([
            {"name": "otlp-grpc", "port": OTLP_GRPC_PORT, "targetPort": "otlp-grpc", "appProtocol": "grpc"},
            {"name": "otlp-http", "port": OTLP_HTTP_PORT, "targetPort": "otlp-http"},
            {"name": "zipkin", "port": ZIPKIN_PORT, "targetPort": "zipkin"},
            {"name": "sampling-http", "port": SAMPLING_HTTP_PORT, "targetPort": "sampling-http"},
            {"name": "sampling-grpc", "port": SAMPLING_GRPC_PORT, "targetPort": "sampling-grpc", "appProtocol": "grpc"},
        ]);
        self.typed(
            "Service",
            json!({
                "metadata": self.meta(&self.names.collector, "collector"),
                "spec": {"type": "ClusterIP", "selector": self.selector("collector"), "ports": ports},
            }),
        )
    }

    fn headless_service(&self) -> Result<Service> {
        self.typed(
            "Service",
            json!({
                "metadata": self.meta(&self.names.headless, "collector"),
                "spec": {
                    "clusterIP": "None",
                    "selector": self.selector("collector"),
                    "ports": [{"name": "otlp-grpc", "port": OTLP_GRPC_PORT, "targetPort": "otlp-grpc", "appProtocol": "grpc"}],
                },
            }),
        )
    }

    fn query_service(&self) -> Result<Service> {
        self.typed(
            "Service",
            json!({
                "metadata": self.meta(&self.names.query, "query"),
                "spec": {
                    "type": self.tp.spec.query.service_type.as_str(),
                    "selector": self.selector(self.query_component()),
                    "ports": [
                        {"name": "http-query", "port": QUERY_HTTP_PORT, "targetPort": "http-query"},
                        {"name": "grpc-query", "port": QUERY_GRPC_PORT, "targetPort": "grpc-query", "appProtocol": "grpc"},
                    ],
                },
            }),
        )
    }

    fn pdb(&self) -> Result<PodDisruptionBudget> {
        self.typed(
            "PodDisruptionBudget",
            json!({
                "metadata": self.meta(&self.names.collector, "collector"),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.selector("collector")}},
            }),
        )
    }

    fn hpa(&self) -> Result<Option<HorizontalPodAutoscaler>> {
        let Some(a) = &self.tp.spec.collector.autoscaling else { return Ok(None) };
        self.typed(
            "HorizontalPodAutoscaler",
            json!({
                "metadata": self.meta(&self.names.collector, "collector"),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.names.collector},
                    "minReplicas": a.min_replicas,
                    "maxReplicas": a.max_replicas,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization_percentage},
                    }}],
                },
            }),
        )
        .map(Some)
    }

    fn retention_args(&self) -> Vec<String> {
        let r = &self.tp.spec.retention;
        let mut args =
            vec![format!("--retention={}", r.traces), format!("--retention-important={}", r.important_traces)];
        if let Some(l) = r.important_latency {
            args.push(format!("--important-latency={l}"));
        }
        args
    }

    fn scylla_args(&self, t: &ScyllaTarget) -> Vec<String> {
        let s = self.tp.spec.storage.scylla.as_ref();
        let mut args = vec![
            "--storage=scylla".to_string(),
            format!("--scylla-nodes={}", t.contact_points.join(",")),
            format!("--scylla-keyspace={}", t.schema.keyspace),
            format!(
                "--scylla-consistency={}",
                s.and_then(|s| s.consistency.clone()).unwrap_or_else(|| "LOCAL_QUORUM".into())
            ),
            // The operator creates and migrates the schema; pods never issue DDL.
            "--scylla-skip-schema".to_string(),
        ];
        if let Some(dc) = &t.local_datacenter {
            args.push(format!("--scylla-local-dc={dc}"));
        }
        if t.credentials_secret.is_some() {
            args.push(format!("--scylla-password-file={PASSWORD_DIR}/password"));
        }
        args.extend(self.retention_args());
        args
    }

    fn collector_ports(&self) -> Value {
        json!([
            {"name": "otlp-grpc", "containerPort": OTLP_GRPC_PORT},
            {"name": "otlp-http", "containerPort": OTLP_HTTP_PORT},
            {"name": "zipkin", "containerPort": ZIPKIN_PORT},
            {"name": "sampling-http", "containerPort": SAMPLING_HTTP_PORT},
            {"name": "sampling-grpc", "containerPort": SAMPLING_GRPC_PORT},
            {"name": "admin", "containerPort": COLLECTOR_ADMIN_PORT},
        ])
    }

    fn credentials_env(&self, t: &ScyllaTarget) -> Value {
        match &t.credentials_secret {
            Some(secret) => {
                json!([{"name": "SKEIN_SCYLLA_USERNAME", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}])
            }
            None => json!([]),
        }
    }

    /// The query service's `--query-auth-token-file` with its Secret volume and mount, when
    /// `spec.query.authTokenSecretRef` is set.
    fn query_auth(&self) -> Option<(String, Value, Value)> {
        let secret = self.tp.spec.query.auth_token_secret_ref.as_ref()?;
        Some((
            format!("--query-auth-token-file={QUERY_AUTH_DIR}/tokens"),
            json!({"name": "query-auth", "secret": {"secretName": secret.name, "items": [{"key": "tokens", "path": "tokens"}]}}),
            json!({"name": "query-auth", "mountPath": QUERY_AUTH_DIR, "readOnly": true}),
        ))
    }

    /// The OTLP receiver's TLS flags with the Secret's volume and mount, when `spec.tls` is set.
    fn collector_tls(&self) -> Option<(Vec<String>, Value, Value)> {
        let tls = self.tp.spec.tls.as_ref()?;
        let mut flags =
            vec![format!("--otlp-tls-cert-file={TLS_DIR}/tls.crt"), format!("--otlp-tls-key-file={TLS_DIR}/tls.key")];
        if tls.client_auth {
            flags.push(format!("--otlp-tls-client-ca-file={TLS_DIR}/ca.crt"));
        }
        Some((
            flags,
            json!({"name": "otlp-tls", "secret": {"secretName": tls.secret_ref.name}}),
            json!({"name": "otlp-tls", "mountPath": TLS_DIR, "readOnly": true}),
        ))
    }

    fn credentials_volume(&self, t: &ScyllaTarget) -> (Vec<Value>, Vec<Value>) {
        match &t.credentials_secret {
            Some(secret) => (
                vec![
                    json!({"name": "scylla-credentials", "secret": {"secretName": secret, "items": [{"key": "password", "path": "password"}]}}),
                ],
                vec![json!({"name": "scylla-credentials", "mountPath": PASSWORD_DIR, "readOnly": true})],
            ),
            None => (vec![], vec![]),
        }
    }

    fn collector_deployment(&self, t: &ScyllaTarget) -> Result<Deployment> {
        let c = &self.tp.spec.collector;
        let mut args = self.scylla_args(t);
        args.push(format!("--config={CONFIG_DIR}/{CONFIG_KEY}"));
        args.push(format!("--wal-dir={WAL_DIR}"));
        args.push("--log-format=json".into());
        let (mut volumes, mut mounts) = self.credentials_volume(t);
        volumes.push(json!({"name": "config", "configMap": {"name": self.names.config}}));
        volumes.push(json!({"name": "wal", "emptyDir": {}}));
        mounts.push(json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}));
        mounts.push(json!({"name": "wal", "mountPath": WAL_DIR}));
        if let Some((flags, volume, mount)) = self.collector_tls() {
            args.extend(flags);
            volumes.push(volume);
            mounts.push(mount);
        }
        let container = container(
            "collector",
            &Self::image(&c.image, &self.defaults.collector_image),
            "skein-collector",
            args,
            self.collector_ports(),
            self.credentials_env(t),
            mounts,
            c.resources.clone().unwrap_or_else(|| resources("250m", "256Mi", "1Gi")),
        );
        let mut spec = json!({
            "selector": {"matchLabels": self.selector("collector")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": self.pod_template("collector", container, volumes, true),
        });
        // With autoscaling the HPA owns `replicas`; leaving it out of the apply keeps the operator from fighting it.
        if c.autoscaling.is_none() {
            spec["replicas"] = json!(c.replicas.unwrap_or(2));
        }
        self.typed("Deployment", json!({"metadata": self.meta(&self.names.collector, "collector"), "spec": spec}))
    }

    fn query_deployment(&self, t: &ScyllaTarget) -> Result<Deployment> {
        let q = &self.tp.spec.query;
        let mut args = self.scylla_args(t);
        args.push("--log-format=json".into());
        let (mut volumes, mut mounts) = self.credentials_volume(t);
        if let Some((flag, volume, mount)) = self.query_auth() {
            args.push(flag);
            volumes.push(volume);
            mounts.push(mount);
        }
        let ports = json!([
            {"name": "http-query", "containerPort": QUERY_HTTP_PORT},
            {"name": "grpc-query", "containerPort": QUERY_GRPC_PORT},
            {"name": "admin", "containerPort": QUERY_ADMIN_PORT},
        ]);
        let container = container(
            "query",
            &Self::image(&q.image, &self.defaults.query_image),
            "skein-query",
            args,
            ports,
            self.credentials_env(t),
            mounts,
            q.resources.clone().unwrap_or_else(|| resources("100m", "128Mi", "512Mi")),
        );
        self.typed(
            "Deployment",
            json!({
                "metadata": self.meta(&self.names.query, "query"),
                "spec": {
                    "replicas": q.replicas.unwrap_or(1),
                    "selector": {"matchLabels": self.selector("query")},
                    "template": self.pod_template("query", container, volumes, false),
                },
            }),
        )
    }

    fn stateful_set(&self) -> Result<StatefulSet> {
        let c = &self.tp.spec.collector;
        let e = self.tp.spec.storage.embedded.clone().unwrap_or_default();
        let mut args = vec![
            "--storage=embedded".to_string(),
            format!("--data-dir={DATA_DIR}"),
            format!("--config={CONFIG_DIR}/{CONFIG_KEY}"),
            "--log-format=json".into(),
        ];
        args.extend(self.retention_args());
        let mut ports = self.collector_ports();
        if let Some(p) = ports.as_array_mut() {
            p.push(json!({"name": "http-query", "containerPort": QUERY_HTTP_PORT}));
            p.push(json!({"name": "grpc-query", "containerPort": QUERY_GRPC_PORT}));
        }
        let mut mounts = vec![
            json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
            json!({"name": "data", "mountPath": DATA_DIR}),
        ];
        let mut volumes = vec![json!({"name": "config", "configMap": {"name": self.names.config}})];
        if let Some((flags, volume, mount)) = self.collector_tls() {
            args.extend(flags);
            volumes.push(volume);
            mounts.push(mount);
        }
        if let Some((flag, volume, mount)) = self.query_auth() {
            args.push(flag);
            volumes.push(volume);
            mounts.push(mount);
        }
        let container = container(
            "all-in-one",
            &Self::image(&c.image, &self.defaults.all_in_one_image),
            "skein-all-in-one",
            args,
            ports,
            json!([]),
            mounts,
            c.resources.clone().unwrap_or_else(|| resources("250m", "256Mi", "1Gi")),
        );
        let mut claim = json!({
            "metadata": {"name": "data", "labels": self.selector("collector")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": e.size}}},
        });
        if let Some(class) = &e.storage_class_name {
            claim["spec"]["storageClassName"] = json!(class);
        }
        let when_deleted = if e.retain_on_delete { "Retain" } else { "Delete" };
        self.typed(
            "StatefulSet",
            json!({
                "metadata": self.meta(&self.names.collector, "collector"),
                "spec": {
                    "replicas": 1,
                    "serviceName": self.names.headless,
                    "selector": {"matchLabels": self.selector("collector")},
                    "template": self.pod_template("collector", container, volumes, true),
                    "volumeClaimTemplates": [claim],
                    "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": "Retain"},
                },
            }),
        )
    }

    fn image(image: &Option<String>, default: &str) -> String {
        image.clone().unwrap_or_else(|| default.to_string())
    }

    fn pod_template(&self, component: &str, mut container: Value, mut volumes: Vec<Value>, placed: bool) -> Value {
        let c = &self.tp.spec.collector;
        // The root filesystem is read-only; give the process a scratch /tmp.
        volumes.push(json!({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}));
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": "tmp", "mountPath": "/tmp"}));
        }
        let mut spec = json!({
            "serviceAccountName": self.names.service_account,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": RUN_AS_USER,
                "runAsGroup": RUN_AS_USER,
                "fsGroup": RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            // Collectors drain held traces on SIGTERM (`--shutdown-timeout`, 30 s).
            "terminationGracePeriodSeconds": 45,
            "containers": [container],
            "volumes": volumes,
        });
        if placed {
            if !c.node_selector.is_empty() {
                spec["nodeSelector"] = json!(c.node_selector);
            }
            if !c.tolerations.is_empty() {
                spec["tolerations"] = json!(c.tolerations);
            }
        }
        json!({
            "metadata": {
                "labels": self.labels(component),
                "annotations": {CONFIG_HASH_ANNOTATION: self.config_hash},
            },
            "spec": spec,
        })
    }
}

/// A hardened container: non-root, read-only root filesystem, no capabilities, HTTP probes on the admin port.
#[allow(clippy::too_many_arguments)]
fn container(
    name: &str,
    image: &str,
    command: &str,
    args: Vec<String>,
    ports: Value,
    env: Value,
    mounts: Vec<Value>,
    resources: ResourceRequirements,
) -> Value {
    json!({
        "name": name,
        "image": image,
        "command": [command],
        "args": args,
        "ports": ports,
        "env": env,
        "volumeMounts": mounts,
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10, "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5},
    })
}

fn resources(cpu: &str, memory_request: &str, memory_limit: &str) -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu.into())),
            ("memory".into(), Quantity(memory_request.into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity(memory_limit.into()))])),
        ..Default::default()
    }
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" => "apps/v1",
        "PodDisruptionBudget" => "policy/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        _ => "v1",
    }
}

#[cfg(test)]
mod tests;
