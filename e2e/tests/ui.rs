//! The web UI in real headless Chromium (Debian's `chromium`, driven by `playwright-core` from npm; both installed
//! by `.ci/run`) against `skein-all-in-one` loaded with the HotROD datasets and one 5,000-span trace.
//!
//! `e2e/node/ui_browser.js` clicks through the UI as a user would and reports what it saw; this test checks the
//! report against the API's own answers. Screenshots land in `$CARGO_TARGET_TMPDIR/ui-screenshots/` (the path is
//! printed), kept after the run as the test's artifacts.

use std::path::PathBuf;
use std::process::Command;

use prost::Message as _;
use serde_json::Value;
use skein_e2e::otlp::{kv, now_nanos};
use skein_e2e::{AllInOne, hotrod_es_dump, trace_data};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_resource::Resource;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span, Status};

const BIG_TRACE: &str = "5c0ff1e5000000000000000000005000";
const BIG_SPANS: u32 = 5_000;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Chromium and playwright-core must be installed: their absence fails the test with the install commands.
fn browser_tools() -> PathBuf {
    let chromium = PathBuf::from(std::env::var("SKEIN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "{} not found: install Debian's chromium (`apt-get install chromium`) or set SKEIN_CHROMIUM; .ci/run does this",
        chromium.display()
    );
    assert!(
        node_dir().join("node_modules/playwright-core").exists(),
        "playwright-core not installed: run `npm ci --prefix e2e/node` (.ci/run does this)"
    );
    chromium
}

/// One trace of [`BIG_SPANS`] spans over four services: a 5-ary tree (depth 6) whose children run one after
/// another inside their parent (each a fifth of the parent's time, less a 10% gap), every 97th span an error.
fn big_trace() -> ExportTraceServiceRequest {
    let t0 = now_nanos() - 120_000_000_000;
    let trace_id = u128::from_str_radix(BIG_TRACE, 16).expect("hex").to_be_bytes().to_vec();
    let id = |i: u32| {
        let mut b = [0u8; 8];
        b[4..].copy_from_slice(&(i + 1).to_be_bytes());
        b[0] = 0x5c;
        b.to_vec()
    };
    let n = BIG_SPANS as usize;
    let (mut start, mut duration) = (vec![t0; n], vec![500_000_000u64; n]);
    for i in 1..n {
        let (parent, sibling) = ((i - 1) / 5, ((i - 1) % 5) as u64);
        let slot = duration[parent] / 5;
        start[i] = start[parent] + sibling * slot + slot / 20;
        duration[i] = slot * 9 / 10;
    }
    let services = ["gateway", "orders", "inventory", "payments"];
    let resource_spans = services
        .iter()
        .enumerate()
        .map(|(k, service)| {
            let spans = (0..BIG_SPANS)
                .filter(|i| (*i as usize) % services.len() == k)
                .map(|i| {
                    let at = i as usize;
                    Span {
                        trace_id: trace_id.clone(),
                        span_id: id(i),
                        parent_span_id: if i == 0 { Vec::new() } else { id((i - 1) / 5) },
                        name: format!("step-{}", i % 13),
                        kind: 2,
                        start_time_unix_nano: start[at],
                        end_time_unix_nano: start[at] + duration[at],
                        attributes: vec![kv("step.index", &i.to_string())],
                        status: (i % 97 == 96).then(|| Status { code: 2, message: "failed".into() }),
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

#[test]
fn the_ui_searches_shows_waterfall_critical_path_and_dependency_graph_in_chromium() {
    let chromium = browser_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 200);
    let hotrod = hotrod_es_dump();
    let otlp = trace_data().join("jaeger-otlp-hotrod-oteldemo/apiv3_getTrace_hotrod.json");
    assert_eq!(s.replay(&[hotrod, otlp])["accepted"], 419);
    let response = s
        .http
        .post(format!("http://{}/v1/traces", s.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(big_trace().encode_to_vec())
        .send()
        .expect("OTLP/HTTP export");
    assert!(response.status().is_success(), "{}", response.status());
    s.wait_until_written();
    assert_eq!(skein_e2e::otlp::span_count(&s, BIG_TRACE), BIG_SPANS as usize);

    // A second server requiring a bearer token, with one HotROD trace so the signed-in UI has a service to show.
    let tokens = dir.path().join("query-tokens");
    std::fs::write(&tokens, "ui-test-token\n").expect("tokens");
    let guarded = AllInOne::start_with(
        &dir.path().join("guarded"),
        200,
        &["--query-auth-token-file", tokens.to_str().expect("UTF-8")],
    );
    assert_eq!(
        guarded.replay(&[trace_data().join("jaeger-otlp-hotrod-oteldemo/apiv3_getTrace_hotrod.json")])["accepted"],
        40
    );
    guarded.wait_until_written();

    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new("node")
        .arg(node_dir().join("ui_browser.js"))
        .arg(&s.query)
        .arg(&out)
        .arg(BIG_TRACE)
        .arg(&guarded.query)
        .arg("ui-test-token")
        .env("SKEIN_CHROMIUM", &chromium)
        .output()
        .expect("run node (install Node.js: apt-get install nodejs npm)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the browser run failed:\n{stderr}\n{stdout}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("report JSON");
    println!("screenshots in {}\nreport: {report}", out.display());

    // Search by service: the 14 HotROD traces of frontend, 7 of them with errors; a tag narrows it.
    assert_eq!(report["searchResults"], 14, "{report}");
    assert_eq!(report["searchErrorBadges"], 7, "{report}");
    assert_eq!(report["redisErrorTraces"], 7, "error=true on redis: SOURCE.md's 7 traces with error spans");

    // The waterfall: every span a row (this viewport holds them all), the errors marked, the critical path the
    // analysis API reports, and span details with attributes, resource and events.
    let (_, analysis) = s.get("/api/traces/00000000000000005d1a48d0a06d3991/analysis");
    let critical: std::collections::BTreeSet<&str> = analysis["data"]["criticalPath"]
        .as_array()
        .expect("critical path")
        .iter()
        .filter_map(|c| c["spanId"].as_str())
        .collect();
    assert_eq!(report["traceRows"], 51, "{report}");
    assert_eq!(report["traceErrorRows"], 3, "{report}");
    assert!(!critical.is_empty());
    assert_eq!(report["criticalRows"], critical.len(), "rows highlighted = spans on the API's critical path");
    assert!(report["criticalSegments"].as_u64() >= Some(critical.len() as u64), "{report}");
    assert!(report["rootRow"].as_str().is_some_and(|r| r.contains("frontend HTTP GET /dispatch")), "{report}");
    assert_eq!(report["criticalRowsHidden"], 0, "the toggle hides the highlight");
    assert!(report["detailTags"].as_u64() >= Some(3), "{report}");
    assert!(report["detailResource"].as_u64() >= Some(2), "{report}");
    assert_eq!(report["detailEvents"], 1, "the redis timeout log: {report}");
    assert!(report["rowsCollapsed"].as_u64() < report["rowsExpanded"].as_u64(), "{report}");

    // The dependency graph: HotROD's 6 services and 5 edges, driver → redis with its 18 errors.
    assert_eq!(report["graphNodes"], 6, "{report}");
    assert_eq!(report["graphEdges"], 5, "{report}");
    assert_eq!(report["graphErrorEdges"], 1, "{report}");
    assert_eq!(report["driverRedisLabel"], "95 calls · 18 errors");

    // 5,000 spans: only the rows on screen are in the DOM, the scroll height holds them all, the end is reachable.
    assert!(report["bigTraceRowElements"].as_u64().is_some_and(|n| n > 0 && n < 200), "{report}");
    assert_eq!(report["bigTraceHeightPx"], BIG_SPANS * 24, "{report}");

    // With --query-auth-token-file, the UI asks for the token, refuses a wrong one and then works.
    assert_eq!(report["authSignedIn"], true, "{report}");

    assert_eq!(report["consoleErrors"], serde_json::json!([]), "the page logged errors");
    for shot in report["screenshots"].as_array().expect("screenshots") {
        let path = shot.as_str().expect("path");
        let bytes = std::fs::read(path).expect("screenshot");
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{path} is not a real screenshot");
    }
    assert_eq!(report["screenshots"].as_array().map(Vec::len), Some(6));
}
