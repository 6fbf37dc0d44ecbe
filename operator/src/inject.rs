//! Sidecar injection as a pure function: a Pod (as the API server sent it to the webhook), the namespace and the
//! known pipelines in, a decision and an RFC 6902 JSON Patch out ([`inject`]).
//!
//! Rules (the webhook's contract with users), the OpenTelemetry Operator's `sidecar.opentelemetry.io/inject`
//! convention with Skein's key:
//! - the annotation `skein.dev/inject` asks for injection, on a pod (template) or on its namespace; its value names
//!   the pipeline: `<name>` (in the annotated object's namespace), `<namespace>/<name>` (any namespace), `"true"`
//!   (pick automatically), or `"false"` (opt out). The namespace label `skein.dev/injection: enabled` asks for
//!   automatic choice for every pod in the namespace;
//! - precedence, most specific first: the pod's annotation, then the namespace's annotation, then the namespace
//!   label. So `kubectl annotate namespace shop skein.dev/inject=tracing/dev` sends every new pod in `shop` to the
//!   pipeline `dev` in namespace `tracing`, and one pod can still name another pipeline or opt out;
//! - automatic choice is the namespace annotation's pipeline when it names one, else the pod namespace's only
//!   pipeline; anything else (none, several, not found, not accepted yet) is a skip with a reason that says what
//!   to run;
//! - a skip never blocks the pod: the patch only adds `skein.dev/injection-status: "skipped: <reason>"`;
//! - an injected pod carries `skein.dev/injected: "<pipeline>@<agent-config-hash>"` and the labels
//!   `skein.dev/pipeline` / `skein.dev/pipeline-namespace` (so the operator can count and roll them), and is never
//!   patched twice;
//! - the agent is a native sidecar (an init container with `restartPolicy: Always`, Kubernetes ≥ 1.29) or a regular
//!   container; app containers get the OpenTelemetry SDK environment only where the user has not set it; the agent
//!   reaches the collectors by their fully qualified Service name, so any namespace works.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::TracingPipeline;
use crate::resources::{self, Defaults, Names};

/// Namespace label that turns injection on for every pod in the namespace (value `enabled`).
pub const NAMESPACE_LABEL: &str = "skein.dev/injection";
/// Pod or namespace annotation naming the pipeline (`<name>`, `<namespace>/<name>` or `true`), or `false` to opt
/// out; a pod's annotation wins over its namespace's.
pub const INJECT_ANNOTATION: &str = "skein.dev/inject";
/// Set on injected pods: `<pipeline>@<agent-config-hash>`.
pub const INJECTED_ANNOTATION: &str = "skein.dev/injected";
/// Set on pods that asked for injection and did not get it: `skipped: <reason>`.
pub const STATUS_ANNOTATION: &str = "skein.dev/injection-status";
/// Label on injected pods: the pipeline's name.
pub const PIPELINE_LABEL: &str = "skein.dev/pipeline";
/// Label on injected pods: the pipeline's namespace.
pub const PIPELINE_NAMESPACE_LABEL: &str = "skein.dev/pipeline-namespace";
/// Pod-template annotation the operator bumps to roll workloads onto a new agent configuration.
pub const ROLLOUT_ANNOTATION: &str = "skein.dev/agent-config-hash";
/// Name of the agent container.
pub const AGENT_CONTAINER: &str = "skein-agent";
/// Name of the agent's spill volume (`emptyDir`).
pub const SPILL_VOLUME: &str = "skein-agent-spill";
/// Name of the agent's TLS volume (the Secret named by `spec.tls`, in the pod's namespace).
pub const AGENT_TLS_VOLUME: &str = "skein-agent-tls";
/// Where the TLS volume is mounted in the agent.
pub const AGENT_TLS_DIR: &str = "/etc/skein/agent-tls";
/// Where the spill volume is mounted in the agent.
pub const SPILL_DIR: &str = "/var/lib/skein-agent/spill";
/// The agent's admin port (`/healthz`, `/metrics`).
pub const AGENT_ADMIN_PORT: i32 = 14271;
/// The agent's remote-sampling port (Jaeger `/sampling?service=`).
pub const AGENT_SAMPLING_PORT: i32 = 5778;
/// Agent memory buffer when the pipeline sets none, bytes (the agent's own default).
pub const DEFAULT_MEMORY_BUFFER_BYTES: i64 = 4 * 1024 * 1024;
/// Agent spill budget when the pipeline sets none, bytes (the agent's own default).
pub const DEFAULT_SPILL_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Room above the spill budget in the `emptyDir` `sizeLimit`, bytes: the kubelet evicts a pod whose volume
/// exceeds its limit, and the agent's budget counts segment payloads, not file-system overhead.
pub const SPILL_HEADROOM_BYTES: i64 = 32 * 1024 * 1024;

/// How the agent is added to pods (`--sidecar-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SidecarMode {
    /// Native on Kubernetes ≥ 1.29, else a regular container.
    Auto,
    /// Always an init container with `restartPolicy: Always`.
    Native,
    /// Always a regular container.
    Container,
}

impl SidecarMode {
    /// Whether to inject a native sidecar on a server of `major.minor`.
    pub fn native(self, major: u32, minor: u32) -> bool {
        match self {
            Self::Native => true,
            Self::Container => false,
            Self::Auto => (major, minor) >= (1, 29),
        }
    }
}

/// Parses the API server's `/version` `major`/`minor` (some distributions append `+`, e.g. `"29+"`).
pub fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok();
    Some((digits(major)?, digits(minor)?))
}

/// What the webhook knows when a pod arrives.
pub struct Env<'a> {
    /// The pod's namespace (from the admission request; pods created by controllers often have none set yet).
    pub namespace: &'a str,
    /// Labels of that namespace.
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// Annotations of that namespace (`skein.dev/inject`).
    pub namespace_annotations: &'a BTreeMap<String, String>,
    /// Every pipeline the operator watches (any namespace).
    pub pipelines: &'a [Arc<TracingPipeline>],
    /// Operator-wide defaults (agent image).
    pub defaults: &'a Defaults,
    /// Native sidecar (init container, `restartPolicy: Always`) or regular container.
    pub native_sidecar: bool,
}

/// The pipeline a pod was matched with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for PipelineRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The webhook's decision for one pod.
#[derive(Debug)]
pub enum Decision {
    /// Injection was not asked for (or the pod opted out): admit unchanged.
    NotRequested,
    /// The pod already has the agent: admit unchanged.
    AlreadyInjected,
    /// Admit with the agent.
    Inject {
        /// The pipeline.
        pipeline: PipelineRef,
        /// Hash of the agent configuration (container and spill volume) the pod gets.
        hash: String,
        /// Adds the agent, its volume, the app environment, the annotation and labels.
        patch: json_patch::Patch,
    },
    /// Injection was asked for but cannot happen: admit with only the status annotation, and warn.
    Skip {
        /// Why, for the annotation and the Event.
        reason: String,
        /// The pipeline that was found but cannot take agents now (not ready, being deleted); `None` when no
        /// single pipeline matched.
        pipeline: Option<PipelineRef>,
        /// Adds `skein.dev/injection-status: "skipped: <reason>"`.
        patch: json_patch::Patch,
    },
}

/// The injection patch could not be built (a pod that does not round-trip through the Pod type).
#[derive(Debug, thiserror::Error)]
#[error("building the injection patch: {0}")]
pub struct InjectError(String);

/// Decides what happens to `pod` and builds the patch.
///
/// # Errors
/// [`InjectError`] when the pod or the agent container cannot be serialized (not expected from API-server input).
pub fn inject(pod: &Pod, env: &Env<'_>) -> Result<Decision, InjectError> {
    let asked = match requested(pod, env) {
        Request::No => return Ok(Decision::NotRequested),
        Request::Done => return Ok(Decision::AlreadyInjected),
        Request::Asked(asked) => asked,
    };
    let tp = match choose(asked, env) {
        Ok(tp) => tp,
        Err((reason, pipeline)) => return skip(pod, reason, pipeline),
    };
    let pipeline = PipelineRef { namespace: tp.namespace().unwrap_or_default(), name: tp.name_any() };
    let agent = Agent::new(tp, env.defaults)?;
    let mut after = pod.clone();
    agent.apply(&mut after, env);
    let shown = if pipeline.namespace == env.namespace { pipeline.name.clone() } else { pipeline.to_string() };
    after.annotations_mut().insert(INJECTED_ANNOTATION.into(), format!("{shown}@{}", agent.hash));
    // Label values stop at 63 characters; a longer pipeline name (its Services could not exist either) must not
    // make the API server refuse the pod, so such a pod is injected but not counted.
    if pipeline.name.len() <= 63 {
        after.labels_mut().insert(PIPELINE_LABEL.into(), pipeline.name.clone());
        after.labels_mut().insert(PIPELINE_NAMESPACE_LABEL.into(), pipeline.namespace.clone());
    }
    // Everything but the agent container is an addition at the end of a list or a new key, which `diff` turns into
    // plain `add` operations. The agent is inserted by an explicit `add` at its index: a diff would rewrite the
    // shifted init containers field by field, and keep fields of the pod's own JSON that the Pod type does not
    // know (a newer server's) on the wrong container.
    let mut patch = diff(pod, &after)?;
    patch.0.push(agent.insert_op(pod, env.native_sidecar)?);
    Ok(Decision::Inject { patch, hash: agent.hash, pipeline })
}

/// The answer when the webhook cannot decide (its caches are not filled yet): a pod that asked for injection is
/// skipped with `reason`, any other is left alone.
///
/// # Errors
/// [`InjectError`] when the pod cannot be serialized.
pub fn skip_if_requested(pod: &Pod, env: &Env<'_>, reason: &str) -> Result<Decision, InjectError> {
    match requested(pod, env) {
        Request::No => Ok(Decision::NotRequested),
        Request::Done => Ok(Decision::AlreadyInjected),
        Request::Asked(_) => skip(pod, reason.to_string(), None),
    }
}

enum Request<'a> {
    /// Not asked for, or opted out.
    No,
    /// Asked for, and the pod already has the agent.
    Done,
    /// Asked for: the pipeline named, if any.
    Asked(Option<Named<'a>>),
}

/// A pipeline named by an annotation, with the namespace a bare `<name>` is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named<'a> {
    /// The annotation's value: `<name>` or `<namespace>/<name>`.
    pub value: &'a str,
    /// The annotated object's namespace.
    pub relative_to: &'a str,
    /// Where the name came from, for messages: `pod` or `namespace`.
    pub source: &'static str,
}

impl Named<'_> {
    /// The pipeline this names.
    pub fn target(&self) -> PipelineRef {
        let (namespace, name) = self.value.split_once('/').unwrap_or((self.relative_to, self.value));
        PipelineRef { namespace: namespace.trim().into(), name: name.trim().into() }
    }
}

/// Whether a pod with `pod_annotations`, in a namespace with these labels and annotations, asks for injection,
/// and which pipeline it names ([`Named`]; `Some(None)` = automatic choice). `None`: not asked for or opted out.
/// Pod annotation first, then the namespace annotation, then the namespace label.
pub fn asked_for<'a>(
    pod_annotations: &'a BTreeMap<String, String>,
    namespace: &'a str,
    namespace_labels: &BTreeMap<String, String>,
    namespace_annotations: &'a BTreeMap<String, String>,
) -> Option<Option<Named<'a>>> {
    let from_namespace = match namespace_annotations.get(INJECT_ANNOTATION).map(|v| v.trim()) {
        // A namespace that opted out still lets a pod ask by its own annotation.
        Some("false") => None,
        Some("" | "true") => Some(None),
        Some(value) => Some(Some(Named { value, relative_to: namespace, source: "namespace" })),
        None if namespace_labels.get(NAMESPACE_LABEL).is_some_and(|v| v == "enabled") => Some(None),
        None => None,
    };
    match pod_annotations.get(INJECT_ANNOTATION).map(|v| v.trim()) {
        Some("false") => None,
        // "true" on the pod still follows the namespace's choice of pipeline.
        Some("" | "true") => Some(from_namespace.flatten()),
        Some(value) => Some(Some(Named { value, relative_to: namespace, source: "pod" })),
        None => from_namespace,
    }
}

fn requested<'p>(pod: &'p Pod, env: &'p Env<'_>) -> Request<'p> {
    let Some(asked) = asked_for(pod.annotations(), env.namespace, env.namespace_labels, env.namespace_annotations)
    else {
        return Request::No;
    };
    if pod.annotations().contains_key(INJECTED_ANNOTATION) || has_agent(pod) {
        return Request::Done;
    }
    Request::Asked(asked)
}

fn skip(pod: &Pod, reason: String, pipeline: Option<PipelineRef>) -> Result<Decision, InjectError> {
    let mut after = pod.clone();
    after.annotations_mut().insert(STATUS_ANNOTATION.into(), format!("skipped: {reason}"));
    Ok(Decision::Skip { patch: diff(pod, &after)?, reason, pipeline })
}

/// The agent-config hash a pod injected from `tp` today would carry (compared with pods' annotations to count
/// and roll stale sidecars).
///
/// # Errors
/// [`InjectError`] when the container cannot be serialized.
pub fn agent_hash(tp: &TracingPipeline, defaults: &Defaults) -> Result<String, InjectError> {
    Ok(Agent::new(tp, defaults)?.hash)
}

/// The hash part of a pod's `skein.dev/injected` annotation.
pub fn injected_hash(annotation: &str) -> Option<&str> {
    annotation.rsplit_once('@').map(|(_, h)| h)
}

fn has_agent(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let named = |c: &Container| c.name == AGENT_CONTAINER;
    spec.is_some_and(|s| s.containers.iter().any(named) || s.init_containers.iter().flatten().any(named))
}

fn diff(before: &Pod, after: &Pod) -> Result<json_patch::Patch, InjectError> {
    let to_value = |p: &Pod| serde_json::to_value(p).map_err(|e| InjectError(e.to_string()));
    Ok(json_patch::diff(&to_value(before)?, &to_value(after)?))
}

type Choice<'a> = Result<&'a TracingPipeline, (String, Option<PipelineRef>)>;

/// The pipeline a request resolves to, before any readiness check: the named one, else the pod namespace's only
/// one. The error is the skip reason, phrased as what to do.
///
/// # Errors
/// The reason no single pipeline matches.
pub fn resolve<'a>(asked: Option<Named<'_>>, namespace: &str, pipelines: &'a [Arc<TracingPipeline>]) -> Choice<'a> {
    if let Some(named) = asked {
        let wanted = named.target();
        let found = pipelines
            .iter()
            .find(|tp| tp.namespace().as_deref() == Some(wanted.namespace.as_str()) && tp.name_any() == wanted.name);
        return match found {
            Some(tp) => Ok(tp.as_ref()),
            None => Err((
                format!(
                    "TracingPipeline {wanted} not found (named by the {} annotation {INJECT_ANNOTATION}={:?})",
                    named.source, named.value
                ),
                None,
            )),
        };
    }
    let here: Vec<&TracingPipeline> =
        pipelines.iter().filter(|tp| tp.namespace().as_deref() == Some(namespace)).map(|tp| tp.as_ref()).collect();
    match here.as_slice() {
        [tp] => Ok(*tp),
        [] => {
            let elsewhere: Vec<String> = pipelines
                .iter()
                .map(|tp| format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any()))
                .collect();
            let hint = match elsewhere.as_slice() {
                [] => "create one, or".to_string(),
                [only] => format!(
                    "point the namespace at one: kubectl annotate namespace {namespace} {INJECT_ANNOTATION}={only}; or"
                ),
                _ => format!(
                    "point the namespace at one of {}: kubectl annotate namespace {namespace} {INJECT_ANNOTATION}=<namespace>/<name>; or",
                    elsewhere.join(", ")
                ),
            };
            Err((
                format!(
                    "no TracingPipeline in namespace {namespace}; {hint} name one in the pod's {INJECT_ANNOTATION} \
                     annotation"
                ),
                None,
            ))
        }
        several => {
            let mut names: Vec<String> = several.iter().map(|tp| tp.name_any()).collect();
            names.sort();
            Err((
                format!(
                    "{} TracingPipelines in namespace {namespace} ({}); name one with the {INJECT_ANNOTATION} \
                     annotation on the pod or the namespace",
                    several.len(),
                    names.join(", ")
                ),
                None,
            ))
        }
    }
}

/// The pipeline for a pod ([`resolve`]), if it can take agents now.
fn choose<'a>(asked: Option<Named<'_>>, env: &Env<'a>) -> Choice<'a> {
    let tp = resolve(asked, env.namespace, env.pipelines)?;
    let r = PipelineRef { namespace: tp.namespace().unwrap_or_default(), name: tp.name_any() };
    if tp.metadata.deletion_timestamp.is_some() {
        return Err((format!("TracingPipeline {r} is being deleted"), Some(r)));
    }
    if let Err(why) = ready_for_injection(tp) {
        return Err((format!("TracingPipeline {r} is not ready: {why}"), Some(r)));
    }
    Ok(tp)
}

/// A pipeline can take agents once the operator has accepted its spec and applied its objects
/// (`ConfigurationGenerated=True`). Collectors still starting do not stop injection: the agent buffers and spills
/// until they answer, and a pod created during a collector rollout would otherwise never be traced.
///
/// # Errors
/// Why not: never reconciled, or the spec was refused (the condition's message).
pub fn ready_for_injection(tp: &TracingPipeline) -> Result<(), String> {
    let conditions = tp.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == "ConfigurationGenerated") {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!("{}: {}", c.reason, c.message)),
        None => Err("the operator has not reconciled it yet".into()),
    }
}

/// The agent container and its volumes (spill, TLS) for a pipeline, and their hash.
struct Agent {
    container: Container,
    volumes: Vec<Volume>,
    remote_sampling: bool,
    hash: String,
}

impl Agent {
    fn new(tp: &TracingPipeline, defaults: &Defaults) -> Result<Self, InjectError> {
        let spec = &tp.spec;
        let ns = tp.namespace().unwrap_or_default();
        let names = Names::new(&tp.name_any());
        let endpoints = resources::endpoints(&names, &ns);
        let memory = spec.agent.memory_buffer_bytes.unwrap_or(DEFAULT_MEMORY_BUFFER_BYTES);
        let spill = spec.agent.spill_max_bytes.unwrap_or(DEFAULT_SPILL_MAX_BYTES);
        let mut args = vec![
            format!("--collector-dns={}", endpoints.collector_headless),
            format!("--sampling-upstream={}", endpoints.sampling),
            format!("--memory-max-bytes={memory}"),
            "--log-format=json".to_string(),
        ];
        if spill > 0 {
            args.push(format!("--spill-dir={SPILL_DIR}"));
            args.push(format!("--spill-max-bytes={spill}"));
        }
        if let Some(tls) = &spec.tls {
            args.push(format!("--collector-tls-ca={AGENT_TLS_DIR}/ca.crt"));
            if tls.client_auth {
                args.push(format!("--collector-tls-cert={AGENT_TLS_DIR}/tls.crt"));
                args.push(format!("--collector-tls-key={AGENT_TLS_DIR}/tls.key"));
            }
        }
        // The downward-API variables the agent reads to fill `k8s.*` resource attributes the SDK left out.
        let mut env: Vec<Value> = skein_agent::process::K8S_ENV
            .iter()
            .filter_map(|(name, _)| {
                let path = match *name {
                    "K8S_POD_NAME" => "metadata.name",
                    "K8S_NAMESPACE" => "metadata.namespace",
                    "K8S_NODE_NAME" => "spec.nodeName",
                    "K8S_POD_UID" => "metadata.uid",
                    "K8S_POD_IP" => "status.podIP",
                    // The agent's own container name would be wrong for the app's spans.
                    _ => return None,
                };
                Some(json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}))
            })
            .collect();
        if !spec.redaction.is_empty() {
            let config = skein_agent::config::AgentConfig { redaction: spec.redaction.clone(), head_sampling: None };
            let yaml = serde_yaml::to_string(&config).map_err(|e| InjectError(e.to_string()))?;
            env.push(json!({"name": "SKEIN_CONFIG_YAML", "value": yaml}));
        }
        // Default memory limit: the buffer twice over (encoded batches in flight) plus the process itself.
        let resources = match spec.agent.resources.as_ref().or(defaults.agent_resources.as_ref()) {
            Some(r) => serde_json::to_value(r).map_err(|e| InjectError(e.to_string()))?,
            None => json!({
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"memory": format!("{}Mi", 48 + (2 * memory + (1 << 20) - 1) / (1 << 20))},
            }),
        };
        let probe = |period: i32, failures: i32| json!({"httpGet": {"path": "/healthz", "port": AGENT_ADMIN_PORT}, "periodSeconds": period, "failureThreshold": failures});
        let mut container = json!({
            "name": AGENT_CONTAINER,
            "image": spec.agent.image.clone().unwrap_or_else(|| defaults.agent_image.clone()),
            "args": args,
            "env": env,
            "ports": [{"name": "skein-admin", "containerPort": AGENT_ADMIN_PORT}],
            "resources": resources,
            "startupProbe": probe(1, 30),
            "livenessProbe": probe(10, 3),
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": resources::RUN_AS_USER,
                "runAsGroup": resources::RUN_AS_USER,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        });
        let mut mounts = Vec::new();
        let mut volumes = Vec::new();
        if spill > 0 {
            mounts.push(json!({"name": SPILL_VOLUME, "mountPath": SPILL_DIR}));
            volumes.push(
                json!({"name": SPILL_VOLUME, "emptyDir": {"sizeLimit": (spill + SPILL_HEADROOM_BYTES).to_string()}}),
            );
        }
        if let Some(tls) = &spec.tls {
            let secret = tls.agent_secret_name.clone().unwrap_or_else(|| tls.secret_ref.name.clone());
            mounts.push(json!({"name": AGENT_TLS_VOLUME, "mountPath": AGENT_TLS_DIR, "readOnly": true}));
            // Optional: a Secret created after the pod still applies (the agent reads it at each connection),
            // and a missing one never keeps the app from starting.
            volumes.push(json!({"name": AGENT_TLS_VOLUME, "secret": {"secretName": secret, "optional": true}}));
        }
        if !mounts.is_empty() {
            container["volumeMounts"] = json!(mounts);
        }
        let remote_sampling = spec.sampling.head.is_some();
        // Everything a pipeline decides about an injected pod: the agent, its volume, and the app's sampler.
        // (Without TLS the text is what it always was, so upgrading the operator does not make pods stale.)
        let volumes_text = match volumes.as_slice() {
            [] => Value::Null.to_string(),
            [only] => only.to_string(),
            all => json!(all).to_string(),
        };
        let hash = resources::hash(&format!("{container}{volumes_text}{remote_sampling}"));
        let build = |e: serde_json::Error| InjectError(e.to_string());
        Ok(Self {
            container: serde_json::from_value(container).map_err(build)?,
            volumes: volumes.into_iter().map(serde_json::from_value).collect::<Result<_, _>>().map_err(build)?,
            remote_sampling,
            hash,
        })
    }

    /// Adds the agent's volume and the app environment to `pod` (the container itself: [`Agent::insert_op`]).
    fn apply(&self, pod: &mut Pod, env: &Env<'_>) {
        let service = service_name(pod);
        let owner = owner_attribute(pod);
        let spec = pod.spec.get_or_insert_with(Default::default);
        for c in &mut spec.containers {
            app_env(c, env.namespace, &service, owner.as_deref(), self.remote_sampling);
        }
        if !self.volumes.is_empty() {
            spec.volumes.get_or_insert_with(Vec::new).extend(self.volumes.iter().cloned());
        }
        let first_app = spec.containers.first().map(|c| c.name.clone());
        if !env.native_sidecar
            && let Some(first) = first_app
        {
            // `kubectl logs/exec` keep defaulting to the app, not the agent.
            pod.annotations_mut().entry("kubectl.kubernetes.io/default-container".into()).or_insert(first);
        }
    }

    /// The JSON Patch operation adding the agent: first init container (native sidecar, so that the app's own init
    /// containers can already send spans), or last container.
    fn insert_op(&self, pod: &Pod, native: bool) -> Result<json_patch::PatchOperation, InjectError> {
        use json_patch::jsonptr::PointerBuf;
        let mut container = self.container.clone();
        let (path, value) = if native {
            container.restart_policy = Some("Always".into());
            let value = serde_json::to_value(&container).map_err(|e| InjectError(e.to_string()))?;
            match pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()) {
                Some(_) => (PointerBuf::from_tokens(["spec", "initContainers", "0"]), value),
                None => (PointerBuf::from_tokens(["spec", "initContainers"]), Value::Array(vec![value])),
            }
        } else {
            let value = serde_json::to_value(&container).map_err(|e| InjectError(e.to_string()))?;
            (PointerBuf::from_tokens(["spec", "containers", "-"]), value)
        };
        Ok(json_patch::PatchOperation::Add(json_patch::AddOperation { path, value }))
    }
}

/// `OTEL_SERVICE_NAME` for a pod: `app.kubernetes.io/name`, else `app`, else the owning workload's name, else the
/// pod's (generate) name.
pub fn service_name(pod: &Pod) -> String {
    let labels = pod.labels();
    if let Some(n) = labels.get("app.kubernetes.io/name").or_else(|| labels.get("app")) {
        return n.clone();
    }
    if let Some((_, name)) = owner(pod) {
        return name;
    }
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) => g.trim_end_matches('-').to_string(),
        _ => "unknown_service".into(),
    }
}

/// The workload that controls a pod, as an admin names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `apps/v1`, `batch/v1`, …
    pub api_version: String,
    /// `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, or any other owner kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its UID, when the pod's owner reference gives it (a Deployment derived from its ReplicaSet has none).
    pub uid: Option<String>,
}

/// The workload that controls a pod (its controller owner reference, else the first): a ReplicaSet made by a
/// Deployment (named `<deployment>-<pod-template-hash>`) is reported as the Deployment.
pub fn workload(pod: &ObjectMeta) -> Option<Workload> {
    let refs = pod.owner_references.as_ref()?;
    let o = refs.iter().find(|o| o.controller == Some(true)).or_else(|| refs.first())?;
    let hash = pod.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
    if o.kind == "ReplicaSet"
        && let Some(deployment) = hash.and_then(|h| o.name.strip_suffix(&format!("-{h}")))
    {
        return Some(Workload {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: deployment.into(),
            uid: None,
        });
    }
    Some(Workload {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        uid: Some(o.uid.clone()),
    })
}

/// The pod's workload as (OpenTelemetry `k8s.*.name` kind, name), for the kinds the semantic conventions name.
fn owner(pod: &Pod) -> Option<(&'static str, String)> {
    let w = workload(&pod.metadata)?;
    let kind = match w.kind.as_str() {
        "Deployment" => "deployment",
        "ReplicaSet" => "replicaset",
        "StatefulSet" => "statefulset",
        "DaemonSet" => "daemonset",
        "Job" => "job",
        _ => return None,
    };
    Some((kind, w.name))
}

fn owner_attribute(pod: &Pod) -> Option<String> {
    owner(pod).map(|(kind, name)| format!("k8s.{kind}.name={name}"))
}

/// Downward-API variables the app's `OTEL_RESOURCE_ATTRIBUTES` refers to (the OpenTelemetry Operator's names).
const DOWNWARD: [(&str, &str); 3] = [
    ("OTEL_RESOURCE_ATTRIBUTES_POD_NAME", "metadata.name"),
    ("OTEL_RESOURCE_ATTRIBUTES_POD_UID", "metadata.uid"),
    ("OTEL_RESOURCE_ATTRIBUTES_NODE_NAME", "spec.nodeName"),
];

/// Adds the OpenTelemetry SDK environment to an app container, never overwriting a variable the user set.
fn app_env(c: &mut Container, namespace: &str, service: &str, owner: Option<&str>, remote_sampling: bool) {
    let env = c.env.get_or_insert_with(Vec::new);
    let set = |env: &Vec<EnvVar>, name: &str| env.iter().any(|e| e.name == name);
    let add = |env: &mut Vec<EnvVar>, name: &str, value: String| {
        if !set(env, name) {
            env.push(EnvVar { name: name.into(), value: Some(value), value_from: None });
        }
    };
    if !set(env, "OTEL_RESOURCE_ATTRIBUTES") {
        for (name, path) in DOWNWARD {
            if !set(env, name) {
                env.push(EnvVar {
                    name: name.into(),
                    value: None,
                    value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                        field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                            field_path: path.into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                });
            }
        }
        let mut attrs = vec![
            format!("k8s.namespace.name={namespace}"),
            "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)".into(),
            "k8s.pod.uid=$(OTEL_RESOURCE_ATTRIBUTES_POD_UID)".into(),
            "k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)".into(),
            format!("k8s.container.name={}", c.name),
        ];
        attrs.extend(owner.map(str::to_string));
        add(env, "OTEL_RESOURCE_ATTRIBUTES", attrs.join(","));
    }
    add(env, "OTEL_SERVICE_NAME", service.to_string());
    // The agent takes OTLP/gRPC on 4317 and OTLP/HTTP on 4318: follow a protocol the user chose.
    let http = env
        .iter()
        .find(|e| e.name == "OTEL_EXPORTER_OTLP_PROTOCOL")
        .and_then(|e| e.value.as_deref())
        .is_some_and(|p| p.starts_with("http"));
    let port = if http { resources::OTLP_HTTP_PORT } else { resources::OTLP_GRPC_PORT };
    add(env, "OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://localhost:{port}"));
    add(env, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into());
    add(env, "OTEL_PROPAGATORS", "tracecontext,baggage,b3".into());
    if remote_sampling && !set(env, "OTEL_TRACES_SAMPLER") {
        add(env, "OTEL_TRACES_SAMPLER", "parentbased_jaeger_remote".into());
        add(
            env,
            "OTEL_TRACES_SAMPLER_ARG",
            format!(
                "endpoint=http://localhost:{AGENT_SAMPLING_PORT},pollingIntervalMs=60000,initialSamplingRate=0.001"
            ),
        );
    }
}

#[cfg(test)]
mod tests;
