//! Real OpenTelemetry SDKs → skein-all-in-one → Jaeger API: the Python SDK over OTLP/gRPC and the Rust SDK over
//! OTLP/HTTP each send a known three-service trace, and every query endpoint returns it exactly.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use skein_e2e::AllInOne;

/// The Python interpreter with `opentelemetry-sdk` and the OTLP gRPC exporter (`.ci/run` sets `SKEIN_PYTHON`).
fn python() -> Option<String> {
    let py = std::env::var("SKEIN_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    let msg = format!(
        "{py} lacks opentelemetry-sdk: python3 -m venv .venv && .venv/bin/pip install opentelemetry-sdk \
         opentelemetry-exporter-otlp-proto-grpc, then set SKEIN_PYTHON=.venv/bin/python"
    );
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

fn tag<'a>(span: &'a Value, key: &str) -> &'a Value {
    span["tags"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["key"] == key))
        .unwrap_or_else(|| panic!("span {} has no tag {key}: {}", span["operationName"], span["tags"]))
}

fn span<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["spans"].as_array().and_then(|s| s.iter().find(|s| s["operationName"] == name)).expect(name)
}

/// Asserts the whole Jaeger view of the known trace: by ID, search, services, operations, dependencies.
fn check_known_trace(s: &AllInOne, trace_id: &str, sdk_language: &str) {
    s.wait_until("trace stored", Duration::from_secs(30), || s.get(&format!("/api/traces/{trace_id}")).0 == 200);
    let (_, body) = s.get(&format!("/api/traces/{trace_id}"));
    assert_eq!(body["errors"], Value::Null);
    let trace = &body["data"][0];
    assert_eq!(trace["traceID"], trace_id);
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 4, "{trace}");
    let processes = trace["processes"].as_object().expect("processes");
    let mut services: Vec<&str> = processes.values().map(|p| p["serviceName"].as_str().unwrap_or("")).collect();
    services.sort();
    assert_eq!(services, ["checkout", "frontend", "payments"]);
    for p in processes.values() {
        let lang = p["tags"].as_array().and_then(|t| t.iter().find(|t| t["key"] == "telemetry.sdk.language"));
        assert_eq!(lang.expect("sdk language")["value"], sdk_language);
    }

    let root = span(trace, "GET /checkout");
    let client = span(trace, "POST /api/checkout");
    let order = span(trace, "PlaceOrder");
    let charge = span(trace, "Charge");
    assert_eq!(root["references"], json!([]));
    let child_of = |child: &Value, parent: &Value| {
        assert_eq!(
            child["references"],
            json!([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent["spanID"]}]),
            "{} → {}",
            parent["operationName"],
            child["operationName"]
        );
    };
    child_of(client, root);
    child_of(order, client);
    child_of(charge, order);
    assert_eq!(processes[root["processID"].as_str().expect("pid")]["serviceName"], "frontend");
    assert_eq!(processes[charge["processID"].as_str().expect("pid")]["serviceName"], "payments");

    assert_eq!(
        tag(root, "http.request.method"),
        &json!({"key": "http.request.method", "type": "string", "value": "GET"})
    );
    assert_eq!(
        tag(root, "http.response.status_code"),
        &json!({"key": "http.response.status_code", "type": "int64", "value": 200})
    );
    assert_eq!(tag(root, "span.kind")["value"], "server");
    assert_eq!(tag(client, "span.kind")["value"], "client");
    assert_eq!(tag(order, "order.items")["value"], 3);
    assert_eq!(tag(charge, "payment.amount"), &json!({"key": "payment.amount", "type": "float64", "value": 42.5}));
    assert_eq!(tag(charge, "payment.retry"), &json!({"key": "payment.retry", "type": "bool", "value": true}));
    assert_eq!(tag(charge, "error"), &json!({"key": "error", "type": "bool", "value": true}));
    assert_eq!(tag(charge, "otel.status_code")["value"], "ERROR");
    assert_eq!(tag(charge, "otel.status_description")["value"], "card declined");
    assert_eq!(tag(charge, "otel.scope.name")["value"], "e2e.payments");
    assert!(charge["duration"].as_u64().expect("duration µs") >= 50_000, "{}", charge["duration"]);
    let ts = |s: &Value| s["startTime"].as_u64().expect("startTime µs");
    assert!(ts(root) <= ts(client) && ts(client) <= ts(order) && ts(order) <= ts(charge));
    assert_eq!(root["logs"][0]["fields"][0], json!({"key": "event", "type": "string", "value": "request received"}));
    assert_eq!(root["logs"][0]["fields"][1], json!({"key": "user.id", "type": "string", "value": "u-42"}));
    assert!(root["logs"][0]["timestamp"].as_u64().expect("log µs") >= ts(root));
    assert_eq!(charge["logs"][0]["fields"][1]["value"], "CardDeclined");

    // Search: service + operation + tag + minDuration together (Jaeger's Cassandra backend cannot combine them).
    let (status, found) = s.get(
        "/api/traces?service=payments&operation=Charge&tag=payment.amount:42.5&tag=error:true&minDuration=50ms\
         &lookback=1h&limit=20",
    );
    assert_eq!(status, 200, "{found}");
    let ids: Vec<&Value> = found["data"].as_array().expect("data").iter().map(|t| &t["traceID"]).collect();
    assert_eq!(ids, [trace_id]);
    let (_, none) = s.get("/api/traces?service=payments&operation=Charge&minDuration=10s");
    assert_eq!(none["data"], json!([]));
    let (_, none) = s.get("/api/traces?service=payments&tag=payment.amount:41");
    assert_eq!(none["data"], json!([]));
    let (_, by_tags) = s.get("/api/traces?service=frontend&tags=%7B%22http.response.status_code%22%3A%22200%22%7D");
    assert_eq!(by_tags["data"][0]["traceID"], trace_id);

    let (_, svc) = s.get("/api/services");
    assert_eq!(svc["data"], json!(["checkout", "frontend", "payments"]));
    assert_eq!(svc["total"], 3);
    let (_, ops) = s.get("/api/services/frontend/operations");
    assert_eq!(ops["data"], json!(["GET /checkout", "POST /api/checkout"]));
    let (_, ops) = s.get("/api/operations?service=frontend&spanKind=client");
    assert_eq!(ops["data"], json!([{"name": "POST /api/checkout", "spanKind": "client"}]));
    let (status, _) = s.get("/api/operations");
    assert_eq!(status, 400);

    let (_, deps) = s.get("/api/dependencies?lookback=3600000");
    assert_eq!(
        deps["data"],
        json!([
            {"parent": "checkout", "child": "payments", "callCount": 1, "errorCount": 1},
            {"parent": "frontend", "child": "checkout", "callCount": 1, "errorCount": 0},
        ])
    );
}

#[test]
fn python_sdk_over_otlp_grpc() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 300);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/emit_trace.py");
    let out = Command::new(py).arg(script).arg(&s.otlp_grpc).output().expect("run python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let trace_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    check_known_trace(&s, &trace_id, "python");
}

#[test]
fn rust_sdk_over_otlp_http() {
    use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 300);
    let endpoint = format!("http://{}/v1/traces", s.otlp_http);
    let provider = |service: &str| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .build()
            .expect("OTLP/HTTP exporter");
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .with_attribute(KeyValue::new("deployment.environment", "e2e"))
                    .build(),
            )
            .build()
    };
    let (pf, pc, pp) = (provider("frontend"), provider("checkout"), provider("payments"));
    let scope = |p: &SdkTracerProvider, name: &'static str| {
        p.tracer_with_scope(opentelemetry::InstrumentationScope::builder(name).with_version("1.0.0").build())
    };
    let (frontend, checkout, payments) =
        (scope(&pf, "e2e.frontend"), scope(&pc, "e2e.checkout"), scope(&pp, "e2e.payments"));

    let mut root = frontend.span_builder("GET /checkout").with_kind(SpanKind::Server).start(&frontend);
    root.set_attribute(KeyValue::new("http.request.method", "GET"));
    root.set_attribute(KeyValue::new("http.response.status_code", 200));
    root.add_event("request received", vec![KeyValue::new("user.id", "u-42")]);
    let trace_id = root.span_context().trace_id().to_string();
    let cx_root = Context::current_with_span(root);
    let client =
        frontend.span_builder("POST /api/checkout").with_kind(SpanKind::Client).start_with_context(&frontend, &cx_root);
    let cx_client = cx_root.with_span(client);
    let mut order =
        checkout.span_builder("PlaceOrder").with_kind(SpanKind::Server).start_with_context(&checkout, &cx_client);
    order.set_attribute(KeyValue::new("order.items", 3));
    let cx_order = cx_client.with_span(order);
    let mut charge =
        payments.span_builder("Charge").with_kind(SpanKind::Server).start_with_context(&payments, &cx_order);
    charge.set_attribute(KeyValue::new("payment.amount", 42.5));
    charge.set_attribute(KeyValue::new("payment.retry", true));
    charge.add_event("exception", vec![KeyValue::new("exception.type", "CardDeclined")]);
    std::thread::sleep(Duration::from_millis(60));
    charge.set_status(Status::error("card declined"));
    charge.end();
    cx_order.span().end();
    cx_client.span().end();
    cx_root.span().end();
    for p in [pf, pc, pp] {
        p.force_flush().expect("flush");
        p.shutdown().expect("shutdown");
    }
    check_known_trace(&s, &trace_id, "rust");
}
