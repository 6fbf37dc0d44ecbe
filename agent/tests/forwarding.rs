//! The agent in-process against a stand-in collector (the shared OTLP export service with scripted answers):
//! TLS with `--collector-tls-ca`, `RESOURCE_EXHAUSTED` with `RetryInfo`, permanent rejections, and the SIGTERM
//! drain spilling what it could not send.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use skein_agent::{Running, Settings};
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use skein_proto::otlp_grpc::{ExportHandler, ExportServer, RawExport};
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use skein_proto::trace_service_client::TraceServiceClient;
use tonic::Status;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_types::{ErrorDetails, StatusExt as _};

/// How the stand-in collector answers.
#[derive(Clone, Copy)]
enum Mode {
    Accept,
    /// Refuse the first `n` calls with `RESOURCE_EXHAUSTED` and a `RetryInfo` delay.
    Throttle {
        n: u64,
        delay: Duration,
    },
    Reject,
    /// Refuse (`INVALID_ARGUMENT`) any request holding a span named `poison`.
    RejectPoison,
}

#[derive(Clone)]
struct StandIn {
    spans: Arc<AtomicU64>,
    calls: Arc<Mutex<Vec<Instant>>>,
    mode: Mode,
}

impl ExportHandler for StandIn {
    fn export(
        &self,
        request: RawExport,
    ) -> impl Future<Output = Result<ExportTraceServiceResponse, Status>> + Send + 'static {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(Instant::now());
            calls.len() as u64
        };
        let decoded = request.decode().expect("the agent sends valid requests");
        let n: u64 = decoded.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum();
        let poisoned = request.raw.windows(6).any(|w| w == b"poison");
        let result = match self.mode {
            Mode::Throttle { n: refuse, delay } if call <= refuse => Err(Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "busy",
                ErrorDetails::with_retry_info(Some(delay)),
            )),
            Mode::Reject => Err(Status::invalid_argument("span without a name")),
            Mode::RejectPoison if poisoned => Err(Status::invalid_argument("poisoned span")),
            _ => {
                self.spans.fetch_add(n, Ordering::SeqCst);
                Ok(ExportTraceServiceResponse::default())
            }
        };
        std::future::ready(result)
    }

    fn rejected(&self, _reason: &str) {}
}

async fn stand_in(mode: Mode, tls: Option<Identity>) -> (StandIn, SocketAddr) {
    let handler = StandIn { spans: Arc::default(), calls: Arc::default(), mode };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut server = Server::builder();
    if let Some(identity) = tls {
        server = server.tls_config(ServerTlsConfig::new().identity(identity)).expect("server TLS");
    }
    let router = server.add_service(ExportServer::new(handler.clone(), 64 << 20));
    tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    (handler, addr)
}

fn settings(collector: &str, extra: &[&str]) -> Settings {
    let mut args = vec!["skein-agent", "--collector", collector];
    if !extra.contains(&"--batch-timeout-ms") {
        args.extend(["--batch-timeout-ms", "20"]);
    }
    for flag in ["--otlp-grpc-addr", "--otlp-http-addr", "--sampling-addr", "--admin-addr"] {
        args.extend([flag, "127.0.0.1:0"]);
    }
    args.extend(extra);
    Settings::parse_from(args)
}

fn request(n: u8) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span { trace_id: vec![i; 16], span_id: vec![1; 8], name: format!("op-{i}"), ..Default::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn send(agent: &Running, req: ExportTraceServiceRequest) {
    let mut client =
        TraceServiceClient::connect(format!("http://{}", agent.addrs.otlp_grpc)).await.expect("connect to the agent");
    client.export(req).await.expect("the agent accepts");
}

fn metric(agent: &Running, sample: &str) -> f64 {
    skein_testkit::metric_in(&agent.metrics.render(), sample)
}

fn metric_sum(agent: &Running, name: &str) -> f64 {
    skein_testkit::metric_sum_in(&agent.metrics.render(), name)
}

/// Waits (polling, 20 s at most) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    skein_testkit::eventually(what, Duration::from_secs(20), || std::future::ready(cond().then_some(()))).await
}

#[tokio::test]
async fn forwards_over_tls_verified_against_the_given_ca() {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("cert");
    let identity = Identity::from_pem(server_cert.pem(), server_key.serialize_pem());
    let (collector, addr) = stand_in(Mode::Accept, Some(identity)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).expect("write CA");

    let agent = skein_agent::start(settings(&addr.to_string(), &["--collector-tls-ca", ca.to_str().expect("utf8")]))
        .await
        .expect("agent");
    send(&agent, request(50)).await;
    eventually("50 spans over TLS", || collector.spans.load(Ordering::SeqCst) == 50).await;
    agent.stop().await;

    // A CA that did not sign the collector's certificate: nothing is sent, the spans stay buffered.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    std::fs::write(&ca, other.cert.pem()).expect("write CA");
    let agent = skein_agent::start(settings(&addr.to_string(), &["--collector-tls-ca", ca.to_str().expect("utf8")]))
        .await
        .expect("agent");
    send(&agent, request(5)).await;
    eventually("the endpoint marked unhealthy", || {
        metric(&agent, &format!("skein_agent_endpoint_healthy{{endpoint=\"{addr}\"}}")) == 0.0
    })
    .await;
    assert_eq!(collector.spans.load(Ordering::SeqCst), 50);
    assert_eq!(metric(&agent, "skein_agent_spans_forwarded_total"), 0.0);
}

#[tokio::test]
async fn resource_exhausted_is_retried_after_the_requested_delay() {
    let delay = Duration::from_millis(300);
    let (collector, addr) = stand_in(Mode::Throttle { n: 2, delay }, None).await;
    let agent = skein_agent::start(settings(&addr.to_string(), &[])).await.expect("agent");
    send(&agent, request(20)).await;
    eventually("20 spans after the throttling", || collector.spans.load(Ordering::SeqCst) == 20).await;
    let calls = collector.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 3);
    for pair in calls.windows(2) {
        assert!(pair[1] - pair[0] >= delay, "retried after {:?}, asked for {delay:?}", pair[1] - pair[0]);
    }
    assert_eq!(metric(&agent, "skein_agent_retries_total{reason=\"resource_exhausted\"}"), 2.0);
    // The stand-in counts spans before it answers; the agent counts them forwarded once the answer arrives.
    eventually("20 spans counted forwarded", || metric(&agent, "skein_agent_spans_forwarded_total") == 20.0).await;
    let healthy = metric(&agent, &format!("skein_agent_endpoint_healthy{{endpoint=\"{addr}\"}}"));
    assert_eq!(healthy, 1.0, "throttling is not a failure");
    agent.stop().await;
}

#[tokio::test]
async fn permanent_rejections_are_dropped_and_counted_not_retried() {
    let (collector, addr) = stand_in(Mode::Reject, None).await;
    let agent = skein_agent::start(settings(&addr.to_string(), &[])).await.expect("agent");
    send(&agent, request(7)).await;
    eventually("the rejection counted", || {
        metric(&agent, "skein_agent_spans_dropped_total{reason=\"rejected_by_collector\"}") == 7.0
    })
    .await;
    // Nothing is left to send (no span buffered or in flight), so nothing can be retried later.
    eventually("the buffer to be empty", || {
        metric_sum(&agent, "skein_agent_buffer_spans") == 0.0 && metric_sum(&agent, "skein_agent_inflight_spans") == 0.0
    })
    .await;
    assert_eq!(metric_sum(&agent, "skein_agent_retries_total"), 0.0, "no retry of a permanent rejection");
    assert_eq!(collector.calls.lock().expect("lock").len(), 1, "no retry of a permanent rejection");
    agent.stop().await;
}

#[tokio::test]
async fn one_rejected_request_does_not_take_its_batch_with_it() {
    let (collector, addr) = stand_in(Mode::RejectPoison, None).await;
    let agent = skein_agent::start(settings(&addr.to_string(), &["--batch-timeout-ms", "300"])).await.expect("agent");
    let mut poisoned = request(3);
    poisoned.resource_spans[0].scope_spans[0].spans[1].name = "poison".into();
    for r in [request(10), poisoned, request(20)] {
        send(&agent, r).await;
    }
    eventually("the good spans delivered", || collector.spans.load(Ordering::SeqCst) == 30).await;
    eventually("the bad request counted", || {
        metric(&agent, "skein_agent_spans_dropped_total{reason=\"rejected_by_collector\"}") == 3.0
    })
    .await;
    assert!(collector.calls.lock().expect("lock").len() >= 4, "the batch was retried one request at a time");
    agent.stop().await;
}

#[tokio::test]
async fn stop_spills_what_it_could_not_send_and_the_next_agent_sends_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spill = dir.path().join("spill");
    let spill_arg = ["--spill-dir", spill.to_str().expect("utf8"), "--shutdown-timeout-ms", "500"];
    // Bound but never listening: connections are refused, and no other test's listener can take the port.
    let refusing = tokio::net::TcpSocket::new_v4().expect("socket");
    refusing.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let unused = refusing.local_addr().expect("addr");
    let agent = skein_agent::start(settings(&unused.to_string(), &spill_arg)).await.expect("agent");
    for _ in 0..3 {
        send(&agent, request(10)).await;
    }
    agent.stop().await;
    assert!(std::fs::read_dir(&spill).expect("spill dir").count() > 0, "segments left on disk");
    drop(refusing);

    let (collector, addr) = stand_in(Mode::Accept, None).await;
    let agent = skein_agent::start(settings(&addr.to_string(), &spill_arg)).await.expect("agent");
    eventually("the spilled spans sent", || collector.spans.load(Ordering::SeqCst) == 30).await;
    agent.stop().await;
    assert_eq!(std::fs::read_dir(&spill).expect("spill dir").count(), 0, "sent segments are deleted");
}

#[tokio::test]
async fn inline_config_yaml_redacts_and_a_bad_one_refuses_to_start() {
    use skein_proto::otlp_common::{AnyValue, KeyValue, any_value::Value};
    let (collector, addr) = stand_in(Mode::Accept, None).await;
    let yaml = "redaction:\n  - key: \"^password$\"\n    action: drop\n";
    let agent = skein_agent::start(settings(&addr.to_string(), &["--config-yaml", yaml])).await.expect("agent");
    let mut req = request(1);
    req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
        key: "password".into(),
        value: Some(AnyValue { value: Some(Value::StringValue("hunter2".into())) }),
        ..Default::default()
    }];
    send(&agent, req).await;
    eventually("the span forwarded", || collector.spans.load(Ordering::SeqCst) == 1).await;
    assert_eq!(metric(&agent, "skein_agent_attributes_redacted_total"), 1.0);
    agent.stop().await;

    let bad = settings(&addr.to_string(), &["--config-yaml", "redaction:\n  - key: \"(\"\n    action: mask\n"]);
    let err = skein_agent::start(bad).await.err().expect("an invalid regex is refused");
    assert!(format!("{err:#}").contains("--config-yaml"), "{err:#}");
}
