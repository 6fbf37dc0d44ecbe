//! Chaos (issue #10), short enough for CI: app → `skein-agent` → `skein-all-in-one` on 127.0.0.1 under three
//! faults, each with exact accounting of what was kept, dropped (and counted) and lost (zero for anything
//! acknowledged):
//! - the collector SIGKILLed three times while the app sends;
//! - the agent's spill disk full (a tiny `--spill-max-bytes`) during a collector outage;
//! - the store stalling every write (`--fault-stall-writes-file`) while the app sends, then recovering.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use skein_e2e::otlp::request_for;
use skein_e2e::{Agent, AllInOne, free_port, metric_in};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::trace_service_client::TraceServiceClient;

/// Unique span IDs stored for `service`, from one search.
fn stored_spans(s: &AllInOne, service: &str) -> usize {
    let (status, body) = s.get(&format!("/api/traces?service={service}&limit=100000&lookback=2h"));
    assert_eq!(status, 200, "{body}");
    let mut ids = HashSet::new();
    for trace in body["data"].as_array().into_iter().flatten() {
        for span in trace["spans"].as_array().into_iter().flatten() {
            ids.insert((span["traceID"].to_string(), span["spanID"].to_string()));
        }
    }
    ids.len()
}

/// Sends `requests` to the agent from a thread, one every `interval`.
///
/// # Panics
/// (In the thread, surfacing at `join`) when an export call fails: the agent must never fail the app.
fn send_in_background(
    agent_addr: String,
    requests: Vec<ExportTraceServiceRequest>,
    interval: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut client = TraceServiceClient::connect(format!("http://{agent_addr}")).await.expect("connect");
            let mut tick = tokio::time::interval(interval);
            for (i, r) in requests.into_iter().enumerate() {
                tick.tick().await;
                if let Err(status) = client.export(r).await {
                    panic!("export call {i} failed: {status}");
                }
            }
        });
    })
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn collector_sigkilled_three_times_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let fixed = ["--otlp-grpc-addr", collector_addr.as_str()];
    let data = dir.path().join("collector");
    let mut collector = AllInOne::start_with(&data, 200, &fixed);
    let spill = dir.path().join("spill");
    let agent = Agent::start(&["--collector", &collector_addr, "--spill-dir", path(&spill)]);
    // 1 000 spans/s for 12 s: 20 requests/s of 5 traces × 10 spans.
    let requests: Vec<_> = (0..240).map(|i| request_for("sigkill3", i, 5, 10, 0)).collect();
    let sent = 240 * 50;
    let client = send_in_background(agent.otlp_grpc.clone(), requests, Duration::from_millis(50));
    let started = Instant::now();
    for kill in 1..=3u64 {
        // Kill once acknowledged spans have been written and more are on their way, at ~3 s, 6 s and 9 s.
        std::thread::sleep((started + Duration::from_secs(3 * kill)).saturating_duration_since(Instant::now()));
        let forwarded = agent.metric("skein_agent_spans_forwarded_total");
        collector.kill();
        eprintln!("SIGKILL {kill} at {:?}: {forwarded} spans acknowledged so far", started.elapsed());
        collector = AllInOne::start_with(&data, 200, &fixed);
    }
    client.join().expect("every export call succeeded");
    agent.wait_forwarded(sent, Duration::from_secs(120));
    collector.wait_until_written();
    let kept = stored_spans(&collector, "sigkill3");
    let dropped = agent.metric_sum("skein_agent_spans_dropped_total");
    eprintln!("sent {sent}, stored {kept}, dropped (counted) {dropped}, lost {}", sent as usize - kept);
    assert_eq!(dropped, 0.0, "nothing needed dropping: the agent buffers through restarts");
    assert_eq!(kept, sent as usize, "every span acknowledged to the app is stored exactly once");
}

#[test]
fn spill_disk_full_drops_exactly_what_it_counts() {
    const MEMORY: u64 = 128 * 1024;
    const DISK: u64 = 256 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let spill = dir.path().join("spill");
    let agent = Agent::start_buffered(&collector_addr, &spill, MEMORY, DISK);
    // The collector is down: ~1.5 MB of spans against 384 KiB of buffer. One error trace per request.
    let requests: Vec<_> = (0..100).map(|i| request_for("spillfull", i, 10, 10, 10)).collect();
    let bytes: usize = requests.iter().map(prost::Message::encoded_len).sum();
    assert!(bytes as u64 > 3 * (MEMORY + DISK), "{bytes} bytes overflow the buffer");
    let sent: u64 = 100 * 100;
    send_in_background(agent.otlp_grpc.clone(), requests, Duration::from_millis(2)).join().expect("app never failed");
    let m = agent.metrics();
    let on_disk = metric_in(&m, "skein_agent_buffer_bytes{tier=\"disk\"}");
    let spill_files: u64 =
        std::fs::read_dir(&spill).expect("spill dir").filter_map(|e| e.ok()?.metadata().ok()).map(|md| md.len()).sum();
    assert!(on_disk <= DISK as f64 && spill_files <= DISK, "spill within its bound: {on_disk} / {spill_files} bytes");
    let full = metric_in(&m, "skein_agent_spans_dropped_total{reason=\"buffer_full\"}");
    assert!(full > 0.0, "the full spill disk dropped spans");

    let s = AllInOne::start_with(&dir.path().join("collector"), 200, &["--otlp-grpc-addr", &collector_addr]);
    let dropped = agent.metric_sum("skein_agent_spans_dropped_total");
    let kept = sent - dropped as u64;
    agent.wait_forwarded(kept, Duration::from_secs(60));
    s.wait_until_written();
    let stored = stored_spans(&s, "spillfull") as u64;
    eprintln!(
        "sent {sent}, stored {stored}, dropped (counted, buffer_full) {dropped}, lost {}",
        sent - stored - dropped as u64
    );
    assert_eq!(stored + dropped as u64, sent, "stored + counted drops = sent: nothing lost uncounted");
    assert_eq!(agent.metric("skein_agent_spans_forwarded_total") as u64, stored, "acknowledged = stored");
    let (status, errors) =
        s.get("/api/traces?service=spillfull&tags=%7B%22error%22%3A%22true%22%7D&limit=10000&lookback=2h");
    assert_eq!(status, 200);
    assert_eq!(errors["data"].as_array().map_or(0, Vec::len), 100, "error traces are shed last: all kept");
}

#[test]
fn stalled_store_pushes_back_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stall = dir.path().join("stall");
    std::fs::write(&stall, b"").expect("stall file");
    let collector_addr = format!("127.0.0.1:{}", free_port());
    let s = AllInOne::start_with(
        &dir.path().join("collector"),
        200,
        &[
            "--otlp-grpc-addr",
            &collector_addr,
            "--fault-stall-writes-file",
            path(&stall),
            "--max-inflight-bytes",
            "262144",
            "--max-live-traces",
            "2000",
        ],
    );
    let agent = Agent::start(&["--collector", &collector_addr, "--spill-dir", path(&dir.path().join("spill"))]);
    // 30 000 traces in 3 s while no write completes: more than the write queue (8 192 chunks, one per trace) and
    // the assembler's 2 000 live traces hold (the rest waits, bounded, in the ingest queue; a longer flood is
    // refused with RESOURCE_EXHAUSTED, which the agent retries).
    let requests: Vec<_> = (0..600).map(|i| request_for("stall", i, 50, 2, 0)).collect();
    let sent: u64 = 600 * 100;
    send_in_background(agent.otlp_grpc.clone(), requests, Duration::from_millis(5)).join().expect("app never failed");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.metric_sum("skein_spans_written_total"), 0.0, "the store is stalled");
    let refused = s.metric_sum("skein_spans_refused_total");
    let buffered = agent.metric("skein_agent_buffer_spans{tier=\"memory\"}")
        + agent.metric("skein_agent_buffer_spans{tier=\"disk\"}")
        + agent.metric("skein_agent_inflight_spans");
    eprintln!(
        "stalled: collector refused {refused} spans (back-pressure, retried by the agent), agent holds {buffered}"
    );
    let held = s.metric_sum("skein_pending_chunks");
    assert!(held > 0.0, "the collector holds acknowledged traces for the stalled store");
    std::fs::remove_file(&stall).expect("end the stall");
    agent.wait_forwarded(sent, Duration::from_secs(120));
    s.wait_until_written();
    // More traces than one search returns (10 000): count what the writer stored, and search a sample.
    let stored = s.metric_sum("skein_spans_written_total") as u64;
    let dropped = agent.metric_sum("skein_agent_spans_dropped_total");
    eprintln!("sent {sent}, stored {stored}, dropped (counted) {dropped}, refused then retried {refused}");
    assert_eq!(dropped, 0.0);
    assert_eq!(s.metric_sum("skein_spans_write_failed_total"), 0.0, "no write given up");
    let (status, first) = s.get(&format!("/api/traces/{}", skein_e2e::otlp::trace_hex(0, 0)));
    let (_, last) = s.get(&format!("/api/traces/{}", skein_e2e::otlp::trace_hex(599, 49)));
    assert_eq!(status, 200);
    for t in [first, last] {
        assert_eq!(t["data"][0]["spans"].as_array().map_or(0, Vec::len), 2, "{t}");
    }
    assert_eq!(stored, sent, "every span stored once the store recovers");
}
