//! The webhook handlers with real `AdmissionReview` v1 bodies (in process and over TLS), the base64 patch on the
//! wire, malformed bodies, validation, registration objects, and certificate issue and rotation.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum_server::tls_rustls::RustlsConfig;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::certs::{self, CertSettings};
use super::register::{self, Target};
use super::*;
use crate::fixtures::{configured, pipeline_yaml};

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "web-5f7d8c9b4-", "namespace": "tracing", "annotations": annotations,
                     "labels": {"app": "web", "pod-template-hash": "5f7d8c9b4"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                                 "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"},
        "status": {}
    })
}

/// An `admission.k8s.io/v1` review as the API server sends it.
fn review(
    kind: (&str, &str, &str),
    resource: &str,
    operation: &str,
    object: Value,
    old: Value,
    dry_run: bool,
) -> Value {
    let (group, version, k) = kind;
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID,
            "kind": {"group": group, "version": version, "kind": k},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": k},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "namespace": "tracing",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "b2b1d2a6-6e1f-4b55-8b3e-3f1c3d6f0a11", "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn pod_review(annotations: Value, dry_run: bool) -> Value {
    review(("", "v1", "Pod"), "pods", "CREATE", pod(annotations), Value::Null, dry_run)
}

struct Harness {
    webhook: Arc<Webhook>,
    events: tokio::sync::mpsc::Receiver<Note>,
    metrics: Arc<Metrics>,
}

fn harness(pipelines: Vec<TracingPipeline>, namespace_labels: Value) -> Harness {
    harness_with(pipelines, json!({"name": "tracing", "labels": namespace_labels}))
}

/// A harness whose namespace `tracing` has `namespace_meta` (name, labels, annotations).
fn harness_with(pipelines: Vec<TracingPipeline>, namespace_meta: Value) -> Harness {
    let ns: PartialObjectMeta<Namespace> = serde_json::from_value(json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": namespace_meta
    }))
    .expect("namespace metadata");
    let (pipelines_store, namespaces) = fixed_caches(pipelines, vec![ns]);
    let (tx, events) = tokio::sync::mpsc::channel(4);
    let metrics = Arc::new(Metrics::default());
    let webhook = Arc::new(Webhook {
        pipelines: pipelines_store,
        namespaces,
        defaults: Defaults::default(),
        native_sidecar: true,
        metrics: metrics.clone(),
        events: events::Queue::to_channel(tx, metrics.clone()),
    });
    Harness { webhook, events, metrics }
}

fn prod() -> TracingPipeline {
    configured(pipeline_yaml("prod", "sampling: {head: {default_strategy: {type: probabilistic, param: 0.5}}}\n"))
}

async fn post(router: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(path).header("content-type", "application/json").body(body.into()).expect("request");
    let resp = router.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22).await.expect("body");
    (status, bytes.to_vec())
}

/// Checks the wire shape and returns the decoded JSON Patch.
fn response_patch(raw: &[u8]) -> (Value, Option<json_patch::Patch>) {
    let body: Value = serde_json::from_slice(raw).expect("json");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(response["uid"], UID, "uid echoed");
    let patch = match response.get("patch") {
        None => None,
        Some(p) => {
            let text = p.as_str().unwrap_or_else(|| panic!("the patch must be a base64 string, got {p}"));
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).expect("base64");
            Some(serde_json::from_slice(&bytes).expect("a JSON Patch"))
        }
    };
    (response, patch)
}

#[tokio::test]
async fn a_pod_review_is_answered_with_a_base64_patch_that_injects() {
    let h = harness(vec![prod()], json!({inject::NAMESPACE_LABEL: "enabled"}));
    let router = router(h.webhook.clone());
    let (status, raw) = post(&router, "/mutate-pods", pod_review(json!({}), false).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let (response, patch) = response_patch(&raw);
    assert_eq!(response["allowed"], true);
    let mut doc = pod(json!({}));
    json_patch::patch(&mut doc, &patch.expect("a patch")).expect("applies");
    assert_eq!(doc["spec"]["initContainers"][0]["name"], inject::AGENT_CONTAINER);
    assert!(
        doc["metadata"]["annotations"][inject::INJECTED_ANNOTATION].as_str().expect("annotation").starts_with("prod@")
    );
    let app_env = doc["spec"]["containers"][0]["env"].to_string();
    assert!(app_env.contains("parentbased_jaeger_remote"), "{app_env}");
    assert!(
        h.metrics.render().contains(r#"skein_operator_admissions_total{webhook="mutate-pods",outcome="injected"} 1"#)
    );

    // The pod the API server stores comes back on UPDATE: never patched.
    let update = review(("", "v1", "Pod"), "pods", "UPDATE", doc.clone(), doc, false);
    let (_, raw) = post(&router, "/mutate-pods", update.to_string()).await;
    assert_eq!(response_patch(&raw).1, None);
}

#[tokio::test]
async fn a_skipped_pod_is_annotated_and_a_warning_event_queued_except_on_dry_runs() {
    let mut h = harness(vec![prod()], json!({}));
    let router = router(h.webhook.clone());
    let (status, raw) =
        post(&router, "/mutate-pods", pod_review(json!({inject::INJECT_ANNOTATION: "missing"}), false).to_string())
            .await;
    assert_eq!(status, StatusCode::OK);
    let (response, patch) = response_patch(&raw);
    assert_eq!(response["allowed"], true, "a skip never blocks the pod");
    let mut doc = pod(json!({inject::INJECT_ANNOTATION: "missing"}));
    json_patch::patch(&mut doc, &patch.expect("a patch")).expect("applies");
    assert_eq!(
        doc["metadata"]["annotations"][inject::STATUS_ANNOTATION],
        "skipped: TracingPipeline tracing/missing not found (named by the pod annotation skein.dev/inject=\"missing\")"
    );
    assert!(doc["spec"].get("initContainers").is_none());
    let warnings: Vec<&str> =
        response["warnings"].as_array().expect("warnings").iter().filter_map(Value::as_str).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("TracingPipeline tracing/missing not found"), "kubectl prints it: {warnings:?}");
    let w = h.events.try_recv().expect("a Warning Event queued");
    assert_eq!((w.reason.as_str(), w.kind), ("InjectionSkipped", Kind::Warning));
    let regarding = (w.regarding.kind.as_deref(), w.regarding.name.as_deref(), w.regarding.namespace.as_deref());
    assert_eq!(regarding, (Some("Pod"), Some("web-5f7d8c9b4-"), Some("tracing")), "a bare pod: the pod itself");
    assert!(w.note.contains("tracing/web-5f7d8c9b4-"), "{}", w.note);

    let (_, raw) =
        post(&router, "/mutate-pods", pod_review(json!({inject::INJECT_ANNOTATION: "missing"}), true).to_string())
            .await;
    assert!(response_patch(&raw).1.is_some(), "a dry run sees the same answer");
    assert!(h.events.try_recv().is_err(), "but publishes no Event");

    // A full queue drops the Event and counts it; the pod is still answered.
    for _ in 0..6 {
        let (status, _) =
            post(&router, "/mutate-pods", pod_review(json!({inject::INJECT_ANNOTATION: "missing"}), false).to_string())
                .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(h.metrics.render().contains("skein_operator_events_dropped_total 2"), "{}", h.metrics.render());
}

#[tokio::test]
async fn malformed_bodies_get_400_never_500() {
    let h = harness(vec![], json!({}));
    let router = router(h.webhook.clone());
    let no_request = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).to_string();
    let mut wrong_object = pod_review(json!({}), false);
    wrong_object["request"]["object"] =
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "not a list"}});
    for path in ["/mutate-pods", "/validate-tracingpipelines"] {
        for body in [String::new(), "{".into(), "[]".into(), "null".into(), no_request.clone(), "\u{0}\u{1}".into()] {
            let (status, text) = post(&router, path, body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?}: {}", String::from_utf8_lossy(&text));
            assert!(String::from_utf8_lossy(&text).contains("AdmissionReview"));
        }
    }
    let (status, raw) = post(&router, "/mutate-pods", wrong_object.to_string()).await;
    assert_eq!(status, StatusCode::OK, "an unreadable pod is admitted, with a warning");
    let (response, patch) = response_patch(&raw);
    assert_eq!(response["allowed"], true);
    assert!(patch.is_none());
    assert!(response["warnings"][0].as_str().is_some_and(|w| w.contains("could not be read")));
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, _) = post(&router, "/mutate-pods", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn tp_review(operation: &str, object: Value, old: Value) -> String {
    review(("skein.dev", "v1alpha1", "TracingPipeline"), "tracingpipelines", operation, object, old, false).to_string()
}

fn tp_json(spec: Value) -> Value {
    json!({"apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline",
           "metadata": {"name": "prod", "namespace": "tracing"}, "spec": spec})
}

#[tokio::test]
async fn invalid_pipelines_are_denied_naming_the_field() {
    let h = harness(vec![], json!({}));
    let router = router(h.webhook.clone());
    let cases = [
        (
            json!({"sampling": {"tail": {"policies": [{"name": "x", "type": "status_code", "status_code": {"status_codes": []}}]}}}),
            "spec.sampling.tail",
        ),
        (json!({"storage": {"embedded": {}}, "collector": {"replicas": 3}}), "spec.collector"),
        (json!({"redaction": [{"key": "(", "action": "mask"}]}), "spec.redaction[0].key"),
        (json!({"retention": {"traces": "10h", "importantTraces": "1h"}}), "spec.retention"),
        (json!({"retention": {"traces": "ten hours"}}), "spec:"),
        (
            json!({"storage": {"scylla": {"contactPoints": ["db:9042"], "consistency": "MOSTLY"}}}),
            "spec.storage.scylla.consistency",
        ),
    ];
    for (spec, field) in cases {
        let (status, raw) =
            post(&router, "/validate-tracingpipelines", tp_review("CREATE", tp_json(spec.clone()), Value::Null)).await;
        assert_eq!(status, StatusCode::OK);
        let (response, _) = response_patch(&raw);
        assert_eq!(response["allowed"], false, "{spec}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{spec}: {message}");
    }
    let (_, raw) =
        post(&router, "/validate-tracingpipelines", tp_review("CREATE", tp_json(json!({})), Value::Null)).await;
    assert_eq!(response_patch(&raw).0["allowed"], true, "spec: {{}} is a working pipeline");

    // An update that leaves an (old, now invalid) spec alone, e.g. removing a finalizer, is allowed.
    let invalid = tp_json(json!({"redaction": [{"key": "(", "action": "mask"}]}));
    let (_, raw) =
        post(&router, "/validate-tracingpipelines", tp_review("UPDATE", invalid.clone(), invalid.clone())).await;
    assert_eq!(response_patch(&raw).0["allowed"], true);
    let (_, raw) = post(&router, "/validate-tracingpipelines", tp_review("UPDATE", invalid, tp_json(json!({})))).await;
    assert_eq!(response_patch(&raw).0["allowed"], false);
    assert!(h.metrics.render().contains(r#"outcome="denied"} 7"#), "{}", h.metrics.render());
}

#[test]
fn webhook_configurations_have_the_promised_policies() {
    let service =
        Target::Service { namespace: "skein-system".into(), name: "skein-operator-webhook".into(), port: 443 };
    let m = register::mutating("skein-operator", &service, "CA PEM").expect("mutating");
    let w = &m.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.timeout_seconds, Some(5));
    assert_eq!(w.side_effects, "NoneOnDryRun");
    let svc = w.client_config.service.as_ref().expect("service");
    assert_eq!((svc.path.as_deref(), svc.port), (Some("/mutate-pods"), Some(443)));
    assert_eq!(w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()), Some(b"CA PEM".as_slice()));
    let v = register::validating("skein-operator", &Target::Url("https://127.0.0.1:9443/".into()), "CA")
        .expect("validating");
    let w = &v.webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(w.client_config.url.as_deref(), Some("https://127.0.0.1:9443/validate-tracingpipelines"));
    assert_eq!(Target::Url("https://127.0.0.1:9443".into()).cert_names(), ["127.0.0.1"]);
    assert_eq!(Target::Url("https://[::1]:9443".into()).cert_names(), ["::1"]);
    assert_eq!(service.cert_names()[0], "skein-operator-webhook.skein-system.svc");
}

#[tokio::test]
async fn each_registration_mode_writes_only_what_it_owns() {
    use crate::fixtures::{MockApi, World};
    use register::{Mode, Registration};
    let bundle = certs::issue(&settings(3600, 7200), None, register_now()).expect("issue");
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bundle.ca_bundle_pem);
    let base = "/apis/admissionregistration.k8s.io/v1";
    let target = Target::Url("https://127.0.0.1:9443".into());
    let registration = |mode| Registration { config_name: "skein".into(), target: target.clone(), mode };

    // The Helm chart's mode: a strategic merge patch of caBundle alone, in the webhook with Skein's name.
    let mut world = World::default();
    for kind in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
        world.objects.insert(format!("{base}/{kind}/skein"), json!({"metadata": {"name": "skein"}}));
    }
    let (client, api) = MockApi::start(world);
    register::register(&client, &registration(Mode::CaBundle), &bundle).await.expect("patched");
    let calls = api.calls();
    let lines: Vec<_> = calls.iter().map(|c| c.line()).collect();
    assert_eq!(
        lines,
        [
            format!("PATCH {base}/mutatingwebhookconfigurations/skein"),
            format!("PATCH {base}/validatingwebhookconfigurations/skein")
        ]
    );
    assert!(!calls[0].query.contains("fieldManager"), "not an apply: the chart keeps its fields");
    assert_eq!(calls[0].body, json!({"webhooks": [{"name": "inject.skein.dev", "clientConfig": {"caBundle": ca}}]}));
    assert_eq!(calls[1].body["webhooks"][0]["name"], "validate.tracingpipelines.skein.dev");
    assert_eq!(calls[1].body["webhooks"][0].as_object().map(|o| o.len()), Some(2), "name and clientConfig only");

    // Not installed yet: an error to retry on, never a create.
    let (client, api) = MockApi::start(World::default());
    assert!(register::register(&client, &registration(Mode::CaBundle), &bundle).await.is_err());
    assert!(api.calls().iter().all(|c| c.method == "PATCH"));

    // `apply`: both configurations whole, server-side applied; `off`: nothing at all.
    let (client, api) = MockApi::start(World::default());
    register::register(&client, &registration(Mode::Apply), &bundle).await.expect("applied");
    let calls = api.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.query.contains("fieldManager=skein-operator") && c.body["kind"].is_string()));
    let (client, api) = MockApi::start(World::default());
    register::register(&client, &registration(Mode::Off), &bundle).await.expect("nothing to do");
    assert!(api.calls().is_empty());
}

fn settings(lifetime_secs: i64, ca_lifetime_secs: i64) -> CertSettings {
    CertSettings { names: vec!["127.0.0.1".into(), "localhost".into()], lifetime_secs, ca_lifetime_secs }
}

/// POSTs `body` over TLS trusting only `ca_pem`; returns the status, the raw response body and the served
/// certificate.
async fn post_tls(addr: SocketAddr, ca_pem: &str, path: &str, body: String) -> (u16, Vec<u8>, CertificateDer<'static>) {
    let config = certs::client_config(ca_pem).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.expect("TLS handshake");
    let served = tls.get_ref().1.peer_certificates().expect("peer certificates")[0].clone().into_owned();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.expect("http");
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(axum::body::Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let raw = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    (status, raw, served)
}

async fn tls_server(bundle: &certs::CertBundle, webhook: Arc<Webhook>) -> (SocketAddr, RustlsConfig) {
    let tls = RustlsConfig::from_config(certs::server_config(bundle).expect("server config"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = axum_server::Handle::new();
    tokio::spawn(serve(listener, tls.clone(), router(webhook), handle));
    (addr, tls)
}

#[tokio::test]
async fn over_tls_a_client_trusting_the_generated_ca_gets_the_raw_base64_patch() {
    let bundle = certs::issue(&settings(3600, 86400), None, register_now()).expect("issue");
    let h = harness(vec![prod()], json!({inject::NAMESPACE_LABEL: "enabled"}));
    let (addr, _) = tls_server(&bundle, h.webhook.clone()).await;
    let (status, raw, _) =
        post_tls(addr, &bundle.ca_bundle_pem, "/mutate-pods", pod_review(json!({}), false).to_string()).await;
    assert_eq!(status, 200);
    // The raw bytes on the wire: `"patch":"<base64>"`, not kube's `"patch":[91,123,…]`.
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains(r#""patch":"W3"#), "base64 of `[{{` expected: {text}");
    let (_, patch) = response_patch(&raw);
    assert!(!patch.expect("patch").0.is_empty());

    // A client trusting another CA fails the handshake.
    let other = certs::issue(&settings(3600, 86400), None, register_now()).expect("issue");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let config = certs::client_config(&other.ca_bundle_pem).expect("client config");
    let refused =
        tokio_rustls::TlsConnector::from(config).connect(ServerName::try_from("127.0.0.1").expect("name"), tcp).await;
    assert!(refused.is_err(), "the served certificate chains to the generated CA only");
}

fn register_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

#[tokio::test]
async fn certificates_rotate_before_expiry_and_the_server_serves_the_new_one() {
    let short = settings(6, 3600);
    let now = register_now();
    let first = certs::issue(&short, None, now).expect("issue");
    assert!(!certs::due(&first, &short, now), "fresh");
    assert!(!certs::due(&first, &short, now + 3), "more than a third left");
    assert!(certs::due(&first, &short, now + 5), "less than a third left");
    let mut renamed = short.clone();
    renamed.names.push("skein.example".into());
    assert!(certs::due(&first, &renamed, now), "new names need a new certificate");

    let h = harness(vec![prod()], json!({}));
    let (addr, tls) = tls_server(&first, h.webhook.clone()).await;
    let (_, _, served_first) =
        post_tls(addr, &first.ca_bundle_pem, "/mutate-pods", pod_review(json!({}), false).to_string()).await;

    let second = certs::issue(&short, Some(&first), now + 5).expect("renew");
    assert_eq!(second.ca_bundle_pem, first.ca_bundle_pem, "the CA outlives the certificate: kept, caBundle unchanged");
    assert_eq!(second.ca_key_pem, first.ca_key_pem);
    assert!(second.not_after > first.not_after);
    tls.reload_from_config(certs::server_config(&second).expect("config"));
    let (status, _, served_second) =
        post_tls(addr, &first.ca_bundle_pem, "/mutate-pods", pod_review(json!({}), false).to_string()).await;
    assert_eq!(status, 200, "clients holding the old caBundle still connect");
    assert_ne!(served_first, served_second, "new connections get the renewed certificate");

    // The CA itself near its end: a new CA, and the bundle trusts both until the old one expires.
    let brief_ca = settings(6, 8);
    let a = certs::issue(&brief_ca, None, now).expect("issue");
    let b = certs::issue(&brief_ca, Some(&a), now + 5).expect("renew");
    assert_ne!(b.ca_key_pem, a.ca_key_pem);
    assert_eq!(b.ca_bundle_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(b.ca_bundle_pem.ends_with(&a.ca_bundle_pem), "old CA kept after the new one");
    tls.reload_from_config(certs::server_config(&b).expect("config"));
    let (status, _, _) =
        post_tls(addr, &b.ca_bundle_pem, "/mutate-pods", pod_review(json!({}), false).to_string()).await;
    assert_eq!(status, 200);

    // Round trip through the Secret the operator keeps.
    let (data, annotations) = certs::to_secret(&b);
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta { annotations: Some(annotations), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    assert_eq!(certs::from_secret(&secret).expect("read back"), b);
}

#[test]
fn user_certificates_are_read_from_a_directory_and_never_renewed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = certs::issue(&settings(3600, 86400), None, register_now()).expect("issue");
    std::fs::write(dir.path().join("tls.crt"), &issued.cert_pem).expect("write");
    std::fs::write(dir.path().join("tls.key"), &issued.key_pem).expect("write");
    let user = certs::from_dir(dir.path()).expect("read");
    assert!(user.ca_bundle_pem.is_empty(), "no ca.crt: the caBundle is left to whoever manages it");
    assert!(!certs::due(&user, &settings(3600, 86400), i64::MAX / 2));
    certs::server_config(&user).expect("servable");
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    let broken = certs::from_dir(dir.path()).expect("files exist");
    assert!(certs::server_config(&broken).is_err());
    assert!(certs::from_dir(&dir.path().join("missing")).is_err());
}

#[tokio::test]
async fn a_namespace_annotation_sends_pods_to_a_pipeline_in_another_namespace() {
    let mut elsewhere = prod();
    elsewhere.metadata.namespace = Some("observability".into());
    let meta = json!({"name": "tracing", "annotations": {inject::INJECT_ANNOTATION: "observability/prod"}});
    let mut h = harness_with(vec![elsewhere], meta);
    let router = router(h.webhook.clone());
    let (_, raw) = post(&router, "/mutate-pods", pod_review(json!({}), false).to_string()).await;
    let (response, patch) = response_patch(&raw);
    assert!(response.get("warnings").is_none_or(Value::is_null), "{response}");
    let mut doc = pod(json!({}));
    json_patch::patch(&mut doc, &patch.expect("a patch")).expect("applies");
    let args = doc["spec"]["initContainers"][0]["args"].to_string();
    assert!(args.contains("--collector-dns=prod-collector-headless.observability.svc:4317"), "{args}");
    let shown = doc["metadata"]["annotations"][inject::INJECTED_ANNOTATION].as_str().expect("annotation");
    assert!(shown.starts_with("observability/prod@"), "{shown}");
    assert!(h.events.try_recv().is_err(), "injected: no Event");

    // A pod of a Deployment that names a missing pipeline: the Event is on the Deployment, in the pod's namespace.
    let mut owned = pod(json!({inject::INJECT_ANNOTATION: "nope"}));
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web-5f7d8c9b4", "uid": "rs-uid", "controller": true}]);
    let body = review(("", "v1", "Pod"), "pods", "CREATE", owned, Value::Null, false);
    let (_, raw) = post(&router, "/mutate-pods", body.to_string()).await;
    assert!(response_patch(&raw).1.is_some(), "annotated as skipped");
    let w = h.events.try_recv().expect("event");
    let regarding = (w.regarding.kind.as_deref(), w.regarding.name.as_deref(), w.regarding.namespace.as_deref());
    assert_eq!(regarding, (Some("Deployment"), Some("web"), Some("tracing")));
    assert!(w.note.contains("TracingPipeline tracing/nope not found"), "{}", w.note);
}
