//! Real datasets through the whole system: the Nezha CSVs (duplicates across files collapse; per-service trace
//! counts and dependency edges equal an independent computation from the CSV), and HotROD OTLP JSON in →
//! api_v3 out, lossless against Jaeger's reference response.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use skein_e2e::{AllInOne, trace_data};

fn nezha_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("nezha dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "csv") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&trace_data().join("nezha-ob-tt-csv"), &mut out);
    out.sort();
    out
}

/// Strips `-<replicaset>-<pod>` from a pod name, independently of the collector's implementation.
fn service(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() < 3 { pod.to_string() } else { parts[..parts.len() - 2].join("-") }
}

struct Expected {
    unique_spans: usize,
    traces_per_service: BTreeMap<String, usize>,
    edges: BTreeMap<(String, String), u64>,
}

fn expected(files: &[PathBuf]) -> Expected {
    // Unique span rows, keyed as the collector deduplicates: trace, span, start, end.
    let mut rows: HashMap<(String, String, String, String), (String, String)> = HashMap::new();
    for f in files {
        let mut r = csv::Reader::from_path(f).expect("csv");
        for rec in r.records() {
            let rec = rec.expect("row");
            let key = (rec[0].to_string(), rec[1].to_string(), rec[5].to_string(), rec[6].to_string());
            rows.entry(key).or_insert_with(|| (rec[2].to_string(), service(&rec[3])));
        }
    }
    let mut service_of: HashMap<(String, String), String> = HashMap::new();
    let mut traces_per_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((trace, span, _, _), (_, svc)) in &rows {
        service_of.entry((trace.clone(), span.clone())).or_insert_with(|| svc.clone());
        traces_per_service.entry(svc.clone()).or_default().insert(trace.clone());
    }
    let mut edges = BTreeMap::new();
    for ((trace, _, _, _), (parent, svc)) in &rows {
        if parent == "root" {
            continue;
        }
        if let Some(psvc) = service_of.get(&(trace.clone(), parent.clone()))
            && psvc != svc
        {
            *edges.entry((psvc.clone(), svc.clone())).or_insert(0) += 1;
        }
    }
    Expected {
        unique_spans: rows.len(),
        traces_per_service: traces_per_service.into_iter().map(|(k, v)| (k, v.len())).collect(),
        edges,
    }
}

#[test]
fn nezha_replays_with_duplicates_collapsed_and_matching_counts() {
    let files = nezha_files();
    assert_eq!(files.len(), 56, "the Nezha subset ships 56 trace CSVs");
    let want = expected(&files);
    assert_eq!(want.unique_spans, 267_785, "SOURCE.md's unique span count");

    let dir = tempfile::tempdir().expect("tempdir");
    // 200 ms idle: traces that straddle two files, and on a loaded machine ordinary traces too, arrive in several
    // chunks. Spans must still be stored once and every edge counted once, whichever side of a call came first.
    let s = AllInOne::start(dir.path(), 200);
    let summary = s.replay(&files);
    assert_eq!(summary["read"], 269_172);
    assert_eq!(summary["accepted"], 269_172);
    s.wait_until_written();

    let (_, services) = s.get("/api/services");
    let services: Vec<String> = serde_json::from_value(services["data"].clone()).expect("services");
    assert_eq!(services, want.traces_per_service.keys().cloned().collect::<Vec<_>>());

    let mut all_traces: HashMap<String, usize> = HashMap::new();
    for (svc, count) in &want.traces_per_service {
        let (status, body) = s.get(&format!("/api/traces?service={svc}&start=0&limit=10000"));
        assert_eq!(status, 200);
        let traces = body["data"].as_array().expect("data");
        assert_eq!(traces.len(), *count, "traces of {svc}");
        for t in traces {
            let id = t["traceID"].as_str().expect("id").to_string();
            let n = t["spans"].as_array().expect("spans").len();
            if let Some(prev) = all_traces.insert(id.clone(), n) {
                assert_eq!(prev, n, "trace {id} differs between searches");
            }
        }
    }
    assert_eq!(all_traces.len(), 4_394, "SOURCE.md's trace count");
    assert_eq!(all_traces.values().sum::<usize>(), want.unique_spans, "every unique span stored exactly once");

    let (_, deps) = s.get("/api/dependencies?endTs=4102444800000&lookback=4102444800000");
    let got: BTreeMap<(String, String), u64> = deps["data"]
        .as_array()
        .expect("deps")
        .iter()
        .map(|d| {
            let k = (d["parent"].as_str().unwrap_or("").to_string(), d["child"].as_str().unwrap_or("").to_string());
            (k, d["callCount"].as_u64().unwrap_or(0))
        })
        .collect();
    assert_eq!(got, want.edges);
}

/// api_v3 OTLP JSON, normalised for comparison: per span (resource attrs, scope, span with sorted fields).
fn normalise(v: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let strip_defaults = |v: &Value| -> Value {
        fn go(v: &Value) -> Option<Value> {
            match v {
                Value::Object(m) => {
                    let m: serde_json::Map<String, Value> =
                        m.iter().filter_map(|(k, v)| go(v).map(|v| (k.clone(), v))).collect();
                    (!m.is_empty()).then_some(Value::Object(m))
                }
                Value::Null => None,
                Value::Array(a) if a.is_empty() => None,
                Value::Array(a) => Some(Value::Array(a.iter().filter_map(go).collect())),
                Value::String(s) if s.is_empty() => None,
                Value::Number(n) if n.as_f64() == Some(0.0) => None,
                // int64 may be a string or a number in OTLP JSON.
                Value::String(s) if s.parse::<i64>().is_ok() => Some(Value::from(s.parse::<i64>().unwrap_or(0))),
                other => Some(other.clone()),
            }
        }
        go(v).unwrap_or(Value::Null)
    };
    for rs in v["resourceSpans"].as_array().expect("resourceSpans") {
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for sp in ss["spans"].as_array().expect("spans") {
                let key = format!("{}/{}", sp["traceId"].as_str().unwrap_or(""), sp["spanId"].as_str().unwrap_or(""));
                let entry = serde_json::json!({
                    "resource": strip_defaults(&rs["resource"]),
                    "scope": strip_defaults(&ss["scope"]),
                    "span": strip_defaults(sp),
                });
                assert!(out.insert(key.clone(), entry).is_none(), "duplicate span {key}");
            }
        }
    }
    out
}

#[test]
fn hotrod_otlp_in_api_v3_out_is_lossless() {
    let reference_file = trace_data().join("jaeger-otlp-hotrod-oteldemo/apiv3_getTrace_hotrod.json");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(&reference_file).expect("read")).expect("json");
    let want = normalise(&reference["result"]);
    assert_eq!(want.len(), 40);

    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 200);
    let summary = s.replay(&[reference_file]);
    assert_eq!(summary["accepted"], 40);
    s.wait_until_written();
    let (status, body) = s.get("/api/v3/traces/2ea75461946a7dd10f2c15ab36a076cb");
    assert_eq!(status, 200, "{body}");
    let got = normalise(&body["result"]);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, w) in &want {
        assert_eq!(&got[k], w, "span {k}");
    }
    let (status, body) = s.get("/api/v3/traces/00000000000000000000000000000001");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body, json!({"error": {"httpCode": 404, "message": "trace not found"}}));

    // Search (camelCase and snake_case parameters), summaries, services and operations, as Jaeger's gateway.
    let window = "query.startTimeMin=2026-06-21T10:00:00Z&query.startTimeMax=2026-06-21T11:00:00Z";
    for search in [
        format!("query.serviceName=frontend&{window}"),
        "query.service_name=frontend&query.start_time_min=2026-06-21T10:00:00Z&query.start_time_max=2026-06-21T11:00:00Z&query.num_traces=5".to_string(),
        format!("query.serviceName=redis-manual&{window}&query.durationMin=1us"),
    ] {
        let (status, body) = s.get(&format!("/api/v3/traces?{search}"));
        assert_eq!(status, 200, "{search}: {body}");
        assert_eq!(normalise(&body["result"]).len(), 40, "{search}: the whole trace, as OTLP JSON");
    }
    let (status, body) = s.get(&format!("/api/v3/trace-summaries?query.serviceName=frontend&{window}"));
    assert_eq!(status, 200, "{body}");
    let summary = &body["summaries"][0];
    assert_eq!(summary["traceId"], "2ea75461946a7dd10f2c15ab36a076cb");
    assert_eq!(
        (summary["rootServiceName"].clone(), summary["rootOperationName"].clone()),
        (json!("frontend"), json!("GET /dispatch"))
    );
    assert_eq!(summary["spanCount"], 40);
    assert_eq!(summary["minStartTimeUnixNano"], "1782036644630407050");
    let per_service: u64 =
        summary["services"].as_array().expect("services").iter().filter_map(|s| s["spanCount"].as_u64()).sum();
    assert_eq!(per_service, 40);
    // No match: 404 "No traces found" (not the classic API's empty 200); bad parameters: 400 naming them.
    let (status, body) = s.get(&format!("/api/v3/traces?query.serviceName=frontend&{window}&query.durationMin=1h"));
    assert_eq!((status, body), (404, json!({"error": {"httpCode": 404, "message": "No traces found"}})));
    let (status, body) = s.get("/api/v3/traces?query.serviceName=frontend");
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("query.startTimeMin"), "{body}");
    let (status, body) = s.get(&format!("/api/v3/traces?query.serviceName=frontend&{window}&query.attributes=nope"));
    assert_eq!((status, body["error"]["httpCode"].clone()), (400, json!(400)));
    let (_, body) = s.get("/api/v3/services");
    assert_eq!(body["services"], json!(["customer", "driver", "frontend", "mysql", "redis-manual", "route"]));
    let (_, all) = s.get("/api/v3/operations?service=frontend");
    let (_, servers) = s.get("/api/v3/operations?service=frontend&span_kind=server");
    let (_, servers_camel) = s.get("/api/v3/operations?service=frontend&spanKind=server");
    assert_eq!(servers, servers_camel);
    let names = |b: &Value| b["operations"].as_array().expect("operations").len();
    assert!(names(&servers) >= 1 && names(&servers) < names(&all), "{servers} vs {all}");
    assert!(servers["operations"].as_array().expect("ops").iter().all(|o| o["spanKind"] == "server"));
}

/// A search in both of Jaeger's HTTP dialects: the classic `/api/traces` parameters and api_v3's.
#[derive(Clone)]
struct Search {
    name: String,
    service: String,
    operation: Option<String>,
    tag: Option<(String, String)>,
    min_duration_us: Option<u64>,
    window_us: (u64, u64),
}

impl Search {
    fn classic(&self) -> String {
        let mut p = vec![
            ("service", self.service.clone()),
            ("start", self.window_us.0.to_string()),
            ("end", self.window_us.1.to_string()),
            ("limit", "100".to_string()),
        ];
        p.extend(self.operation.clone().map(|o| ("operation", o)));
        p.extend(self.tag.as_ref().map(|(k, v)| ("tags", json!({ k: v }).to_string())));
        p.extend(self.min_duration_us.map(|d| ("minDuration", format!("{d}us"))));
        query_string("/api/traces", &p)
    }

    fn v3(&self, path: &str) -> String {
        let rfc3339 = |us: u64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                .expect("time")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        };
        let mut p = vec![
            ("query.serviceName", self.service.clone()),
            ("query.startTimeMin", rfc3339(self.window_us.0)),
            ("query.startTimeMax", rfc3339(self.window_us.1)),
            ("query.searchDepth", "100".to_string()),
        ];
        p.extend(self.operation.clone().map(|o| ("query.operationName", o)));
        p.extend(self.tag.as_ref().map(|(k, v)| ("query.attributes", json!({ k: v }).to_string())));
        p.extend(self.min_duration_us.map(|d| ("query.durationMin", format!("{d}us"))));
        query_string(path, &p)
    }
}

fn query_string(path: &str, params: &[(&str, String)]) -> String {
    let url = reqwest::Url::parse_with_params(&format!("http://x{path}"), params).expect("url");
    format!("{path}?{}", url.query().unwrap_or_default())
}

/// A trace ID as api_v3 writes it: 32 hex characters (the classic API drops 16 leading zeros).
fn id32(id: &str) -> String {
    format!("{id:0>32}")
}

/// api_v3 search (`/api/v3/traces`, `/api/v3/trace-summaries`) answers exactly what the classic API answers for
/// the same criteria, in the same order, and each summary describes its trace as the full trace does: over the
/// HotROD Elasticsearch dump, for searches derived from its spans (every service; per service an operation, a
/// span tag, a process tag, a duration floor and a narrowed window).
#[test]
fn api_v3_search_equals_the_classic_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = AllInOne::start(dir.path(), 200);
    s.load_hotrod();
    let whole = (0, 4_102_444_800_000_000); // 1970 to 2100, in µs
    let (_, services) = s.get("/api/services");
    let services: Vec<String> =
        services["data"].as_array().expect("services").iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
    // Every trace, in the classic shape, to derive the searches from.
    let mut traces: BTreeMap<String, Value> = BTreeMap::new();
    for svc in &services {
        let search = Search {
            name: String::new(),
            service: svc.clone(),
            operation: None,
            tag: None,
            min_duration_us: None,
            window_us: whole,
        };
        let (_, found) = s.get(&search.classic());
        for t in found["data"].as_array().expect("data") {
            traces.insert(t["traceID"].as_str().expect("id").to_string(), t.clone());
        }
    }
    assert_eq!(traces.len(), 14);
    let mut searches = Vec::new();
    for svc in &services {
        // The service's spans with their trace's processes.
        let spans: Vec<(&Value, &Value)> = traces
            .values()
            .flat_map(|t| t["spans"].as_array().expect("spans").iter().map(move |sp| (sp, t)))
            .filter(|(sp, t)| t["processes"][sp["processID"].as_str().unwrap_or("")]["serviceName"] == *svc)
            .collect();
        let (span, trace) = spans[spans.len() / 2];
        let base = Search {
            name: format!("{svc}: everything"),
            service: svc.clone(),
            operation: None,
            tag: None,
            min_duration_us: None,
            window_us: whole,
        };
        let mut durations: Vec<u64> = spans.iter().filter_map(|(sp, _)| sp["duration"].as_u64()).collect();
        durations.sort_unstable();
        let mut starts: Vec<u64> = spans.iter().filter_map(|(sp, _)| sp["startTime"].as_u64()).collect();
        starts.sort_unstable();
        let tag_of = |tags: &Value| {
            tags.as_array().and_then(|t| t.first()).map(|t| {
                let v = &t["value"];
                (t["key"].as_str().unwrap_or("").to_string(), v.as_str().map_or_else(|| v.to_string(), str::to_string))
            })
        };
        let process_tags = &trace["processes"][span["processID"].as_str().unwrap_or("")]["tags"];
        searches.push(Search {
            name: format!("{svc}: operation"),
            operation: span["operationName"].as_str().map(str::to_string),
            ..base.clone()
        });
        searches.push(Search { name: format!("{svc}: span tag"), tag: tag_of(&span["tags"]), ..base.clone() });
        searches.push(Search { name: format!("{svc}: process tag"), tag: tag_of(process_tags), ..base.clone() });
        searches.push(Search {
            name: format!("{svc}: duration floor"),
            min_duration_us: Some(durations[durations.len() / 2]),
            ..base.clone()
        });
        searches.push(Search {
            name: format!("{svc}: later half of the window"),
            window_us: (starts[starts.len() / 2], whole.1),
            ..base.clone()
        });
        searches.push(Search {
            name: format!("{svc}: no such tag"),
            tag: Some(("no.such".into(), "tag".into())),
            ..base.clone()
        });
        searches.push(base);
    }
    let (mut some, mut none) = (0, 0);
    for search in &searches {
        let (status, classic) = s.get(&search.classic());
        assert_eq!(status, 200, "{}: {classic}", search.name);
        let want: Vec<String> = classic["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| id32(t["traceID"].as_str().expect("id")))
            .collect();
        let (status, v3) = s.get(&search.v3("/api/v3/traces"));
        let (sum_status, sums) = s.get(&search.v3("/api/v3/trace-summaries"));
        if want.is_empty() {
            none += 1;
            assert_eq!((status, sum_status), (404, 404), "{}: api_v3 answers an empty search with 404", search.name);
            continue;
        }
        some += 1;
        assert_eq!((status, sum_status), (200, 200), "{}: {v3}", search.name);
        let mut v3_ids: Vec<String> = Vec::new();
        for rs in v3["result"]["resourceSpans"].as_array().expect("resourceSpans") {
            for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
                for sp in ss["spans"].as_array().expect("spans") {
                    let id = sp["traceId"].as_str().expect("traceId").to_string();
                    if !v3_ids.contains(&id) {
                        v3_ids.push(id);
                    }
                }
            }
        }
        assert_eq!(v3_ids, want, "{}: /api/v3/traces", search.name);
        let summaries = sums["summaries"].as_array().expect("summaries");
        let sum_ids: Vec<String> = summaries.iter().map(|x| x["traceId"].as_str().expect("id").to_string()).collect();
        assert_eq!(sum_ids, want, "{}: /api/v3/trace-summaries", search.name);
        for (sum, t) in summaries.iter().zip(classic["data"].as_array().expect("data")) {
            let spans = t["spans"].as_array().expect("spans");
            let service_of = |sp: &Value| t["processes"][sp["processID"].as_str().unwrap_or("")]["serviceName"].clone();
            let root = spans
                .iter()
                .filter(|sp| !sp["references"].as_array().is_some_and(|r| r.iter().any(|r| r["refType"] == "CHILD_OF")))
                .min_by_key(|sp| sp["startTime"].as_u64())
                .expect("root");
            let errors = spans
                .iter()
                .filter(|sp| {
                    sp["tags"].as_array().is_some_and(|t| t.iter().any(|t| t["key"] == "error" && t["value"] == true))
                })
                .count();
            let min_start_us = spans.iter().filter_map(|sp| sp["startTime"].as_u64()).min().expect("start");
            let sum_start_ns: u64 = sum["minStartTimeUnixNano"].as_str().expect("start").parse().expect("ns");
            assert_eq!(sum["spanCount"], json!(spans.len()), "{}", search.name);
            assert_eq!(sum["errorSpanCount"], json!(errors), "{}", search.name);
            assert_eq!(sum_start_ns / 1000, min_start_us, "{}", search.name);
            assert_eq!(sum["rootServiceName"], service_of(root), "{}", search.name);
            assert_eq!(sum["rootOperationName"], root["operationName"], "{}", search.name);
            let per_service: u64 =
                sum["services"].as_array().expect("services").iter().filter_map(|x| x["spanCount"].as_u64()).sum();
            assert_eq!(per_service, spans.len() as u64, "{}", search.name);
        }
    }
    // Not vacuous: searches that find traces and searches that find none.
    assert!(some >= services.len() && none >= services.len(), "{some} with results, {none} without");
}
