//! The `TracingPipeline` custom resource (`skein.dev/v1alpha1`, namespaced, short name `tp`).
//!
//! One object describes a whole tracing backend: collectors, query service, sampling, storage, retention and the
//! agent settings the injection webhook uses. Sampling and storage reuse the collector's own types
//! ([`CollectorConfig`]'s parts, [`Replication`]) and redaction the agent's ([`RedactionRule`]), so the CRD, the
//! collector's config file and the agent's config file cannot drift apart.
//!
//! ```yaml
//! apiVersion: skein.dev/v1alpha1
//! kind: TracingPipeline
//! metadata: {name: prod, namespace: tracing}
//! spec:
//!   collector: {replicas: 3, autoscaling: {minReplicas: 3, maxReplicas: 10, targetCPUUtilizationPercentage: 70}}
//!   sampling:
//!     tail:
//!       decision_wait: 10s
//!       policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]
//!   storage:
//!     scylla:
//!       contactPoints: ["scylla-client.scylla:9042"]
//!       credentialsSecretRef: {name: scylla-credentials}
//!       replication: {networkTopology: {datacenters: {dc1: 3}}}
//!       reclaimPolicy: Retain
//!   retention: {traces: 72h, importantTraces: 336h}
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use skein_agent::config::RedactionRule;
use skein_config::GoDuration;
use skein_config::scylla::Replication;
use skein_config::strategies::SamplingStrategies;
use skein_config::tail::TailSamplingConfig;

/// The desired tracing backend. Every part has defaults, so `spec: {}` is a working single-pod pipeline on the
/// embedded store.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "skein.dev",
    version = "v1alpha1",
    kind = "TracingPipeline",
    plural = "tracingpipelines",
    shortname = "tp",
    category = "skein",
    namespaced,
    status = "TracingPipelineStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"reason of the first condition that is not True (PipelineReady when all are)","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Collectors","type":"string","description":"ready/desired collector pods","jsonPath":".status.collectors"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","description":"namespaces whose pods are sent to this pipeline","jsonPath":".status.agents.namespaces"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","description":"pods running this pipeline's agent","jsonPath":".status.agents.injected"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","priority":1,"jsonPath":".status.storage"}"#,
    printcolumn = r#"{"name":"Sampling","type":"string","priority":1,"description":"head, tail, head+tail or none","jsonPath":".status.sampling"}"#,
    printcolumn = r#"{"name":"Stale","type":"integer","priority":1,"description":"injected pods on an older agent configuration","jsonPath":".status.agents.stale"}"#,
    printcolumn = r#"{"name":"Uninjected","type":"integer","priority":1,"description":"pods that asked for the agent and were created without it","jsonPath":".status.agents.uninjected"}"#
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.storage) || !has(self.storage.embedded) || !has(self.collector) || (!has(self.collector.autoscaling) && (!has(self.collector.replicas) || self.collector.replicas == 1))"
).message("embedded storage runs one all-in-one pod: set collector.replicas to 1 and no autoscaling, or use scylla storage"))]
#[serde(rename_all = "camelCase")]
pub struct TracingPipelineSpec {
    /// The collectors (OTLP ingest, tail sampling, storage writes).
    #[serde(default)]
    pub collector: CollectorSpec,
    /// The query service (Jaeger-compatible HTTP API and UI).
    #[serde(default)]
    pub query: QuerySpec,
    /// The sidecar agent the injection webhook adds to labelled pods.
    #[serde(default)]
    pub agent: AgentSpec,
    /// Head-sampling strategies and tail-sampling policies.
    #[serde(default)]
    pub sampling: SamplingSpec,
    /// Where traces are stored; default: embedded.
    #[serde(default)]
    pub storage: StorageSpec,
    /// How long traces are kept.
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Attribute redaction applied by the agents before spans leave the pod, in order; the first matching rule
    /// wins (the agent's `redaction` config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redaction: Vec<RedactionRule>,
    /// TLS from the injected agents to the collectors (OTLP gRPC), optionally mutual. Unset: plaintext inside
    /// the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Agent → collector TLS. Secrets use the `kubernetes.io/tls` layout plus `ca.crt`, as cert-manager writes them.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret in the pipeline's namespace with the collectors' certificate (`tls.crt`, `tls.key`; valid for
    /// `<name>-collector-headless.<namespace>.svc`, the name agents connect to) and the CA (`ca.crt`) that
    /// signs it and, with `clientAuth`, the agents' certificates. Collectors read it at start: restart them
    /// (`kubectl rollout restart`) after a renewal.
    pub secret_ref: SecretRef,
    /// Require every agent to present a client certificate signed by `ca.crt` (mutual TLS).
    #[serde(default)]
    pub client_auth: bool,
    /// Name of the Secret, in each injected pod's own namespace, holding `ca.crt` (and with `clientAuth` the
    /// agent's `tls.crt` and `tls.key`), e.g. a cert-manager Certificate from the same issuer (default:
    /// `secretRef.name`). Mounted optionally and read at each connection: until it exists the agent holds spans
    /// in its buffer (counted when dropped) and the app is never blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_secret_name: Option<String>,
}

/// Collector Deployment settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorSpec {
    /// Pods (default 2 with scylla storage; embedded storage always runs 1). Ignored with `autoscaling`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// Container image: with ScyllaDB storage a `skein-collector` image (default: the operator's
    /// `--collector-image`), with embedded storage a `skein-all-in-one` image (default: `--all-in-one-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits (default: requests 250m CPU / 256Mi, limit 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Horizontal autoscaling on CPU; replaces `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Node labels the pods must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A HorizontalPodAutoscaler for the collectors.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = kube::core::Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation to hold, percent of the CPU request (default 70).
    #[serde(default = "default_target_cpu", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_target_cpu() -> i32 {
    70
}

/// How the query Service is exposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Inside the cluster only.
    #[default]
    ClusterIP,
    /// On a port of every node.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes `spec.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Query Deployment settings (with embedded storage the all-in-one pod serves queries and only `serviceType`
/// applies).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySpec {
    /// Pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub replicas: Option<i32>,
    /// `skein-query` container image (default: the operator's `--query-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits (default: requests 100m CPU / 128Mi, limit 512Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Type of the `<name>-query` Service (default `ClusterIP`).
    #[serde(default)]
    pub service_type: ServiceType,
    /// A Secret in the pipeline's namespace whose key `tokens` lists the bearer tokens, one per line, that the
    /// query APIs (HTTP and gRPC) then require (`Authorization: Bearer <token>`; the query service's
    /// `--query-auth-token-file`). Edits to the Secret apply without a restart. Unset: the query APIs are open to
    /// anyone who can reach the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token_secret_ref: Option<SecretRef>,
}

/// Sidecar agent settings, read by the injection webhook.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Container image (default: the operator's `--agent-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits (default: the operator's `--agent-resources`, else requests 10m CPU /
    /// 16Mi and a memory limit of 48 MiB plus twice `memoryBufferBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// In-memory buffer before spilling to disk, bytes (the agent's `--memory-max-bytes`, default 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65536))]
    pub memory_buffer_bytes: Option<i64>,
    /// Disk spill budget, bytes (the agent's `--spill-max-bytes`, default 256 MiB); 0 turns spilling off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub spill_max_bytes: Option<i64>,
    /// Restart injected workloads when these settings change (otherwise new settings reach pods as they are
    /// recreated).
    #[serde(default)]
    pub rollout_on_change: bool,
}

/// Sampling: the collector's own configuration types, embedded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SamplingSpec {
    /// Head-sampling strategies served to SDKs on the Jaeger remote-sampling API (Jaeger's strategies file;
    /// absent: probabilistic 0.001 as in Jaeger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<SamplingStrategies>,
    /// Tail-sampling policies, the OpenTelemetry Collector's `tail_sampling` block with its field names (absent:
    /// every trace is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<TailSamplingConfig>,
}

/// Storage: exactly one of `embedded` or `scylla`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = kube::core::Rule::new("has(self.embedded) != has(self.scylla)")
    .message("set exactly one of storage.embedded or storage.scylla"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// One `skein-all-in-one` pod with a persistent volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStorage>,
    /// A ScyllaDB (or Cassandra) cluster; the operator creates the keyspace and tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scylla: Option<ScyllaStorage>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self { embedded: Some(EmbeddedStorage::default()), scylla: None }
    }
}

/// The embedded store's volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedStorage {
    /// PersistentVolumeClaim size (a Kubernetes quantity, default `10Gi`).
    #[serde(default = "default_volume_size")]
    pub size: String,
    /// StorageClass of the claim (default: the cluster's default class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Keep the PersistentVolumeClaim (and its traces) when the pipeline is deleted (default `true`, as a
    /// StatefulSet's claims are kept by default, and like `scylla.reclaimPolicy: Retain`): re-creating the
    /// pipeline finds its traces again. `false` deletes the claim with the pipeline (the StatefulSet's
    /// `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`, Kubernetes ≥ 1.27).
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

impl Default for EmbeddedStorage {
    fn default() -> Self {
        Self { size: default_volume_size(), storage_class_name: None, retain_on_delete: true }
    }
}

fn default_true() -> bool {
    true
}

fn default_volume_size() -> String {
    "10Gi".into()
}

/// What happens to the keyspace when the pipeline is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReclaimPolicy {
    /// Keep the keyspace and its traces.
    #[default]
    Retain,
    /// Drop the keyspace (a finalizer holds the pipeline until it is gone).
    Delete,
}

/// A ScyllaDB cluster.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScyllaStorage {
    /// Contact points, `host:port` (port default 9042).
    #[schemars(length(min = 1))]
    pub contact_points: Vec<String>,
    /// Datacenter the collectors prefer (`LOCAL_*` consistencies are relative to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_datacenter: Option<String>,
    /// A Secret in the pipeline's namespace with keys `username` and `password` (PasswordAuthenticator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Keyspace (default: `skein_<namespace>_<name>` with `-` as `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_]{0,47}$"))]
    pub keyspace: Option<String>,
    /// Keyspace replication (default `simple` with factor 1; use `networkTopology` in production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// Consistency of reads and writes (`ONE`, `QUORUM`, `LOCAL_QUORUM`, …; default `LOCAL_QUORUM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// `Retain` (default) keeps the keyspace when the pipeline is deleted; `Delete` drops it.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

/// A Secret in the pipeline's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
}

/// Retention tiers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// How long traces are kept (Go duration, default `72h`; the ScyllaDB tables' default TTL).
    #[serde(default = "default_retention")]
    pub traces: GoDuration,
    /// How long important traces (an error span, or a span slower than `importantLatency`) are kept (default
    /// `336h`).
    #[serde(default = "default_retention_important")]
    pub important_traces: GoDuration,
    /// Spans at least this long make their trace important (Go duration; unset: errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub important_latency: Option<GoDuration>,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self { traces: default_retention(), important_traces: default_retention_important(), important_latency: None }
    }
}

fn default_retention() -> GoDuration {
    GoDuration(72 * 3600 * 1_000_000_000)
}

fn default_retention_important() -> GoDuration {
    GoDuration(336 * 3600 * 1_000_000_000)
}

/// What the operator observed; written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ConfigurationGenerated`, `StorageReady`, `CollectorReady`, `QueryReady` and `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Collector pods, `ready/desired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collectors: Option<String>,
    /// `embedded` or `scylla`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Sampling in force: `head` (strategies served to SDKs and agents), `tail` (collector policies),
    /// `head+tail`, or `none` (every trace kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<String>,
    /// SHA-256 (hex, first 16 characters) of the rendered collector configuration, as on the pod templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The ScyllaDB keyspace and the schema version applied to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaStatus>,
    /// Where to send spans and queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Pods running this pipeline's agent (written by the operator's agent tracker, not the reconciler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsStatus>,
}

/// Injected agents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsStatus {
    /// Pods with this pipeline's agent.
    pub injected: i32,
    /// Of those, pods whose agent configuration is older than the pipeline's (`skein.dev/injected` hash differs).
    pub stale: i32,
    /// Pods that ask for this pipeline's agent (by their namespace or their own annotation) and run without it and
    /// without a skip reason: created while no operator replica answered the webhook. Restart their workloads.
    #[serde(default)]
    pub uninjected: i32,
    /// Namespaces whose pods are sent to this pipeline (by namespace annotation or label) or that run its agents.
    #[serde(default)]
    pub namespaces: i32,
    /// The agent-config hash a pod injected now gets.
    pub config_hash: String,
}

/// The schema the operator applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaStatus {
    /// Keyspace.
    pub keyspace: String,
    /// Newest migration applied.
    pub version: i32,
    /// The contact points it was applied through (a change makes the operator check again).
    #[serde(default)]
    pub contact_points: Vec<String>,
}

/// The pipeline's in-cluster endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// OTLP gRPC, `host:port`.
    pub otlp_grpc: String,
    /// OTLP HTTP, `http://host:port`.
    pub otlp_http: String,
    /// The headless Service agents resolve to route by trace ID, `host:port`.
    pub collector_headless: String,
    /// Jaeger remote sampling (HTTP `/sampling?service=`), `http://host:port`.
    #[serde(default)]
    pub sampling: String,
    /// The query API and UI, `http://host:port`.
    pub query: String,
}
