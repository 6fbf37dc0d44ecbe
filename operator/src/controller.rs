//! The `TracingPipeline` reconciler.
//!
//! Each reconcile, assuming nothing about why it ran: build the desired children ([`crate::resources::desired`]);
//! on an invalid spec report `ConfigurationGenerated=False` and change nothing; otherwise server-side apply every
//! child (field manager [`FIELD_MANAGER`], forced, owner reference to the pipeline), create or migrate the ScyllaDB
//! keyspace before any collector is rolled onto it, delete children the spec no longer asks for, and write the
//! status (conditions, `observedGeneration`, endpoints) with server-side apply too. An Event is published when a
//! condition's status, reason or message changes, one Event per distinct message ([`crate::events`]), so the newest
//! Event always says what is true now.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use skein_storage::scylla::SCHEMA_VERSION;
use tracing::{Instrument, field, info_span, instrument};

use crate::crd::{ReclaimPolicy, SchemaStatus, TracingPipeline, TracingPipelineStatus};
use crate::events::{Kind, Note, Recorder};
use crate::metrics::{Metrics, ResultLabels};
use crate::resources::{self, Defaults, ScyllaTarget, Workloads};
use crate::schema::{Credentials, SchemaError, SchemaManager};
use crate::{Error, FIELD_MANAGER, FINALIZER, Result};

/// Condition types, in the order they are reported.
pub const CONDITION_TYPES: [&str; 5] =
    ["ConfigurationGenerated", "StorageReady", "CollectorReady", "QueryReady", "Ready"];
/// Requeue after a healthy reconcile.
pub const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Requeue while a rollout is in progress (owned-object watches usually come first).
pub const REQUEUE_PROGRESSING: Duration = Duration::from_secs(30);
/// First retry delay after a failure; doubled per consecutive failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long reconciles in flight may finish after shutdown is asked for.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(1);

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Images and other operator-wide defaults.
    pub defaults: Defaults,
    /// Keyspace creation and removal.
    pub schema: Arc<dyn SchemaManager>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder (one Event per distinct message).
    pub recorder: Recorder,
    /// Consecutive failures per pipeline (`namespace/name`), for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(
        client: Client,
        defaults: Defaults,
        schema: Arc<dyn SchemaManager>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> Self {
        Self { recorder, client, defaults, schema, metrics, failures: Mutex::default() }
    }

    /// The next retry delay for `key`, counting this failure.
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        let delay = FIRST_BACKOFF.saturating_mul(1 << (*n).min(10)).min(MAX_BACKOFF);
        *n += 1;
        delay
    }

    fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn key(tp: &TracingPipeline) -> String {
    format!("{}/{}", tp.namespace().unwrap_or_default(), tp.name_any())
}

/// Brings the cluster to what `tp` asks for.
///
/// # Errors
/// Kubernetes API failures ([`Error::Kube`]) and builder bugs; storage failures and invalid specs are reported in
/// the status and retried without an error.
#[instrument(skip(tp, ctx), fields(name = %tp.name_any(), namespace = tp.namespace().unwrap_or_default(), outcome = field::Empty))]
pub async fn reconcile(tp: Arc<TracingPipeline>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&tp, &ctx).await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconciles.get_or_create(&ResultLabels { result: outcome }).inc();
    tracing::Span::current().record("outcome", outcome);
    result
}

/// Retries a failed reconcile with per-pipeline exponential backoff.
pub fn error_policy(tp: Arc<TracingPipeline>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(error.metric_label());
    let delay = ctx.backoff(&key(&tp));
    tracing::warn!(name = %tp.name_any(), error = %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(tp: &TracingPipeline, ctx: &Context) -> Result<Action> {
    let ns = tp.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let pipelines: Api<TracingPipeline> = Api::namespaced(ctx.client.clone(), &ns);
    if tp.meta().deletion_timestamp.is_some() {
        return finalize(tp, ctx, &pipelines).await;
    }
    let wants_finalizer = tp.spec.storage.scylla.as_ref().is_some_and(|s| s.reclaim_policy == ReclaimPolicy::Delete);
    let has_finalizer = tp.finalizers().iter().any(|f| f == FINALIZER);
    if wants_finalizer != has_finalizer {
        set_finalizer(tp, &pipelines, wants_finalizer).await?;
    }

    let old = tp.status.clone().unwrap_or_default();
    let mut status = TracingPipelineStatus {
        observed_generation: tp.meta().generation,
        storage: Some(if tp.spec.storage.scylla.is_some() { "scylla" } else { "embedded" }.into()),
        sampling: Some(sampling_mode(tp).into()),
        schema: old.schema.clone(),
        ..Default::default()
    };
    let desired = match resources::desired(tp, &ctx.defaults) {
        Ok(d) => d,
        Err(Error::InvalidSpec(invalid)) => {
            // Nothing is applied: the last good children keep running.
            ctx.metrics.error(invalid.reason);
            status.config_hash = old.config_hash.clone();
            status.collectors = old.collectors.clone();
            let msg = invalid.to_string();
            let conditions = [
                ("ConfigurationGenerated", false, invalid.reason, msg.as_str()),
                ("StorageReady", false, "ConfigurationInvalid", "waiting for a valid spec"),
                ("CollectorReady", false, "ConfigurationInvalid", "waiting for a valid spec"),
                ("QueryReady", false, "ConfigurationInvalid", "waiting for a valid spec"),
                ("Ready", false, invalid.reason, msg.as_str()),
            ];
            status.conditions = conditions_from(tp, &old, &conditions);
            write_status(tp, ctx, &pipelines, &old, status).await?;
            return Ok(Action::await_change());
        }
        Err(e) => return Err(e),
    };
    status.config_hash = Some(desired.config_hash.clone());
    status.endpoints = Some(resources::endpoints(&desired.names, &ns));

    apply(&ctx.client, &ns, &desired.config_map).await?;
    apply(&ctx.client, &ns, &desired.service_account).await?;
    apply(&ctx.client, &ns, &desired.collector_service).await?;
    apply(&ctx.client, &ns, &desired.headless_service).await?;
    apply(&ctx.client, &ns, &desired.query_service).await?;

    let (storage, collector, query, retry) = match &desired.workloads {
        Workloads::Embedded { stateful_set } => {
            // Leftovers of scylla storage, if the pipeline switched.
            let names = &desired.names;
            delete_if_owned::<Deployment>(ctx, tp, &ns, &names.collector).await?;
            delete_if_owned::<Deployment>(ctx, tp, &ns, &names.query).await?;
            delete_if_owned::<PodDisruptionBudget>(ctx, tp, &ns, &names.collector).await?;
            delete_if_owned::<HorizontalPodAutoscaler>(ctx, tp, &ns, &names.collector).await?;
            let applied = apply(&ctx.client, &ns, stateful_set.as_ref()).await?;
            let rollout = statefulset_rollout(&applied);
            status.collectors = Some(rollout.summary());
            let retain = tp.spec.storage.embedded.as_ref().is_none_or(|e| e.retain_on_delete);
            let storage = volume_condition(ctx, &ns, &format!("data-{}-0", desired.names.collector), retain).await?;
            (storage, rollout.condition(), rollout.condition(), None)
        }
        Workloads::Scylla { target, collector, query, pdb, hpa } => {
            delete_if_owned::<StatefulSet>(ctx, tp, &ns, &desired.names.collector).await?;
            match ensure_storage(ctx, tp, &ns, target, &old).await {
                Ok(schema) => {
                    status.schema = Some(schema.clone());
                    let storage =
                        ok("SchemaReady", format!("keyspace {} at schema version {}", schema.keyspace, schema.version));
                    let c = apply(&ctx.client, &ns, collector.as_ref()).await?;
                    let q = apply(&ctx.client, &ns, query.as_ref()).await?;
                    apply(&ctx.client, &ns, pdb.as_ref()).await?;
                    match hpa {
                        Some(h) => drop(apply(&ctx.client, &ns, h.as_ref()).await?),
                        None => {
                            delete_if_owned::<HorizontalPodAutoscaler>(ctx, tp, &ns, &desired.names.collector).await?
                        }
                    }
                    let (c, q) = (deployment_rollout(&c), deployment_rollout(&q));
                    status.collectors = Some(c.summary());
                    (storage, c.condition(), q.condition(), None)
                }
                Err(e) => {
                    // Collectors are not rolled onto a keyspace that is not there; running ones are left alone.
                    ctx.metrics.error(e.reason());
                    let wanted = collector.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    status.collectors = old.collectors.clone().or_else(|| Some(format!("0/{wanted}")));
                    let waiting = |what: &str| Cond {
                        ok: false,
                        reason: "StorageNotReady",
                        message: format!("{what} not rolled out until the keyspace is ready"),
                    };
                    let storage = Cond { ok: false, reason: e.reason(), message: e.to_string() };
                    (storage, waiting("collectors"), waiting("query"), Some(ctx.backoff(&key(tp))))
                }
            }
        }
    };
    let all_ready = storage.ok && collector.ok && query.ok;
    let first_problem = [&storage, &collector, &query].into_iter().find(|c| !c.ok);
    let ready = match first_problem {
        None => ok("PipelineReady", "collectors and query are serving".to_string()),
        Some(c) => Cond { ok: false, reason: c.reason, message: c.message.clone() },
    };
    let conditions = [
        ("ConfigurationGenerated", true, "ConfigurationValid", format!("config hash {}", desired.config_hash)),
        ("StorageReady", storage.ok, storage.reason, storage.message),
        ("CollectorReady", collector.ok, collector.reason, collector.message),
        ("QueryReady", query.ok, query.reason, query.message),
        ("Ready", ready.ok, ready.reason, ready.message),
    ];
    let conditions: Vec<_> = conditions.iter().map(|(t, s, r, m)| (*t, *s, *r, m.as_str())).collect();
    status.conditions = conditions_from(tp, &old, &conditions);
    write_status(tp, ctx, &pipelines, &old, status).await?;
    let delay = match retry {
        Some(delay) => delay,
        None => {
            ctx.succeeded(&key(tp));
            if all_ready { REQUEUE_READY } else { REQUEUE_PROGRESSING }
        }
    };
    Ok(Action::requeue(delay))
}

/// `status.sampling`: which sampling stages the pipeline runs.
pub fn sampling_mode(tp: &TracingPipeline) -> &'static str {
    match (tp.spec.sampling.head.is_some(), tp.spec.sampling.tail.is_some()) {
        (true, true) => "head+tail",
        (true, false) => "head",
        (false, true) => "tail",
        (false, false) => "none",
    }
}

/// `StorageReady` of an embedded pipeline: the phase of its PersistentVolumeClaim (made by the StatefulSet
/// controller from the claim template). `Pending` (or not created yet) is `VolumePending`, with the claim's latest
/// Event (e.g. `no persistent volumes available for this claim and no storage class is set`); `Lost` is
/// `VolumeLost`; `Bound` is `VolumeBound`, saying whether the claim outlives the pipeline.
///
/// # Errors
/// Kubernetes API failures (RBAC: `get` PersistentVolumeClaims, `list` Events).
async fn volume_condition(ctx: &Context, ns: &str, claim: &str, retain: bool) -> Result<Cond> {
    let pending = |message: String| Cond { ok: false, reason: "VolumePending", message };
    let Some(pvc) = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns).get_opt(claim).await? else {
        return Ok(pending(format!("PersistentVolumeClaim {claim} is not created yet")));
    };
    let status = pvc.status.as_ref();
    Ok(match status.and_then(|s| s.phase.as_deref()) {
        Some("Bound") => {
            let size =
                status.and_then(|s| s.capacity.as_ref()?.get("storage").map(|q| q.0.clone())).unwrap_or_default();
            let class = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
            let kept = if retain {
                "kept when the pipeline is deleted (storage.embedded.retainOnDelete: true)"
            } else {
                "deleted with the pipeline (storage.embedded.retainOnDelete: false)"
            };
            ok("VolumeBound", format!("PersistentVolumeClaim {claim} is Bound ({size}, class {class:?}); {kept}"))
        }
        Some("Lost") => Cond {
            ok: false,
            reason: "VolumeLost",
            message: format!("PersistentVolumeClaim {claim} lost its volume; the embedded store's traces are gone"),
        },
        phase => {
            let phase = phase.unwrap_or("Pending");
            pending(match latest_event(ctx, ns, "PersistentVolumeClaim", claim).await? {
                Some(note) => format!("PersistentVolumeClaim {claim} is {phase}: {note}"),
                None => format!("PersistentVolumeClaim {claim} is {phase}"),
            })
        }
    })
}

/// The `reason: message` of the most recent Event about `kind`/`name` in `ns` (core/v1 Events, which both event
/// APIs write).
async fn latest_event(ctx: &Context, ns: &str, kind: &str, name: &str) -> Result<Option<String>> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    let list = events.list(&ListParams::default().fields(&selector)).await?;
    let when = |e: &k8s_openapi::api::core::v1::Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    Ok(list
        .items
        .iter()
        .max_by_key(|e| when(e))
        .map(|e| format!("{}: {}", e.reason.clone().unwrap_or_default(), e.message.clone().unwrap_or_default())))
}

/// A computed condition.
struct Cond {
    ok: bool,
    reason: &'static str,
    message: String,
}

fn ok(reason: &'static str, message: String) -> Cond {
    Cond { ok: true, reason, message }
}

/// Replica counts of a workload.
struct Rollout {
    desired: i32,
    ready: i32,
    updated: i32,
    observed: bool,
}

impl Rollout {
    fn new(
        desired: Option<i32>,
        ready: Option<i32>,
        updated: Option<i32>,
        observed: Option<i64>,
        generation: Option<i64>,
    ) -> Self {
        Self {
            desired: desired.unwrap_or(1),
            ready: ready.unwrap_or(0),
            updated: updated.unwrap_or(0),
            observed: observed.is_some() && observed >= generation,
        }
    }

    fn summary(&self) -> String {
        format!("{}/{}", self.ready, self.desired)
    }

    fn condition(&self) -> Cond {
        if self.observed && self.updated >= self.desired && self.ready >= self.desired {
            ok("RolloutComplete", format!("{}/{} pods ready", self.ready, self.desired))
        } else {
            Cond {
                ok: false,
                reason: "RolloutInProgress",
                message: format!("{}/{} pods ready, {} updated", self.ready, self.desired, self.updated),
            }
        }
    }
}

fn deployment_rollout(d: &Deployment) -> Rollout {
    let s = d.status.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas);
    Rollout::new(desired, s.ready_replicas, s.updated_replicas, s.observed_generation, d.metadata.generation)
}

fn statefulset_rollout(set: &StatefulSet) -> Rollout {
    let s = set.status.clone().unwrap_or_default();
    let desired = set.spec.as_ref().and_then(|s| s.replicas);
    Rollout::new(desired, s.ready_replicas, s.updated_replicas, s.observed_generation, set.metadata.generation)
}

/// Server-side applies `obj` (forced, field manager [`FIELD_MANAGER`]) and returns the object the server holds.
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&obj.name_any(), &params, &Patch::Apply(obj)).await?)
}

/// Deletes `name` if it exists and is controlled by `tp` (never someone else's object of the same name).
async fn delete_if_owned<K>(ctx: &Context, tp: &TracingPipeline, ns: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let Some(existing) = api.get_opt(name).await? else { return Ok(()) };
    let uid = tp.uid();
    if existing.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref()) {
        tracing::info!(kind = %K::kind(&K::DynamicType::default()), name, "deleting a child the spec no longer asks for");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Creates or migrates the keyspace, unless the status shows it was already done for this keyspace and contact
/// points.
async fn ensure_storage(
    ctx: &Context,
    tp: &TracingPipeline,
    ns: &str,
    target: &ScyllaTarget,
    old: &TracingPipelineStatus,
) -> Result<SchemaStatus, SchemaError> {
    let done = SchemaStatus {
        keyspace: target.schema.keyspace.clone(),
        version: SCHEMA_VERSION,
        contact_points: target.contact_points.clone(),
    };
    if old.schema.as_ref().is_some_and(|s| {
        s.keyspace == done.keyspace && s.contact_points == done.contact_points && s.version >= SCHEMA_VERSION
    }) {
        return Ok(old.schema.clone().unwrap_or(done));
    }
    let credentials = credentials(ctx, ns, target).await?;
    let version = ctx.schema.ensure(target, credentials.as_ref()).await?;
    tracing::info!(name = %tp.name_any(), keyspace = %target.schema.keyspace, version, "keyspace ready");
    Ok(SchemaStatus { version, ..done })
}

/// Reads the credentials Secret.
async fn credentials(ctx: &Context, ns: &str, target: &ScyllaTarget) -> Result<Option<Credentials>, SchemaError> {
    let Some(name) = &target.credentials_secret else { return Ok(None) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| SchemaError::Credentials(format!("reading Secret {name}: {e}")))?
        .ok_or_else(|| SchemaError::Credentials(format!("Secret {name} not found in namespace {ns}")))?;
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(k).cloned()))
            .ok_or_else(|| SchemaError::Credentials(format!("Secret {name} has no `{k}` key")))
    };
    Ok(Some(Credentials {
        username: field("username")?.trim_end().to_string(),
        password: field("password")?.trim_end_matches('\n').to_string(),
    }))
}

/// Adds or removes [`FINALIZER`] (a merge patch carrying `resourceVersion`, so a concurrent change makes it fail
/// and retry instead of clobbering other finalizers).
async fn set_finalizer(tp: &TracingPipeline, api: &Api<TracingPipeline>, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = tp.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": tp.resource_version()}});
    api.patch(&tp.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Deletion: drops the keyspace when the finalizer asks for it, then releases the object. Children go with the
/// garbage collector (owner references).
async fn finalize(tp: &TracingPipeline, ctx: &Context, api: &Api<TracingPipeline>) -> Result<Action> {
    if !tp.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = tp.namespace().unwrap_or_default();
    let target = tp
        .spec
        .storage
        .scylla
        .as_ref()
        .filter(|s| s.reclaim_policy == ReclaimPolicy::Delete)
        .map(|s| resources::scylla_target(tp, s));
    match target {
        Some(Ok(target)) => {
            let dropped = match credentials(ctx, &ns, &target).await {
                Ok(c) => ctx.schema.drop_keyspace(&target, c.as_ref()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = dropped {
                ctx.metrics.error(e.reason());
                publish(
                    ctx,
                    tp,
                    Kind::Warning,
                    e.reason(),
                    format!(
                        "cannot drop keyspace {}: {e}; retrying (remove the finalizer {FINALIZER} to give up)",
                        target.schema.keyspace
                    ),
                )
                .await;
                return Ok(Action::requeue(ctx.backoff(&key(tp))));
            }
            publish(
                ctx,
                tp,
                Kind::Normal,
                "KeyspaceDropped",
                format!("keyspace {} dropped (reclaimPolicy: Delete)", target.schema.keyspace),
            )
            .await;
        }
        Some(Err(invalid)) => {
            publish(
                ctx,
                tp,
                Kind::Warning,
                "KeyspaceNotDropped",
                format!("spec is invalid ({invalid}); keyspace left in place"),
            )
            .await;
        }
        None => {}
    }
    set_finalizer(tp, api, false).await?;
    ctx.succeeded(&key(tp));
    Ok(Action::await_change())
}

/// Builds conditions, keeping `lastTransitionTime` of those whose status did not change.
fn conditions_from(
    tp: &TracingPipeline,
    old: &TracingPipelineStatus,
    wanted: &[(&str, bool, &str, &str)],
) -> Vec<Condition> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    wanted
        .iter()
        .map(|(type_, ok, reason, message)| {
            let status = if *ok { "True" } else { "False" }.to_string();
            let last = old
                .conditions
                .iter()
                .find(|c| c.type_ == *type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                observed_generation: tp.meta().generation,
                last_transition_time: last,
            }
        })
        .collect()
}

/// Writes the status with server-side apply and publishes an Event per changed condition.
async fn write_status(
    tp: &TracingPipeline,
    ctx: &Context,
    api: &Api<TracingPipeline>,
    old: &TracingPipelineStatus,
    status: TracingPipelineStatus,
) -> Result<()> {
    for c in &status.conditions {
        let before = old.conditions.iter().find(|o| o.type_ == c.type_);
        if before.is_none_or(|b| b.status != c.status || b.reason != c.reason || b.message != c.message) {
            let kind = if c.status == "True" || c.reason == "RolloutInProgress" { Kind::Normal } else { Kind::Warning };
            publish(ctx, tp, kind, &c.reason, format!("{} is {}: {}", c.type_, c.status, c.message)).await;
        }
    }
    let body = json!({
        "apiVersion": "skein.dev/v1alpha1",
        "kind": "TracingPipeline",
        "status": status,
    });
    api.patch_status(&tp.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// Publishes an Event on the pipeline; a failure is logged and counted, never fatal.
async fn publish(ctx: &Context, tp: &TracingPipeline, kind: Kind, reason: &str, note: String) {
    let event = Note { regarding: tp.object_ref(&()), kind, reason: reason.into(), action: "Reconcile", note };
    ctx.recorder.publish(&event).await;
}

/// Runs the controller until `shutdown` completes: watches pipelines (in `namespace`, or all) and the children
/// they own.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = || watcher::Config::default().labels("app.kubernetes.io/managed-by=skein-operator");
    // kube's graceful shutdown waits for the controller's streams to drain, which a watch in backoff (an API
    // server that does not answer) can delay for long; reconciles in flight get RECONCILE_GRACE, then it stops.
    let shutdown = futures::FutureExt::shared(shutdown);
    let forced = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.await;
            tokio::time::sleep(RECONCILE_GRACE).await;
        }
    };
    let controller =
        Controller::new(api::<TracingPipeline>(&client, &namespace), watcher::Config::default().any_semantic())
            .owns(api::<ConfigMap>(&client, &namespace), children())
            .owns(api::<ServiceAccount>(&client, &namespace), children())
            .owns(api::<Service>(&client, &namespace), children())
            .owns(api::<Deployment>(&client, &namespace), children())
            .owns(api::<StatefulSet>(&client, &namespace), children())
            .owns(api::<PodDisruptionBudget>(&client, &namespace), children())
            .owns(api::<HorizontalPodAutoscaler>(&client, &namespace), children())
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "reconcile loop");
                }
            })
            .instrument(info_span!("controller"));
    tokio::select! {
        _ = controller => {}
        _ = forced => tracing::info!(grace_ms = RECONCILE_GRACE.as_millis() as u64, "the controller had not drained; stopping it"),
    }
}

#[cfg(test)]
mod tests;
