//! The admission webhooks, served over TLS on 9443 by every operator replica:
//!
//! - `POST /mutate-pods` — sidecar injection ([`crate::inject`]); `failurePolicy: Ignore`, so pod creation never
//!   waits on Skein. A pod that asked for injection but cannot get it is annotated, the admission response carries
//!   a warning (`kubectl` prints it to whoever created the pod), and a Warning Event `InjectionSkipped` is recorded
//!   on the pod's owning workload (a Deployment, StatefulSet, DaemonSet or Job; else the pod) in the pod's
//!   namespace, where `kubectl describe` and `kubectl -n <ns> get events` show it;
//! - `POST /validate-tracingpipelines` — the reconciler's own validation ([`crate::resources::validate`]) at admission,
//!   so an invalid pipeline is refused with the field's name instead of failing later; `failurePolicy: Fail`.
//!
//! Wire format: `admission.k8s.io/v1` `AdmissionReview`. kube 5.0 serializes `AdmissionResponse.patch` as a JSON
//! array of numbers (kube-rs issue #1781); the API server expects the base64 string Go's `[]byte` encodes to, so
//! [`review_body`] rewrites it. A body that is not an `AdmissionReview` gets HTTP 400 with the parse error.

pub mod certs;
pub mod register;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

use crate::crd::TracingPipeline;
use crate::events::{self, Kind, Note};
use crate::inject::{self, Decision};
use crate::metrics::Metrics;
use crate::resources::{self, Defaults};

/// Largest `AdmissionReview` body accepted, bytes (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// How long a request waits for the caches to fill after the operator starts.
pub const CACHE_WAIT: Duration = Duration::from_secs(2);

/// What the handlers share.
pub struct Webhook {
    /// Every watched pipeline.
    pub pipelines: Store<TracingPipeline>,
    /// Namespace labels and annotations.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Images.
    pub defaults: Defaults,
    /// Native sidecars (Kubernetes ≥ 1.29 with `--sidecar-mode auto`).
    pub native_sidecar: bool,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Warning Events, published off the request path.
    pub events: events::Queue,
}

/// Caches holding fixed objects instead of watches (tests and benchmarks), both marked synced.
pub fn fixed_caches(
    pipelines: Vec<TracingPipeline>,
    namespaces: Vec<PartialObjectMeta<Namespace>>,
) -> (Store<TracingPipeline>, Store<PartialObjectMeta<Namespace>>) {
    fn fill<K>(objects: Vec<K>) -> Store<K>
    where
        K: kube::runtime::reflector::Lookup + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Default,
    {
        let mut writer = kube::runtime::reflector::store::Writer::default();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(o));
        }
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        writer.as_reader()
    }
    (fill(pipelines), fill(namespaces))
}

/// The webhook routes.
pub fn router(webhook: Arc<Webhook>) -> Router {
    Router::new()
        .route("/mutate-pods", post(mutate_pods))
        .route("/validate-tracingpipelines", post(validate_pipelines))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(webhook)
}

/// Serializes a review for the API server, the patch as base64 (see the module docs).
///
/// # Errors
/// A JSON error (not expected: every field is plain data).
pub fn review_body(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(review)?;
    if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref())
        && let Some(response) = value.get_mut("response").and_then(Value::as_object_mut)
    {
        response.insert("patch".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(patch)));
    }
    serde_json::to_vec(&value)
}

fn respond(review: AdmissionReview<DynamicObject>) -> Response {
    match review_body(&review) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("serializing the review: {e}")).into_response(),
    }
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Parses an `AdmissionReview` with a request, or says why not.
fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    review.try_into().map_err(|e| format!("not an AdmissionReview request: {e}"))
}

async fn mutate_pods(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = match parse(&body) {
        Ok(req) => Ok(w.mutate(&req).await),
        Err(e) => Err(e),
    };
    w.finish("mutate-pods", started, answer)
}

async fn validate_pipelines(State(w): State<Arc<Webhook>>, body: Bytes) -> Response {
    let started = Instant::now();
    w.finish("validate-tracingpipelines", started, parse(&body).map(|req| validate(&req)))
}

/// The validating webhook's answer for a `TracingPipeline` request, and an outcome label.
pub fn validate(req: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, &'static str) {
    let allowed = AdmissionResponse::from(req);
    if req.operation == Operation::Delete || req.operation == Operation::Connect {
        return (allowed, "allowed");
    }
    let Some(object) = &req.object else { return (allowed.deny("the request carries no object"), "denied") };
    let read = |o: &DynamicObject| serde_json::to_value(o).and_then(serde_json::from_value::<TracingPipeline>);
    let tp = match read(object) {
        Ok(tp) => tp,
        Err(e) => return (allowed.deny(format!("spec: {e}")), "denied"),
    };
    // Updates that leave the spec alone (finalizers, labels, a deletion in progress) are never refused: a pipeline
    // accepted by an older operator must stay deletable.
    if req.operation == Operation::Update {
        let old = req.old_object.as_ref().and_then(|o| read(o).ok());
        if tp.metadata.deletion_timestamp.is_some() || old.is_some_and(|old| old.spec == tp.spec) {
            return (allowed, "allowed");
        }
    }
    match resources::validate(&tp) {
        Ok(_) => (allowed, "allowed"),
        Err(e) => (allowed.deny(format!("{}: {}", e.field, e.message)), "denied"),
    }
}

impl Webhook {
    /// Counts and times an answer and turns it into the HTTP response (400 for a body that is not a review).
    fn finish(
        &self,
        webhook: &'static str,
        started: Instant,
        answer: Result<(AdmissionResponse, &'static str), String>,
    ) -> Response {
        let response = match answer {
            Ok((response, outcome)) => {
                self.metrics.admission(webhook, outcome);
                respond(response.into_review())
            }
            Err(e) => {
                self.metrics.admission(webhook, "bad_request");
                bad_request(e)
            }
        };
        self.metrics.admission_duration.observe(started.elapsed().as_secs_f64());
        response
    }

    /// The injection answer for a Pod request, and an outcome label for metrics.
    pub async fn mutate(&self, req: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, &'static str) {
        let allowed = AdmissionResponse::from(req);
        if req.operation != Operation::Create {
            return (allowed, "not_requested");
        }
        let Some(object) = &req.object else { return (allowed, "not_requested") };
        let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(pod) => pod,
            Err(e) => {
                let mut r = allowed;
                r.warnings = Some(vec![format!("skein: pod not injected, it could not be read: {e}")]);
                return (r, "error");
            }
        };
        let namespace = req.namespace.clone().or_else(|| pod.namespace()).unwrap_or_default();
        let synced = tokio::time::timeout(CACHE_WAIT, async {
            let _ = self.pipelines.wait_until_ready().await;
            let _ = self.namespaces.wait_until_ready().await;
        })
        .await
        .is_ok();
        let ns_meta = self.namespaces.get(&ObjectRef::new(&namespace));
        let labels: BTreeMap<String, String> =
            ns_meta.as_ref().and_then(|ns| ns.metadata.labels.clone()).unwrap_or_default();
        let annotations: BTreeMap<String, String> =
            ns_meta.as_ref().and_then(|ns| ns.metadata.annotations.clone()).unwrap_or_default();
        let pipelines = self.pipelines.state();
        let env = inject::Env {
            namespace: &namespace,
            namespace_labels: &labels,
            namespace_annotations: &annotations,
            pipelines: &pipelines,
            defaults: &self.defaults,
            native_sidecar: self.native_sidecar,
        };
        let decision = if synced {
            inject::inject(&pod, &env)
        } else {
            // Never guess from an empty cache: say so on the pod.
            inject::skip_if_requested(&pod, &env, "the operator is starting and has not read the pipelines yet")
        };
        let pod_name = pod.metadata.name.clone().or(pod.metadata.generate_name.clone()).unwrap_or_default();
        match decision {
            Ok(Decision::NotRequested) => (allowed, "not_requested"),
            Ok(Decision::AlreadyInjected) => (allowed, "already_injected"),
            Ok(Decision::Inject { patch, pipeline, hash }) => match allowed.with_patch(patch) {
                Ok(r) => {
                    tracing::debug!(pod = %pod_name, namespace = %namespace, %pipeline, %hash, "injected the agent");
                    (r, "injected")
                }
                Err(e) => (AdmissionResponse::from(req).deny(format!("skein: {e}")), "error"),
            },
            Ok(Decision::Skip { reason, patch, .. }) => {
                tracing::info!(pod = %pod_name, namespace = %namespace, %reason, "injection skipped");
                if req.dry_run {
                    // `sideEffects: NoneOnDryRun`: no Event for a dry run.
                } else {
                    self.events.send(skipped_event(&pod, &namespace, &pod_name, &reason));
                }
                match allowed.with_patch(patch) {
                    Ok(mut r) => {
                        // The API server may cut warnings past 256 characters: the reason comes first.
                        r.warnings = Some(vec![format!("skein agent not injected: {reason}")]);
                        (r, "skipped")
                    }
                    Err(e) => (AdmissionResponse::from(req).deny(format!("skein: {e}")), "error"),
                }
            }
            Err(e) => {
                let mut r = allowed;
                r.warnings = Some(vec![format!("skein: pod not injected: {e}")]);
                (r, "error")
            }
        }
    }
}

/// The object an admin looks at for a pod being created: its owning workload (a ReplicaSet made by a Deployment is
/// reported as the Deployment), else the pod itself, in the pod's namespace. A pod has no UID at admission, so a
/// reference to it (or to the Deployment, known here only by name) carries none.
pub fn workload_ref(pod: &Pod, namespace: &str, pod_name: &str) -> ObjectReference {
    let (api_version, kind, name, uid) = match inject::workload(&pod.metadata) {
        Some(w) => (w.api_version, w.kind, w.name, w.uid),
        None => ("v1".into(), "Pod".into(), pod_name.into(), None),
    };
    ObjectReference {
        api_version: Some(api_version),
        kind: Some(kind),
        name: Some(name),
        namespace: Some(namespace.into()),
        uid,
        ..Default::default()
    }
}

/// The `InjectionSkipped` Warning Event for a pod, on its workload ([`workload_ref`]); the note names the pod, so
/// pods skipped for different reasons are different Events.
pub fn skipped_event(pod: &Pod, namespace: &str, pod_name: &str, reason: &str) -> Note {
    Note {
        regarding: workload_ref(pod, namespace, pod_name),
        kind: Kind::Warning,
        reason: "InjectionSkipped".into(),
        action: "Inject",
        note: format!("pod {namespace}/{pod_name} was admitted without the Skein agent: {reason}"),
    }
}

/// Serves `router` over TLS on `listener` until `handle` shuts it down; `tls` can be reloaded while serving (a
/// renewed certificate applies to new connections).
///
/// # Errors
/// The listener cannot be used, or the server fails.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: axum_server::tls_rustls::RustlsConfig,
    router: Router,
    handle: axum_server::Handle<std::net::SocketAddr>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, tls)?.handle(handle).serve(router.into_make_service()).await
}

#[cfg(test)]
mod tests;
