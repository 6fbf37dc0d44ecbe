//! Whole-system tests of `skein-agent` (issue #5): real agent and collector processes on 127.0.0.1 — a collector
//! outage, two collectors with trace-ID routing and one killed, an agent SIGKILL with spilled data, a flood at 10×
//! the buffer, and redaction with the OTLP/HTTP JSON receiver and the remote-sampling proxy.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skein_e2e::otlp::{now_nanos, request_for};
use skein_e2e::{Agent, AllInOne, free_port, percentile, rss_kib, wait_until};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::trace_service_client::TraceServiceClient;

/// Spans stored for `service`: trace ID → span IDs (unique), from one search.
fn stored(s: &AllInOne, service: &str) -> HashMap<String, HashSet<String>> {
    let (status, body) = s.get(&format!("/api/traces?service={service}&limit=10000&lookback=2h"));
    assert_eq!(status, 200, "{body}");
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        for span in trace["spans"].as_array().into_iter().flatten() {
            let (t, s) = (span["traceID"].as_str().unwrap_or(""), span["spanID"].as_str().unwrap_or(""));
            out.entry(t.to_string()).or_default().insert(s.to_string());
        }
    }
    out
}

fn total(m: &HashMap<String, HashSet<String>>) -> usize {
    m.values().map(HashSet::len).sum()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Sends `requests` (in order) to the agent, one every `interval`; returns each call's latency, ms.
///
/// # Panics
/// When any export call fails: the agent must never fail the app.
async fn send_paced(addr: String, requests: Vec<ExportTraceServiceRequest>, interval: Duration) -> Vec<f64> {
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.expect("connect to the agent");
    let mut tick = tokio::time::interval(interval);
    let mut latencies = Vec::with_capacity(requests.len());
    for (i, r) in requests.into_iter().enumerate() {
        tick.tick().await;
        let t = Instant::now();
        if let Err(st) = client.export(r).await {
            panic!("export call {i} failed: {st}");
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    latencies
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn collector_outage_of_30s_loses_nothing_and_never_fails_the_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let fixed = ["--otlp-grpc-addr", collector_addr.as_str()];
    let data = dir.path().join("collector");
    let s = AllInOne::start_with(&data, 200, &fixed);
    let spill = dir.path().join("spill");
    let agent = Agent::start(&["--collector", &collector_addr, "--spill-dir", path(&spill)]);
    // 2K spans/s: 20 requests/s of 5 traces × 20 spans, for 5 s up, 30 s down, 5 s up again.
    let requests: Vec<_> = (0..800).map(|i| request_for("outage", i, 5, 20, 0)).collect();
    let sent = 800 * 100;
    let addr = agent.otlp_grpc.clone();
    let client = std::thread::spawn(move || runtime().block_on(send_paced(addr, requests, Duration::from_millis(50))));
    // The scenario's timeline (5 s up, then a 30 s outage), not a wait for a condition.
    std::thread::sleep(Duration::from_secs(5));
    assert!(s.terminate().success());
    std::thread::sleep(Duration::from_secs(30));
    assert!(agent.metric("skein_agent_spilled_bytes_total") > 0.0, "the outage spilled to disk");
    let s = AllInOne::start_with(&data, 200, &fixed);
    let mut latencies = client.join().expect("every export call succeeded");
    let n = latencies.len();
    latencies.sort_by(f64::total_cmp);
    let p99_ms = percentile(&latencies, 0.99);
    eprintln!("export calls: {n}, p99 latency {p99_ms:.2} ms");
    assert!(p99_ms < 250.0, "export calls must not wait for the collector: p99 {p99_ms:.1} ms");
    agent.wait_forwarded(sent, Duration::from_secs(120));
    s.wait_until_written();
    let got = stored(&s, "outage");
    assert_eq!(total(&got), sent as usize, "every span is stored exactly once");
    assert_eq!(got.len(), 4000);
    assert_eq!(agent.metric("skein_agent_spans_dropped_total{reason=\"buffer_full\"}"), 0.0);
}

/// Splits a request's spans into two requests: even and odd span positions.
fn halves(r: &ExportTraceServiceRequest) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let (mut a, mut b) = (r.clone(), r.clone());
    for (x, keep_even) in [(&mut a, true), (&mut b, false)] {
        for ss in x.resource_spans.iter_mut().flat_map(|rs| rs.scope_spans.iter_mut()) {
            let mut i = 0;
            ss.spans.retain(|_| {
                i += 1;
                (i % 2 == 1) == keep_even
            });
        }
    }
    (a, b)
}

#[test]
fn two_collectors_never_split_a_trace_and_a_killed_ones_share_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = AllInOne::start(&dir.path().join("a"), 200);
    let b_dir = dir.path().join("b");
    let b = AllInOne::start(&b_dir, 200);
    let list = format!("{},{}", a.otlp_grpc, b.otlp_grpc);
    let agent = Agent::start(&["--collector", &list, "--batch-timeout-ms", "50"]);
    // Phase 1: both healthy. Every trace's spans arrive in two requests, 20 ms apart.
    let mut phase1 = Vec::new();
    let reqs: Vec<_> = (0..201).map(|i| request_for("split", i, 5, 10, 0)).collect();
    for i in 0..=200 {
        let (even, _) = halves(&reqs[i.min(199)]);
        if i < 200 {
            phase1.push(even);
        }
        if i > 0 {
            phase1.push(halves(&reqs[i - 1]).1);
        }
    }
    let addr = agent.otlp_grpc.clone();
    runtime().block_on(send_paced(addr.clone(), phase1, Duration::from_millis(10)));
    agent.wait_forwarded(10_000, Duration::from_secs(60));
    a.wait_until_written();
    b.wait_until_written();
    let (in_a, in_b) = (stored(&a, "split"), stored(&b, "split"));
    eprintln!("phase 1: {} traces in a, {} in b", in_a.len(), in_b.len());
    assert_eq!(in_a.len() + in_b.len(), 1000, "no trace in both stores");
    assert!(in_a.keys().all(|t| !in_b.contains_key(t)));
    assert!(in_a.values().chain(in_b.values()).all(|spans| spans.len() == 10), "every trace is whole");
    assert!(in_a.len() > 350 && in_b.len() > 350, "both collectors get a share");

    // Phase 2: b is SIGKILLed halfway through; its traces move to a, nothing is lost.
    let phase2: Vec<_> = (1000..1200).map(|i| request_for("split", i, 5, 10, 0)).collect();
    let client = std::thread::spawn(move || runtime().block_on(send_paced(addr, phase2, Duration::from_millis(20))));
    // Halfway: the agent has taken phase 1 (10,000 spans) and half of phase 2's 10,000.
    wait_until("half of phase 2 received by the agent", Duration::from_secs(60), || {
        agent.metric_sum("skein_agent_spans_received_total") >= 15_000.0
    });
    b.kill();
    client.join().expect("every export call succeeded");
    agent.wait_forwarded(20_000, Duration::from_secs(60));
    a.wait_until_written();
    assert!(agent.metric("skein_agent_spans_rerouted_total") > 0.0);
    // b's write-ahead log holds what it acknowledged before the kill: restart it to count that too.
    let b = AllInOne::start(&b_dir, 200);
    b.wait_until_written();
    let (in_a, in_b) = (stored(&a, "split"), stored(&b, "split"));
    let mut all: HashSet<(String, String)> = HashSet::new();
    for m in [&in_a, &in_b] {
        for (t, spans) in m {
            all.extend(spans.iter().map(|s| (t.clone(), s.clone())));
        }
    }
    eprintln!("after the kill: {} spans in a, {} in b", total(&in_a), total(&in_b));
    assert_eq!(all.len(), 20_000, "nothing lost");
}

#[test]
fn agent_sigkill_with_spilled_data_replays_it_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let spill = dir.path().join("spill");
    let args = ["--collector", collector_addr.as_str(), "--spill-dir", path(&spill)];
    let agent = Agent::start(&args);
    let requests: Vec<_> = (0..100).map(|i| request_for("respawn", i, 10, 10, 0)).collect();
    runtime().block_on(send_paced(agent.otlp_grpc.clone(), requests, Duration::from_millis(1)));
    wait_until("all spans spilled to disk", Duration::from_secs(30), || {
        let m = agent.metrics();
        skein_e2e::metric_in(&m, "skein_agent_buffer_spans{tier=\"disk\"}") == 10_000.0
            && skein_e2e::metric_in(&m, "skein_agent_buffer_spans{tier=\"memory\"}") == 0.0
    });
    agent.kill();
    let s = AllInOne::start_with(&dir.path().join("collector"), 200, &["--otlp-grpc-addr", &collector_addr]);
    let agent = Agent::start(&args);
    agent.wait_forwarded(10_000, Duration::from_secs(60));
    s.wait_until_written();
    let got = stored(&s, "respawn");
    assert_eq!((got.len(), total(&got)), (1000, 10_000), "every spilled span replayed");
    assert!(std::fs::read_dir(&spill).expect("spill dir").next().is_none(), "spill segments deleted once sent");
}

#[test]
fn flood_at_ten_times_the_buffer_stays_bounded_and_keeps_error_spans() {
    const MEMORY: u64 = 2 * 1024 * 1024;
    const DISK: u64 = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let spill = dir.path().join("spill");
    let agent = Agent::start_buffered(&collector_addr, &spill, MEMORY, DISK);
    // Idle once start-up is done: two readings a poll interval apart agree.
    let mut idle_kib = rss_kib(agent.pid()).0;
    wait_until("the agent's RSS to settle after start", Duration::from_secs(10), || {
        let now = rss_kib(agent.pid()).0;
        std::mem::replace(&mut idle_kib, now) == now
    });
    // ~15 KB per request, 4 000 requests: 60 MB, ten times memory + disk. One error trace (one error span) each.
    let requests: Vec<_> = (0..4000).map(|i| request_for("flood", i, 10, 10, 10)).collect();
    let bytes: usize = requests.iter().map(prost::Message::encoded_len).sum();
    assert!(bytes as u64 > 10 * (MEMORY + DISK), "{bytes} bytes is a flood");
    let sent: u64 = 4000 * 100;
    let rt = runtime();
    let mut chunks: Vec<Vec<_>> = (0..4).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        chunks[i % 4].push(r);
    }
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = chunks
            .into_iter()
            .map(|c| tokio::spawn(send_paced(agent.otlp_grpc.clone(), c, Duration::from_micros(10))))
            .collect();
        for t in tasks {
            t.await.expect("sender");
        }
    });
    let (_, peak_kib) = rss_kib(agent.pid());
    let m = agent.metrics();
    let dropped = skein_e2e::metric_in(&m, "skein_agent_spans_dropped_total{reason=\"buffer_full\"}");
    eprintln!(
        "flood of {bytes} bytes in {:?}: idle RSS {idle_kib} KiB, peak {peak_kib} KiB; {dropped} spans dropped",
        started.elapsed()
    );
    assert!(dropped > 0.0, "the flood overflowed the buffer");
    let bound_kib = idle_kib + MEMORY / 1024 + 24 * 1024;
    assert!(peak_kib < bound_kib, "peak RSS {peak_kib} KiB over idle + memory bound + 24 MiB ({bound_kib} KiB)");
    let disk_bytes = skein_e2e::metric_in(&m, "skein_agent_buffer_bytes{tier=\"disk\"}");
    assert!(disk_bytes <= DISK as f64, "disk within its bound: {disk_bytes}");

    let s = AllInOne::start_with(&dir.path().join("collector"), 200, &["--otlp-grpc-addr", &collector_addr]);
    let kept = sent - dropped as u64;
    agent.wait_forwarded(kept, Duration::from_secs(120));
    s.wait_until_written();
    let got = stored(&s, "flood");
    assert_eq!(total(&got) as u64, kept, "stored + dropped = sent");
    let (status, errors) =
        s.get("/api/traces?service=flood&tags=%7B%22error%22%3A%22true%22%7D&limit=10000&lookback=2h");
    assert_eq!(status, 200);
    assert_eq!(errors["data"].as_array().map_or(0, Vec::len), 4000, "every error span was kept");
}

const REDACTION: &str = r#"
redaction:
  - {key: "(?i)^password$", action: drop}
  - {key: "(?i)^authorization$", action: mask}
  - {key: "^user\\.email$", action: hash}
"#;

const STRATEGIES: &str = r#"
sampling_strategies:
  default_strategy: {type: probabilistic, param: 0.5}
  service_strategies:
    - {service: checkout, type: ratelimiting, param: 7}
"#;

#[test]
fn redaction_otlp_json_and_the_sampling_proxy_through_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redaction, strategies) = (dir.path().join("agent.yaml"), dir.path().join("collector.yaml"));
    std::fs::write(&redaction, REDACTION).expect("agent config");
    std::fs::write(&strategies, STRATEGIES).expect("collector config");
    let s = AllInOne::start_with(&dir.path().join("collector"), 100, &["--config", path(&strategies)]);
    let agent = Agent::start(&[
        "--collector",
        &s.otlp_grpc,
        "--config",
        path(&redaction),
        "--sampling-upstream",
        &s.sampling_http,
    ]);
    let t = now_nanos();
    let trace_id = "5b8efff798038103d269b633813fc60c";
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "Authorization", "value": {"stringValue": "Basic c2VjcmV0"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "eee19b7ec3c1b174", "name": "POST /pay", "kind": 2,
            "startTimeUnixNano": t.to_string(), "endTimeUnixNano": (t + 1_000_000).to_string(),
            "attributes": [
                {"key": "password", "value": {"stringValue": "hunter2"}},
                {"key": "user.email", "value": {"stringValue": "ada@example.com"}},
                {"key": "http.route", "value": {"stringValue": "/pay"}}]}]}]}]});
    let http = reqwest::blocking::Client::new();
    let resp = http.post(format!("http://{}/v1/traces", agent.otlp_http)).json(&body).send().expect("post");
    assert_eq!(resp.status().as_u16(), 200);
    let bad = http
        .post(format!("http://{}/v1/traces", agent.otlp_http))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": 7}")
        .send()
        .expect("post");
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().unwrap_or_default().contains("malformed OTLP JSON"));
    agent.wait_forwarded(1, Duration::from_secs(30));
    s.wait_until_written();
    let (status, trace) = s.get(&format!("/api/traces/{trace_id}"));
    assert_eq!(status, 200, "{trace}");
    let text = trace.to_string();
    for secret in ["hunter2", "ada@example.com", "c2VjcmV0"] {
        assert!(!text.contains(secret), "{secret} reached the collector: {text}");
    }
    let span = &trace["data"][0]["spans"][0];
    let tags: HashMap<&str, &Value> =
        span["tags"].as_array().into_iter().flatten().map(|t| (t["key"].as_str().unwrap_or(""), &t["value"])).collect();
    assert!(!tags.contains_key("password"));
    assert!(tags["user.email"].as_str().is_some_and(|v| v.starts_with("sha256:")), "{tags:?}");
    assert_eq!(tags["http.route"], "/pay");
    let process = &trace["data"][0]["processes"][span["processID"].as_str().unwrap_or("")];
    let ptags: Vec<&Value> = process["tags"].as_array().into_iter().flatten().collect();
    assert!(ptags.iter().any(|t| t["key"] == "Authorization" && t["value"] == "****"), "{ptags:?}");
    assert_eq!(agent.metric("skein_agent_attributes_redacted_total"), 3.0);
    assert_eq!(agent.metric("skein_agent_requests_rejected_total{reason=\"malformed\"}"), 1.0);

    // The remote-sampling proxy serves the collector's answer byte for byte, from both paths.
    let upstream = http.get(format!("{}/api/sampling?service=checkout", s.sampling_http)).send().expect("get");
    let upstream = upstream.text().expect("body");
    assert!(upstream.contains("\"maxTracesPerSecond\":7"), "{upstream}");
    for p in ["/sampling", "/api/sampling"] {
        let r = http.get(format!("{}{p}?service=checkout", agent.sampling)).send().expect("get");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().expect("body"), upstream);
    }
    let r = http.get(format!("{}/sampling", agent.sampling)).send().expect("get");
    assert_eq!(r.status().as_u16(), 400);
}
