//! Test fixtures: pipelines as the API server would return them, and a mocked API server (`tower-test`, as
//! kube-rs's controller-rs does) that records every request and answers like a real one would for server-side
//! apply, status patches, gets and deletes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use crate::controller::Context;
use crate::crd::{TracingPipeline, TracingPipelineSpec};
use crate::metrics::Metrics;
use crate::resources::{Defaults, ScyllaTarget};
use crate::schema::{Credentials, SchemaError, SchemaManager};

/// A pipeline in namespace `tracing` with a uid and generation 1.
pub fn pipeline(name: &str, spec: TracingPipelineSpec) -> TracingPipeline {
    let mut tp = TracingPipeline::new(name, spec);
    tp.metadata.namespace = Some("tracing".into());
    tp.metadata.uid = Some(format!("uid-{name}"));
    tp.metadata.generation = Some(1);
    tp.metadata.resource_version = Some("100".into());
    tp
}

/// `tp` as the reconciler leaves an accepted pipeline: `ConfigurationGenerated=True` (ready for injection).
pub fn configured(mut tp: TracingPipeline) -> TracingPipeline {
    tp.status = Some(crate::crd::TracingPipelineStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "ConfigurationGenerated".into(),
            status: "True".into(),
            reason: "Generated".into(),
            message: "ok".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            observed_generation: Some(1),
        }],
        ..Default::default()
    });
    tp
}

/// A pipeline from YAML `spec` text, read as the API server's JSON would be (externally tagged enums as maps).
pub fn pipeline_yaml(name: &str, spec_yaml: &str) -> TracingPipeline {
    let json: Value = serde_yaml::from_str(spec_yaml).expect("spec yaml");
    pipeline(name, serde_json::from_value(json).expect("spec"))
}

/// One request the mocked API server received.
#[derive(Clone, Debug)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string.
    pub query: String,
    /// JSON body (Null when empty).
    pub body: Value,
}

impl Call {
    /// `METHOD path`.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the mocked server answers.
#[derive(Default)]
pub struct World {
    /// Objects present, by path (`GET` returns them, `DELETE` removes them, apply stores them).
    pub objects: HashMap<String, Value>,
    /// Status merged into every applied Deployment/StatefulSet (e.g. ready replicas).
    pub workload_status: Option<Value>,
}

/// A mocked API server.
pub struct MockApi {
    /// Requests in arrival order.
    pub calls: Arc<Mutex<Vec<Call>>>,
    /// State.
    pub world: Arc<Mutex<World>>,
}

impl MockApi {
    /// A client wired to a fresh mocked server.
    pub fn start(world: World) -> (Client, MockApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "tracing");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let world = Arc::new(Mutex::new(world));
        let (c, w) = (calls.clone(), world.clone());
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    body,
                };
                let (status, reply) = answer(&call, &mut w.lock().expect("world"));
                c.lock().expect("calls").push(call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
                    .expect("response");
                send.send_response(response);
            }
        });
        (client, MockApi { calls, world })
    }

    /// The recorded calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// Forgets the recorded calls.
    pub fn clear(&self) {
        self.calls.lock().expect("calls").clear();
    }
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": format!("{path} not found"), "metadata": {}}),
    )
}

fn answer(call: &Call, world: &mut World) -> (StatusCode, Value) {
    let path = call.path.trim_end_matches("/status").to_string();
    match call.method.as_str() {
        "GET" => world.objects.get(&path).map_or_else(|| not_found(&path), |o| (StatusCode::OK, o.clone())),
        "DELETE" => match world.objects.remove(&path) {
            Some(o) => (StatusCode::OK, o),
            None => not_found(&path),
        },
        "PATCH" if call.path.ends_with("/status") => {
            let mut obj = world.objects.get(&path).cloned().unwrap_or_else(|| json!({}));
            obj["status"] = call.body["status"].clone();
            world.objects.insert(path, obj.clone());
            (StatusCode::OK, obj)
        }
        "PATCH" => {
            let mut obj = call.body.clone();
            if call.query.contains("fieldManager") && call.body.get("kind").is_some() {
                // Server-side apply: the server's copy is what was applied, plus status for workloads.
                obj["metadata"]["generation"] = json!(1);
                let kind = obj["kind"].as_str().unwrap_or_default();
                if let Some(status) = &world.workload_status
                    && (kind == "Deployment" || kind == "StatefulSet")
                {
                    obj["status"] = status.clone();
                }
            } else if let Some(existing) = world.objects.get(&path) {
                // Merge patch of metadata (finalizers).
                let mut merged = existing.clone();
                if let Some(f) = call.body["metadata"].get("finalizers") {
                    merged["metadata"]["finalizers"] = f.clone();
                }
                obj = merged;
            } else {
                return not_found(&path);
            }
            world.objects.insert(path, obj.clone());
            (StatusCode::OK, obj)
        }
        "POST" => {
            // Create: a `generateName` gets a unique suffix, and the object is stored under its path.
            let mut obj = call.body.clone();
            if obj["metadata"]["name"].as_str().is_none()
                && let Some(prefix) = obj["metadata"]["generateName"].as_str()
            {
                obj["metadata"]["name"] = json!(format!("{prefix}{:05}", world.objects.len()));
            }
            if let Some(name) = obj["metadata"]["name"].as_str() {
                world.objects.insert(format!("{path}/{name}"), obj.clone());
            }
            (StatusCode::CREATED, obj)
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

/// A scripted [`SchemaManager`].
#[derive(Default)]
pub struct FakeSchema {
    /// When set, every operation fails as if no contact point answered.
    pub unreachable: Mutex<bool>,
    /// Keyspaces ensured, in order.
    pub ensured: Mutex<Vec<(String, Option<String>)>>,
    /// Keyspaces dropped, in order.
    pub dropped: Mutex<Vec<String>>,
}

impl FakeSchema {
    fn reachable(&self, target: &ScyllaTarget) -> Result<(), SchemaError> {
        if *self.unreachable.lock().expect("lock") {
            return Err(SchemaError::Unreachable {
                contact_points: target.contact_points.join(","),
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl SchemaManager for FakeSchema {
    async fn ensure(&self, target: &ScyllaTarget, credentials: Option<&Credentials>) -> Result<i32, SchemaError> {
        self.reachable(target)?;
        self.ensured
            .lock()
            .expect("lock")
            .push((target.schema.keyspace.clone(), credentials.map(|c| c.username.clone())));
        Ok(skein_storage::scylla::SCHEMA_VERSION)
    }

    async fn drop_keyspace(&self, target: &ScyllaTarget, _: Option<&Credentials>) -> Result<(), SchemaError> {
        self.reachable(target)?;
        self.dropped.lock().expect("lock").push(target.schema.keyspace.clone());
        Ok(())
    }
}

/// A context over a mocked API server and a fake schema manager.
pub fn context(world: World) -> (Arc<Context>, MockApi, Arc<FakeSchema>) {
    let (client, api) = MockApi::start(world);
    let schema = Arc::new(FakeSchema::default());
    let metrics = Arc::new(Metrics::default());
    let recorder = crate::events::Recorder::new(client.clone(), crate::FIELD_MANAGER, metrics.clone());
    let ctx = Context::new(client, Defaults::default(), schema.clone(), metrics, recorder);
    (Arc::new(ctx), api, schema)
}
