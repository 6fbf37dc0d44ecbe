//! Kubernetes Events (`events.k8s.io/v1`) whose note is always current: one Event per distinct
//! (object, type, reason, note), and a repeat of the same message bumps that Event's `series.count`.
//!
//! kube's `Recorder` keys its series by object and reason only, so a second, different message (another skipped
//! pod, a new config hash) only bumps the count of an Event that still shows the first note. Here the note is part
//! of the key: `kubectl describe` and `kubectl get events` show every distinct message once, each with how often
//! and when it was last seen. Events land in the namespace of the object they are about (a Namespace's own Events
//! in that namespace), so `kubectl -n <ns> get events` finds them next to the object.
//!
//! The series cache is bounded ([`SERIES_CACHE_ENTRIES`]); a forgotten series simply starts a new Event. Events
//! that cannot be written are counted in `skein_operator_events_dropped_total` and logged, never fatal.
//! Spec: <https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/>.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Distinct event series remembered for `series.count`; the oldest is forgotten beyond this.
pub const SERIES_CACHE_ENTRIES: usize = 4096;
/// Events waiting in a [`Queue`] to be published; beyond this they are dropped and counted.
pub const QUEUE_EVENTS: usize = 1024;
/// Longest note written, bytes (the API server refuses notes over 1 kB).
pub const MAX_NOTE_BYTES: usize = 1024;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Something expected happened.
    Normal,
    /// Something the admin should look at.
    Warning,
}

/// One Event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The object it is about (`kind`, `name`, `namespace`, and `uid` when known).
    pub regarding: ObjectReference,
    /// `Normal` or `Warning`.
    pub kind: Kind,
    /// Short machine-readable reason in `PascalCase` (`InjectionSkipped`, `AgentRolledOut`).
    pub reason: String,
    /// What the controller did (`Inject`, `Reconcile`, `Rollout`).
    pub action: &'static str,
    /// The human-readable message.
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    type_: Kind,
    reason: String,
    note: String,
}

#[derive(Default)]
struct Series {
    /// Event object name and count, per distinct message.
    by_key: HashMap<Key, (String, i32)>,
    /// Keys in the order they were first seen, for eviction.
    order: VecDeque<Key>,
}

/// Publishes Events; cheap to clone (the series cache is shared).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    metrics: Arc<Metrics>,
    series: Arc<Mutex<Series>>,
}

/// The namespace an Event about `regarding` is written to.
pub fn event_namespace(regarding: &ObjectReference) -> String {
    match (&regarding.namespace, regarding.kind.as_deref()) {
        (Some(ns), _) if !ns.is_empty() => ns.clone(),
        (_, Some("Namespace")) => regarding.name.clone().unwrap_or_else(|| "default".into()),
        _ => "default".into(),
    }
}

/// `note` cut to [`MAX_NOTE_BYTES`] on a character boundary.
fn bounded(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_string();
    }
    let mut end = MAX_NOTE_BYTES - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

impl Recorder {
    /// A recorder reporting as `controller` (instance: `POD_NAME`, else the controller name).
    pub fn new(client: Client, controller: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            controller: controller.into(),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| controller.into()),
            metrics,
            series: Arc::default(),
        }
    }

    /// Writes `event`: a new Event for a message not seen before, else the series count of the existing one. A
    /// failure is logged and counted, never returned.
    pub async fn publish(&self, event: &Note) {
        if let Err(e) = self.try_publish(event).await {
            self.metrics.events_dropped.inc();
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish the Event");
        }
    }

    async fn try_publish(&self, event: &Note) -> kube::Result<()> {
        let note = bounded(&event.note);
        let r = &self.with_uid(&event.regarding).await;
        let key = Key {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            type_: event.kind,
            reason: event.reason.clone(),
            note: note.clone(),
        };
        let namespace = event_namespace(r);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = MicroTime(Timestamp::now());
        let known = self.series.lock().unwrap_or_else(|p| p.into_inner()).by_key.get(&key).cloned();
        if let Some((name, count)) = known {
            let patch = json!({"series": EventSeries { count: count + 1, last_observed_time: now.clone() }});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.remember(key, name, count + 1);
                    return Ok(());
                }
                // Expired (the API server keeps Events for an hour): start a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let base = r.name.clone().unwrap_or_else(|| self.controller.clone());
        let body = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", base.chars().take(200).collect::<String>())),
                namespace: Some(namespace),
                ..Default::default()
            },
            event_time: Some(now),
            type_: Some(match event.kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            reason: Some(event.reason.clone()),
            action: Some(event.action.into()),
            note: Some(note),
            regarding: Some(r.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &body).await?;
        self.remember(key, created.metadata.name.unwrap_or_default(), 1);
        Ok(())
    }

    /// `regarding` with the UID filled in where it is missing and can be looked up: a Deployment known only by name
    /// (the injection webhook derives it from a pod's ReplicaSet). `kubectl describe` lists only Events whose
    /// reference carries the object's UID. A failed lookup leaves the reference as it was.
    async fn with_uid(&self, regarding: &ObjectReference) -> ObjectReference {
        let mut r = regarding.clone();
        if r.uid.is_none()
            && r.kind.as_deref() == Some("Deployment")
            && let (Some(ns), Some(name)) = (&r.namespace, &r.name)
        {
            let api: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(self.client.clone(), ns);
            if let Ok(Some(d)) = api.get_opt(name).await {
                r.uid = d.metadata.uid;
            }
        }
        r
    }

    fn remember(&self, key: Key, name: String, count: i32) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if series.by_key.insert(key.clone(), (name, count)).is_none() {
            series.order.push_back(key);
            while series.order.len() > SERIES_CACHE_ENTRIES {
                if let Some(old) = series.order.pop_front() {
                    series.by_key.remove(&old);
                }
            }
        }
    }

    /// A bounded queue publishing in the background (for request paths that must not wait on the API server),
    /// until every sender is dropped.
    pub fn queue(&self) -> Queue {
        let (tx, mut rx) = mpsc::channel::<Note>(QUEUE_EVENTS);
        let recorder = self.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                recorder.publish(&event).await;
            }
        });
        Queue { tx, metrics: self.metrics.clone() }
    }
}

/// The sending side of [`Recorder::queue`].
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Note>,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Queues `event`; a full queue drops it and counts it.
    pub fn send(&self, event: Note) {
        if self.tx.try_send(event).is_err() {
            self.metrics.events_dropped.inc();
        }
    }

    /// A queue that hands events to `tx` (tests read them from the receiver).
    pub fn to_channel(tx: mpsc::Sender<Note>, metrics: Arc<Metrics>) -> Self {
        Self { tx, metrics }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{MockApi, World};

    fn pod_ref(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        }
    }

    fn note(regarding: ObjectReference, text: &str) -> Note {
        Note { regarding, kind: Kind::Warning, reason: "InjectionSkipped".into(), action: "Inject", note: text.into() }
    }

    #[tokio::test]
    async fn each_distinct_message_is_its_own_event_and_a_repeat_bumps_its_series() {
        let (client, api) = MockApi::start(World::default());
        let metrics = Arc::new(Metrics::default());
        let recorder = Recorder::new(client, "skein-operator", metrics.clone());
        let (a, b) =
            (note(pod_ref("web"), "pod web-1 skipped: first"), note(pod_ref("web"), "pod web-2 skipped: second"));
        recorder.publish(&a).await;
        recorder.publish(&b).await;
        recorder.publish(&a).await;
        let calls = api.calls();
        let creates: Vec<_> = calls.iter().filter(|c| c.method == "POST").collect();
        assert_eq!(creates.len(), 2, "two messages, two Events: {calls:?}");
        assert!(creates.iter().all(|c| c.path == "/apis/events.k8s.io/v1/namespaces/shop/events"), "{creates:?}");
        let notes: Vec<&str> = creates.iter().filter_map(|c| c.body["note"].as_str()).collect();
        assert_eq!(notes, [a.note.as_str(), b.note.as_str()]);
        let patches: Vec<_> = calls.iter().filter(|c| c.method == "PATCH").collect();
        assert_eq!(patches.len(), 1, "the repeat bumps the first Event: {calls:?}");
        assert_eq!(patches[0].body["series"]["count"], 2);
        assert_eq!(metrics.events_dropped.get(), 0);
    }

    #[tokio::test]
    async fn a_deployment_known_by_name_gets_its_uid_so_kubectl_describe_lists_the_event() {
        let mut world = World::default();
        world.objects.insert(
            "/apis/apps/v1/namespaces/shop/deployments/web".into(),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "web", "namespace": "shop", "uid": "dep-uid"}}),
        );
        let (client, api) = MockApi::start(world);
        let recorder = Recorder::new(client, "skein-operator", Arc::new(Metrics::default()));
        recorder.publish(&note(pod_ref("web"), "skipped")).await;
        let created = api.calls().into_iter().find(|c| c.method == "POST").expect("created");
        assert_eq!(created.body["regarding"]["uid"], "dep-uid");
    }

    #[test]
    fn namespaces_and_long_notes() {
        let ns = ObjectReference { kind: Some("Namespace".into()), name: Some("shop".into()), ..Default::default() };
        assert_eq!(event_namespace(&ns), "shop");
        assert_eq!(event_namespace(&pod_ref("web")), "shop");
        assert_eq!(event_namespace(&ObjectReference::default()), "default");
        let long = "é".repeat(MAX_NOTE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES && cut.ends_with("..."), "{}", cut.len());
    }
}
