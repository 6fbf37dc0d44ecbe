//! `skein-bench`: benchmarks that write reports (not tests).
//!
//! - `skein-bench storage [--input FILE...] [--synthetic N] [--scylla-plan]`: bytes per span for NDJSON (one
//!   self-contained OTLP JSON span per line), OTLP protobuf, protobuf+zstd and Skein's embedded data directory;
//!   encode/decode speed; CQL rows per span of the ScyllaDB write plan. Writes `--report` JSON and `--svg`.
//! - `skein-bench query --synthetic N --otlp-http URL --query URL --pid PID`: sends N synthetic spans to a
//!   running `skein-all-in-one`, waits until they are written, then measures trace-by-ID latency (uniform over
//!   100,000 traces, then `--hot-samples` reads of a `--hot-traces` hot set, each with the hot-trace cache's hit
//!   ratio), service+tag+minDuration search latency (classic API with full traces, api_v3 trace summaries) and the
//!   server's RSS; writes `--report` JSON and an SVG of the percentiles beside it.
//! - `skein-bench ingest --endpoint URL --clients N --duration-s S [--pid PID] [--payload testbed|synthetic]`:
//!   N concurrent OTLP/gRPC clients send 100-span batches to a running collector as fast as it acknowledges them;
//!   reports spans/s, p50/p99 acknowledgement latency, the server's CPU and peak RSS, and — measured on the same
//!   machine in the same run — the raw protobuf decode rate of the same batches (the ceiling).
//! - `skein-bench agent [--spans-per-s 10000] [--batch-spans 100] [--duration-s 60]`: starts a `skein-all-in-one`
//!   and a `skein-agent` (built next to this binary) and sends a fixed span rate through the agent; reports the
//!   agent's CPU (% of one core), peak/steady/idle RSS, release binary size and export-call latency.
//! - `skein-bench admission [--requests 20000] [--connections 4]`: the operator's admission webhook served over TLS
//!   in process (the real router, certificates and caches), called like the API server does: `AdmissionReview` v1
//!   pod creations over keep-alive HTTPS connections, half injected and half skipped; reports p50/p99/max latency
//!   per request and per new connection (handshake included).
//! - `skein-bench soak [--spans-per-s 34500] [--duration-s 600]`: app → `skein-agent` → `skein-all-in-one` →
//!   embedded store at a fixed rate (default: half the 68,929 spans/s #4 measured, `bench/results/ingest-synthetic.json`);
//!   samples every process's RSS each second (plotted to `--svg`), measures end-to-end latency with a probe trace
//!   per second (sent to the agent → returned by `/api/traces/{id}`), and at the end checks that every span sent is
//!   stored (`skein_spans_written_total`) and none dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use prost::Message as _;
use serde_json::json;
use skein_datasets::formats::{self, Format};
use skein_datasets::synthetic::Generator;
use skein_e2e::{metric_in, percentile, rss_kib};
use skein_model::otlp::{Limits, convert, to_otlp};
use skein_model::{Span, TraceId};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, TracesData};
use skein_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use skein_storage::scylla::{Row, WriteCache, plan_rows};
use skein_storage::{Dictionaries, StoreLayout, TraceStore, prepare_batch};

#[derive(Parser)]
#[command(version, about = "Skein benchmarks (write reports; not tests)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Storage size and codec speed per encoding and dataset.
    Storage(StorageArgs),
    /// Query latency and RSS of a running skein-all-in-one after loading synthetic traffic.
    Query(QueryArgs),
    /// Ingest throughput of a running collector at saturation.
    Ingest(IngestArgs),
    /// The agent's footprint (CPU, RSS, binary size) at a fixed span rate; starts its own all-in-one and agent.
    Agent(AgentArgs),
    /// Admission webhook latency (pod injection) over TLS.
    Admission(AdmissionArgs),
    /// Soak: app → agent → all-in-one at a fixed rate for minutes; RSS per second, end-to-end latency, 0 lost.
    Soak(SoakArgs),
}

#[derive(Parser)]
struct AdmissionArgs {
    /// Requests sent over the keep-alive connections (after 1,000 warm-up requests).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent keep-alive connections (the API server keeps a small pool per webhook).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests that each open a new TLS connection (handshake included).
    #[arg(long, default_value_t = 500)]
    new_connections: usize,
    /// JSON report path.
    #[arg(long, default_value = "admission-report.json")]
    report: PathBuf,
}

#[derive(Parser)]
struct AgentArgs {
    /// Spans per second sent to the agent.
    #[arg(long, default_value_t = 10_000)]
    spans_per_s: u64,
    /// Spans per export request.
    #[arg(long, default_value_t = 100)]
    batch_spans: usize,
    /// Measured duration, seconds (after a 5 s warm-up).
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Payload (testbed: the OpenTelemetry Collector testbed's spans, as the published sidecar numbers use).
    #[arg(long, value_enum, default_value_t = Payload::Testbed)]
    payload: Payload,
    /// The agent binary (default: `skein-agent` next to this one).
    #[arg(long)]
    agent_bin: Option<PathBuf>,
    /// Extra agent flags (repeatable), e.g. `--agent-arg=--batch-timeout-ms=500`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,
    /// JSON report path.
    #[arg(long, default_value = "agent-report.json")]
    report: PathBuf,
}

#[derive(Parser)]
struct SoakArgs {
    /// Spans per second sent to the agent (default: 50 % of #4's measured ingest capacity, 68,929 spans/s).
    #[arg(long, default_value_t = 34_500)]
    spans_per_s: u64,
    /// Duration, seconds.
    #[arg(long, default_value_t = 600)]
    duration_s: u64,
    /// Spans per export request.
    #[arg(long, default_value_t = 100)]
    batch_spans: usize,
    /// Concurrent app connections to the agent.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Payload.
    #[arg(long, value_enum, default_value_t = Payload::Synthetic)]
    payload: Payload,
    /// The collector's trace idle time, ms (the product default; it bounds end-to-end latency from below).
    #[arg(long, default_value_t = 5000)]
    trace_idle_ms: u64,
    /// JSON report path.
    #[arg(long, default_value = "soak-report.json")]
    report: PathBuf,
    /// SVG plot of RSS per process over time.
    #[arg(long, default_value = "soak-rss.svg")]
    svg: PathBuf,
}

/// Which spans the ingest benchmark sends.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Payload {
    /// The OpenTelemetry Collector testbed's load-generator spans (one trace per span, two int attributes).
    Testbed,
    /// Skein's synthetic OpenTelemetry-demo-like traces (issue #3's generator).
    Synthetic,
}

#[derive(Parser)]
struct IngestArgs {
    /// OTLP/gRPC endpoint of the collector.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Concurrent clients (each one export request in flight).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured duration, seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Spans per export request.
    #[arg(long, default_value_t = 100)]
    batch_spans: usize,
    /// Payload.
    #[arg(long, value_enum, default_value_t = Payload::Testbed)]
    payload: Payload,
    /// PID of the collector, for CPU and RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// JSON report path.
    #[arg(long, default_value = "ingest-report.json")]
    report: PathBuf,
}

#[derive(Parser)]
struct StorageArgs {
    /// Dataset files (any skein-replay format); each file is one dataset unless --name groups them.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Name for the --input dataset (all files together); default: one dataset per file.
    #[arg(long)]
    name: Option<String>,
    /// A named dataset of several files: `NAME=FILE[,FILE...]` (repeatable).
    #[arg(long)]
    dataset: Vec<String>,
    /// Generate this many synthetic OpenTelemetry-demo-like spans as a dataset.
    #[arg(long)]
    synthetic: Option<usize>,
    /// Generate this many one-span traces as the ingest bench's testbed payload sends them (the OpenTelemetry
    /// Collector testbed's load generator: two int attributes, one resource), in requests of 100.
    #[arg(long)]
    testbed: Option<usize>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also count ScyllaDB CQL rows per span.
    #[arg(long)]
    scylla_plan: bool,
    /// JSON report path.
    #[arg(long, default_value = "storage-report.json")]
    report: PathBuf,
    /// SVG chart path.
    #[arg(long, default_value = "storage-report.svg")]
    svg: PathBuf,
}

#[derive(Parser)]
struct QueryArgs {
    /// Synthetic spans to load (stop early if fewer are needed).
    #[arg(long, default_value_t = 10_000_000)]
    synthetic: usize,
    /// Load these dataset files (any skein-replay format, shifted to end now) instead of synthetic traffic, and
    /// search each of their services over the last hour without tag or duration filters.
    #[arg(long, num_args = 1..)]
    dataset: Vec<PathBuf>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// OTLP/HTTP base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp_http: String,
    /// Query base URL.
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    query: String,
    /// Admin base URL (for `skein_spans_written_total`).
    #[arg(long, default_value = "http://127.0.0.1:14269")]
    admin: String,
    /// PID of the server, for RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Trace-by-ID samples.
    #[arg(long, default_value_t = 1000)]
    by_id_samples: usize,
    /// Search samples.
    #[arg(long, default_value_t = 200)]
    search_samples: usize,
    /// Distinct traces in the hot set (traces engineers open again and again: from an alert, a shared link, a
    /// result page).
    #[arg(long, default_value_t = 1000)]
    hot_traces: usize,
    /// Trace-by-ID reads over the hot set, in random order.
    #[arg(long, default_value_t = 10_000)]
    hot_samples: usize,
    /// Parallel export requests while loading.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The server already holds this load (same `--synthetic` and `--seed`, sent by an earlier run within the
    /// hour): regenerate the trace IDs without sending, and measure only. For comparing server settings (e.g.
    /// `--query-cache-spans 0`) on the same data.
    #[arg(long)]
    already_loaded: bool,
    /// JSON report path.
    #[arg(long, default_value = "query-report.json")]
    report: PathBuf,
}

fn group(spans: Vec<Span>) -> Vec<Vec<Span>> {
    let mut by: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for s in spans {
        by.entry(s.trace_id).or_default().push(s);
    }
    by.into_values().collect()
}

/// Bytes a directory tree occupies on disk as `du` counts them: allocated blocks, so a sparse preallocated file
/// counts what was written, and directories count too.
fn du_bytes(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = std::fs::symlink_metadata(p).map_or(0, |m| m.blocks() * 512);
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() { du_bytes(&path) } else { e.metadata().map_or(0, |m| m.blocks() * 512) };
        }
    }
    total
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Measures one dataset (its traces) in every encoding.
async fn measure(name: &str, mut traces: Vec<Vec<Span>>, scylla_plan: bool) -> anyhow::Result<serde_json::Value> {
    // In the order a collector receives them: by start time (a dataset grouped by trace ID would put traces hours
    // apart into one write batch, which live traffic never does).
    traces.sort_by_key(|t| (t.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0), t.first().map(|s| s.trace_id)));
    let spans: usize = traces.iter().map(Vec::len).sum();
    eprintln!("{name}: {spans} spans in {} traces", traces.len());
    // NDJSON: one self-contained OTLP JSON span (with its resource and scope) per line.
    let mut ndjson = 0u64;
    for t in &traces {
        for rs in to_otlp(t) {
            for ss in &rs.scope_spans {
                for sp in &ss.spans {
                    let one = TracesData {
                        resource_spans: vec![ResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans: vec![ScopeSpans {
                                scope: ss.scope.clone(),
                                spans: vec![sp.clone()],
                                schema_url: ss.schema_url.clone(),
                            }],
                            schema_url: rs.schema_url.clone(),
                        }],
                    };
                    ndjson += serde_json::to_vec(&one)?.len() as u64 + 1;
                }
            }
        }
    }
    // OTLP protobuf and protobuf+zstd, as SDK exports: batches of up to 512 spans.
    let flat: Vec<&Span> = traces.iter().flatten().collect();
    let mut requests = Vec::new();
    for chunk in flat.chunks(512) {
        let owned: Vec<Span> = chunk.iter().map(|s| (*s).clone()).collect();
        requests.push(ExportTraceServiceRequest { resource_spans: to_otlp(&owned) }.encode_to_vec());
    }
    let pb: u64 = requests.iter().map(|r| r.len() as u64).sum();
    let t = Instant::now();
    let zipped: Vec<Vec<u8>> = requests.iter().map(|r| zstd::bulk::compress(r, 3)).collect::<Result<_, _>>()?;
    let pb_zstd_encode = t.elapsed();
    let pbz: u64 = zipped.iter().map(|r| r.len() as u64).sum();
    let t = Instant::now();
    for r in &requests {
        let _ = ExportTraceServiceRequest::decode(r.as_slice())?;
    }
    let pb_decode = t.elapsed();

    // Skein: encode like the writer (shared dictionaries, batches of 512 chunks) into a fresh embedded store.
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&EmbeddedConfig::new(dir.path()))?;
    let dicts = Dictionaries::new(store.partition_secs());
    let scylla_dicts = Dictionaries::new(store.partition_secs());
    let mut encode_time = Duration::ZERO;
    let mut block_bytes = 0u64;
    // Index rows as the embedded store keys them (service, start, chunk sequence number) and their values.
    let mut index_bytes = 0u64;
    let mut rows: HashMap<&'static str, usize> = HashMap::new();
    let mut cache = WriteCache::default();
    let mut blocks = Vec::new();
    for batch in traces.chunks(512) {
        let t = Instant::now();
        let inputs = batch.iter().map(|spans| {
            let important = spans.iter().any(|s| s.status_code == skein_model::StatusCode::ERROR);
            (spans.as_slice(), skein_model::dependencies::edges(spans, &Default::default()), important)
        });
        let wb = prepare_batch(inputs, &dicts, store.layout())?;
        encode_time += t.elapsed();
        // Packs (the spans) and index pages as the embedded store writes them.
        block_bytes += wb.packs.iter().map(|p| p.block.len() as u64).sum::<u64>();
        index_bytes += wb
            .packs
            .iter()
            .flat_map(|p| &p.pages)
            .map(|(service, _, page)| (2 + service.len() + 8 + 8 + 2 + page.len()) as u64)
            .sum::<u64>();
        if scylla_plan {
            // ScyllaDB's rows come from a batch laid out for it: one block per chunk.
            let inputs = batch.iter().map(|spans| (spans.as_slice(), Vec::new(), false));
            let per_trace = prepare_batch(inputs, &scylla_dicts, StoreLayout::PerTrace)?;
            for r in plan_rows(&per_trace, Duration::from_secs(72 * 3600), Duration::from_secs(336 * 3600), &mut cache)
            {
                let k = match r {
                    Row::Dictionary { .. } => "dictionaries",
                    Row::Trace { .. } => "traces",
                    Row::Index { .. } => "trace_index",
                    Row::ServiceBucket { .. } => "service_buckets",
                    Row::Operation { .. } => "operations",
                    Row::Dependency { .. } => "dependencies",
                };
                *rows.entry(k).or_default() += 1;
            }
        }
        blocks.extend(wb.chunks.iter().map(|c| (c.trace_id, c.span_count)));
        store.write(wb.into()).await?;
    }
    store.flush().await?;
    // Decode speed: read every trace back through the store (dictionary lookups included).
    let t = Instant::now();
    let mut decoded = 0;
    for (trace_id, _) in &blocks {
        decoded += store.get_trace(*trace_id).await?.map_or(0, |t| t.len());
    }
    let decode_time = t.elapsed();
    // Exact duplicates (Nezha has them) are stored once, so fewer spans may come back.
    anyhow::ensure!(decoded > 0 && decoded <= spans, "decoded {decoded} of {spans} spans");
    drop(store);
    // What we report is the whole data directory at rest (the server stopped after its shutdown flush), as `du`
    // counts it: tables, indexes, dictionaries, fjall's metadata and whatever journal remains.
    let skein = du_bytes(dir.path());
    let tables = du_bytes(&dir.path().join("fjall").join("keyspaces"));
    let enc = |name: &str, bytes: u64, extra: serde_json::Value| {
        let mut v = json!({
            "name": name, "bytes": bytes,
            "bytes_per_span": bytes as f64 / spans as f64,
            "ratio_vs_ndjson": ndjson as f64 / bytes.max(1) as f64,
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    let mut out = json!({
        "name": name, "spans": spans, "traces": traces.len(),
        "encodings": [
            enc("ndjson", ndjson, json!({})),
            enc("otlp-protobuf", pb, json!({ "decode_spans_per_sec": rate(spans, pb_decode) })),
            enc("otlp-protobuf-zstd", pbz, json!({ "encode_spans_per_sec": rate(spans, pb_zstd_encode) })),
            enc("skein", skein, json!({
                "data_dir_at_rest_bytes": skein,
                "tables_bytes": tables,
                "block_bytes": block_bytes,
                "index_bytes": index_bytes,
                "spans_stored": decoded,
                "block_bytes_per_span": block_bytes as f64 / spans as f64,
                "index_bytes_per_span": index_bytes as f64 / spans as f64,
                "encode_spans_per_sec": rate(spans, encode_time),
                "decode_spans_per_sec": rate(spans, decode_time),
            })),
        ],
    });
    if scylla_plan {
        let total: usize = rows.values().sum();
        out["scylla_plan"] = json!({ "rows": rows, "rows_total": total, "rows_per_span": total as f64 / spans as f64 });
    }
    Ok(out)
}

fn svg(path: &PathBuf, datasets: &[serde_json::Value]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let names = ["ndjson", "otlp-protobuf", "otlp-protobuf-zstd", "skein"];
    let colors = [RGBColor(150, 150, 150), RGBColor(90, 140, 200), RGBColor(60, 90, 160), RGBColor(220, 100, 40)];
    let bars: Vec<(usize, usize, f64)> = datasets
        .iter()
        .enumerate()
        .flat_map(|(d, ds)| {
            names.iter().enumerate().filter_map(move |(e, n)| {
                ds["encodings"].as_array()?.iter().find(|x| x["name"] == *n)?["bytes_per_span"]
                    .as_f64()
                    .map(|b| (d, e, b))
            })
        })
        .collect();
    let max = bars.iter().map(|b| b.2).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (220 * datasets.len().max(1) as u32 + 200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = datasets.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("Bytes per span by encoding (log scale)", ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n, (0.5f64..max * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(datasets.len().max(1))
        .x_label_formatter(&|x| {
            let i = (*x - 0.5).round() as usize;
            datasets.get(i).and_then(|d| d["name"].as_str()).unwrap_or("").to_string()
        })
        .y_desc("bytes/span")
        .draw()?;
    for (e, name) in names.iter().enumerate() {
        let color = colors[e];
        chart
            .draw_series(bars.iter().filter(|b| b.1 == e).map(|&(d, e, b)| {
                let x0 = d as f64 + 0.1 + e as f64 * 0.2;
                Rectangle::new([(x0, 0.5), (x0 + 0.18, b)], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

async fn storage(a: StorageArgs) -> anyhow::Result<()> {
    let mut datasets = Vec::new();
    if let Some(n) = a.synthetic {
        let mut g = Generator::new(a.seed, 1_763_700_000_000_000_000, 200);
        let mut traces = Vec::new();
        let mut count = 0;
        while count < n {
            let t = g.next_trace();
            count += t.len();
            traces.push(t);
        }
        datasets.push(measure(&format!("synthetic-{n}"), traces, a.scylla_plan).await?);
    }
    if let Some(n) = a.testbed {
        let mut rng = skein_datasets::synthetic::Rng::new(a.seed);
        let (mut seq, mut spans) = (0, Vec::with_capacity(n));
        while spans.len() < n {
            let request = testbed_batch(&mut seq, 100.min(n - spans.len()), &mut rng);
            spans.extend(convert(request.resource_spans, &Limits::default()).spans);
        }
        datasets.push(measure(&format!("testbed-one-span-{n}"), group(spans), a.scylla_plan).await?);
    }
    let mut inputs: Vec<(String, Vec<PathBuf>)> = Vec::new();
    match &a.name {
        Some(name) if !a.input.is_empty() => inputs.push((name.clone(), a.input.clone())),
        _ => {
            inputs.extend(a.input.iter().map(|p| {
                (p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), vec![p.clone()])
            }))
        }
    }
    for d in &a.dataset {
        let (name, files) = d.split_once('=').context("--dataset takes NAME=FILE[,FILE...]")?;
        inputs.push((name.to_string(), files.split(',').map(PathBuf::from).collect()));
    }
    for (name, files) in inputs {
        let mut spans = Vec::new();
        for f in &files {
            let rs = formats::read_file(f, None::<Format>).with_context(|| format!("reading {}", f.display()))?;
            spans.extend(convert(rs, &Limits::default()).spans);
        }
        datasets.push(measure(&name, group(spans), a.scylla_plan).await?);
    }
    anyhow::ensure!(!datasets.is_empty(), "give --synthetic N and/or --input FILE...");
    let report = json!({ "datasets": datasets });
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    svg(&a.svg, &datasets)?;
    println!(
        "{:<28} {:>10} {:<20} {:>14} {:>10} {:>9} {:>12} {:>12}",
        "dataset", "spans", "encoding", "bytes", "B/span", "x ndjson", "enc span/s", "dec span/s"
    );
    for d in &datasets {
        for e in d["encodings"].as_array().into_iter().flatten() {
            let f = |k: &str| e[k].as_f64().map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
            println!(
                "{:<28} {:>10} {:<20} {:>14} {:>10.1} {:>9.1} {:>12} {:>12}",
                d["name"].as_str().unwrap_or(""),
                d["spans"],
                e["name"].as_str().unwrap_or(""),
                e["bytes"],
                e["bytes_per_span"].as_f64().unwrap_or(0.0),
                e["ratio_vs_ndjson"].as_f64().unwrap_or(0.0),
                f("encode_spans_per_sec"),
                f("decode_spans_per_sec"),
            );
        }
        if let Some(p) = d.get("scylla_plan") {
            println!(
                "{:<28} scylla rows/span {:.3} {}",
                d["name"].as_str().unwrap_or(""),
                p["rows_per_span"].as_f64().unwrap_or(0.0),
                p["rows"]
            );
        }
    }
    eprintln!("report: {} and {}", a.report.display(), a.svg.display());
    Ok(())
}

/// `samples` `GET /api/traces/{id}` of IDs drawn from `ids` by `rng`; latencies in ms, sorted (none without IDs).
async fn reads_by_id(
    http: &reqwest::Client,
    query: &str,
    ids: &[TraceId],
    samples: usize,
    rng: &mut skein_datasets::synthetic::Rng,
) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::new();
    for _ in 0..if ids.is_empty() { 0 } else { samples } {
        let id = ids[rng.below(ids.len() as u64) as usize];
        let t = Instant::now();
        let r = http.get(format!("{query}/api/traces/{}", hex::encode(id.0))).send().await?;
        anyhow::ensure!(r.status().is_success(), "trace by ID: {}", r.status());
        let _ = r.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// The query service's hot-trace cache counters `(hits, misses)` from `skein_query_cache_requests_total`.
async fn cache_counts(http: &reqwest::Client, admin: &str) -> anyhow::Result<(f64, f64)> {
    let text = http.get(format!("{admin}/metrics")).send().await?.text().await?;
    Ok((
        metric_in(&text, "skein_query_cache_requests_total{result=\"hit\"}"),
        metric_in(&text, "skein_query_cache_requests_total{result=\"miss\"}"),
    ))
}

async fn written(http: &reqwest::Client, admin: &str) -> anyhow::Result<u64> {
    let text = http.get(format!("{admin}/metrics")).send().await?.text().await?;
    Ok(metric_in(&text, "skein_spans_written_total") as u64)
}

async fn query(a: QueryArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let before = written(&http, &a.admin).await?;
    let start_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64 - 3_600_000_000_000;
    // Traffic spread over the last hour, as a 1 h search window would see it: the trace rate comes from the
    // generator's mean trace size (sampled with the same seed).
    let t0 = Instant::now();
    let (sent, ids, services) = if a.dataset.is_empty() {
        let (sent, ids) = load_synthetic(&a, &http, start_ns).await?;
        let services = ["checkout", "cart", "frontend", "product-catalog", "payment"].map(str::to_string).to_vec();
        (sent, ids, services)
    } else {
        load_dataset(&a, &http).await?
    };
    let send_secs = t0.elapsed().as_secs_f64();
    eprintln!("sent {sent} spans in {send_secs:.1} s; waiting until written");
    // Datasets may repeat spans (written once), so wait until the written count stops moving.
    let mut last = (written(&http, &a.admin).await?, Instant::now());
    loop {
        let w = written(&http, &a.admin).await?;
        if a.already_loaded || w >= before + sent as u64 {
            last.1 = Instant::now();
            break;
        }
        if w != last.0 {
            last = (w, Instant::now());
        } else if !a.dataset.is_empty() && last.1.elapsed() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Until the last span was written (not the quiet period that showed it was the last).
    let ingest_secs = last.1.duration_since(t0).as_secs_f64();
    let mut rng = skein_datasets::synthetic::Rng::new(a.seed ^ 0x5eed);
    let cache_before = cache_counts(&http, &a.admin).await?;
    let by_id = reads_by_id(&http, &a.query, &ids, a.by_id_samples, &mut rng).await?;
    let cache_after_cold = cache_counts(&http, &a.admin).await?;
    // The hot set: the first read of each trace misses the hot-trace cache (`--query-cache-spans`), later reads
    // hit it while it holds the set.
    let hot: Vec<TraceId> =
        (0..a.hot_traces.min(ids.len())).map(|_| ids[rng.below(ids.len() as u64) as usize]).collect();
    let by_id_hot = reads_by_id(&http, &a.query, &hot, a.hot_samples, &mut rng).await?;
    let cache_after_hot = cache_counts(&http, &a.admin).await?;
    // The same search (service + tag + duration, 1 h window, limit 20) through the classic API, which answers full
    // traces as Jaeger does, and through api_v3's trace summaries, which the UI's result list reads.
    let mut search = Vec::new();
    let mut summaries = Vec::new();
    let (mut hits, mut summary_hits) = (0usize, 0usize);
    // Synthetic traffic: service + tag + duration; a dataset: service and window only.
    let (tag_filter, v3_filter) = if a.dataset.is_empty() {
        (
            "&tags=%7B%22rpc.system%22%3A%22grpc%22%7D&minDuration=5ms",
            "&query.attributes=%7B%22rpc.system%22%3A%22grpc%22%7D&query.durationMin=5ms",
        )
    } else {
        ("", "")
    };
    let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
    let rfc3339 = |us: u64| -> anyhow::Result<String> {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)?;
        Ok(t.format(&time::format_description::well_known::Rfc3339)?)
    };
    let (v3_min, v3_max) = (rfc3339(now_us - 3_600_000_000)?, rfc3339(now_us)?);
    for i in 0..a.search_samples {
        let service = &services[i % services.len()];
        let url = format!(
            "{}/api/traces?service={service}{tag_filter}&start={}&end={now_us}&limit=20",
            a.query,
            now_us - 3_600_000_000
        );
        let t = Instant::now();
        let r = http.get(url).send().await?;
        anyhow::ensure!(r.status().is_success(), "search: {}", r.status());
        let body: serde_json::Value = r.json().await?;
        search.push(t.elapsed().as_secs_f64() * 1e3);
        hits += body["data"].as_array().map_or(0, Vec::len);
        let url = format!(
            "{}/api/v3/trace-summaries?query.serviceName={service}{v3_filter}&query.startTimeMin={v3_min}&query.startTimeMax={v3_max}&query.searchDepth=20",
            a.query,
        );
        let t = Instant::now();
        let r = http.get(url).send().await?;
        // api_v3 answers a search without a match with 404.
        anyhow::ensure!(r.status().is_success() || r.status() == 404, "summaries: {}", r.status());
        let body: serde_json::Value = r.json().await?;
        summaries.push(t.elapsed().as_secs_f64() * 1e3);
        summary_hits += body["summaries"].as_array().map_or(0, Vec::len);
    }
    summaries.sort_by(f64::total_cmp);
    search.sort_by(f64::total_cmp);
    let hit_ratio = |from: (f64, f64), to: (f64, f64)| {
        let (h, m) = (to.0 - from.0, to.1 - from.1);
        if h + m > 0.0 { h / (h + m) } else { 0.0 }
    };
    let (rss, hwm) = a.pid.map(rss_kib).unwrap_or((0, 0));
    let report = json!({
        "spans": sent, "already_loaded": a.already_loaded,
        "send_secs": (!a.already_loaded).then_some(send_secs), "ingest_secs": (!a.already_loaded).then_some(ingest_secs),
        "ingest_spans_per_sec": (!a.already_loaded).then(|| sent as f64 / ingest_secs),
        "trace_by_id_ms": { "p50": percentile(&by_id, 0.5), "p99": percentile(&by_id, 0.99), "max": percentile(&by_id, 1.0), "samples": by_id.len(), "distinct_traces": ids.len(), "cache_hit_ratio": hit_ratio(cache_before, cache_after_cold) },
        "trace_by_id_hot_ms": { "p50": percentile(&by_id_hot, 0.5), "p99": percentile(&by_id_hot, 0.99), "max": percentile(&by_id_hot, 1.0), "samples": by_id_hot.len(), "distinct_traces": hot.len(), "cache_hit_ratio": hit_ratio(cache_after_cold, cache_after_hot) },
        "search_ms": { "p50": percentile(&search, 0.5), "p99": percentile(&search, 0.99), "max": percentile(&search, 1.0), "samples": search.len(), "mean_hits": hits as f64 / search.len().max(1) as f64 },
        "search_summaries_ms": { "p50": percentile(&summaries, 0.5), "p99": percentile(&summaries, 0.99), "max": percentile(&summaries, 1.0), "samples": summaries.len(), "mean_hits": summary_hits as f64 / summaries.len().max(1) as f64 },
        "rss_kib": rss, "rss_peak_kib": hwm,
    });
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    latency_svg(&a.report.with_extension("svg"), &report)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Sends `a.synthetic` spans of the generator, spread over the hour before now; returns the spans sent and up to
/// 100,000 of their trace IDs.
async fn load_synthetic(a: &QueryArgs, http: &reqwest::Client, start_ns: u64) -> anyhow::Result<(usize, Vec<TraceId>)> {
    let mut sample = Generator::new(a.seed, start_ns, 1);
    let sample_spans: usize = (0..2000).map(|_| sample.next_trace().len()).sum();
    let traces_per_sec = ((a.synthetic * 2000 / sample_spans.max(1)) as u64 / 3600).max(1);
    let mut g = Generator::new(a.seed, start_ns, traces_per_sec);
    let mut sent = 0usize;
    let mut ids: Vec<TraceId> = Vec::new();
    let mut inflight = tokio::task::JoinSet::new();
    while sent < a.synthetic {
        let mut batch = Vec::new();
        while batch.len() < 2000 && sent < a.synthetic {
            let t = g.next_trace();
            sent += t.len();
            if ids.len() < 100_000 {
                ids.push(t[0].trace_id);
            }
            batch.extend(t);
        }
        if a.already_loaded {
            continue;
        }
        let body = ExportTraceServiceRequest { resource_spans: to_otlp(&batch) }.encode_to_vec();
        while inflight.len() >= a.concurrency {
            inflight.join_next().await.transpose()?.transpose()?;
        }
        let (http, url) = (http.clone(), format!("{}/v1/traces", a.otlp_http));
        inflight.spawn(async move {
            let r = http.post(url).header("content-type", "application/x-protobuf").body(body).send().await?;
            anyhow::ensure!(r.status().is_success(), "export failed: {}", r.status());
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = inflight.join_next().await {
        r??;
    }
    Ok((sent, ids))
}

/// Sends the `--dataset` files (shifted to end now) in requests of 1,000 spans; returns the spans sent, up to
/// 100,000 trace IDs and the services.
async fn load_dataset(a: &QueryArgs, http: &reqwest::Client) -> anyhow::Result<(usize, Vec<TraceId>, Vec<String>)> {
    let mut all = Vec::new();
    for f in &a.dataset {
        all.extend(formats::read_file(f, None).with_context(|| format!("reading {}", f.display()))?);
    }
    formats::shift_to_end_at(&mut all, skein_model::now_nanos());
    let mut services = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut sent = 0;
    let mut batch = Vec::new();
    let mut batch_spans = 0;
    for rs in all {
        let service = rs.resource.as_ref().into_iter().flat_map(|r| &r.attributes).find(|kv| kv.key == "service.name");
        if let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(name)) =
            service.and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
        {
            services.insert(name.clone());
        }
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            if ids.len() < 100_000
                && let Ok(id) = <[u8; 16]>::try_from(span.trace_id.as_slice())
            {
                ids.insert(TraceId(id));
            }
        }
        batch_spans += rs.scope_spans.iter().map(|s| s.spans.len()).sum::<usize>();
        batch.push(rs);
        if batch_spans >= 1000 {
            sent += batch_spans;
            send_otlp(http, a, std::mem::take(&mut batch)).await?;
            batch_spans = 0;
        }
    }
    sent += batch_spans;
    if !a.already_loaded && !batch.is_empty() {
        send_otlp(http, a, batch).await?;
    }
    Ok((sent, ids.into_iter().collect(), services.into_iter().collect()))
}

async fn send_otlp(
    http: &reqwest::Client,
    a: &QueryArgs,
    resource_spans: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) -> anyhow::Result<()> {
    if a.already_loaded {
        return Ok(());
    }
    let body = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
    let r = http
        .post(format!("{}/v1/traces", a.otlp_http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "export failed: {}", r.status());
    Ok(())
}

/// Bars of p50 and p99 per query kind of a `skein-bench query` report, with the goals of issue #23 as ticks.
fn latency_svg(path: &std::path::Path, report: &serde_json::Value) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let kinds = [
        ("trace_by_id_ms", "trace by ID", 5.0),
        ("search_ms", "search, full traces", 40.0),
        ("search_summaries_ms", "search, summaries", 10.0),
    ];
    let y_max =
        kinds.iter().flat_map(|(k, _, goal)| [report[*k]["p99"].as_f64().unwrap_or(0.0), *goal]).fold(1.0, f64::max)
            * 1.2;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!("Query latency at {} spans (p50, p99; black tick: goal p99)", report["spans"]);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..kinds.len() as f64, 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(kinds.len() * 2 + 1)
        // Label only the ticks at bar-group centres (i + 0.5).
        .x_label_formatter(&|x| {
            let centre = (x.fract() - 0.5).abs() < 0.01;
            if centre { kinds.get(x.floor() as usize).map_or("", |k| k.1).to_string() } else { String::new() }
        })
        .y_desc("ms")
        .draw()?;
    for (q, (quantile, color)) in
        [("p50", RGBColor(90, 140, 200)), ("p99", RGBColor(220, 100, 40))].into_iter().enumerate()
    {
        chart
            .draw_series(kinds.iter().enumerate().map(|(i, (k, _, _))| {
                let x0 = i as f64 + 0.15 + q as f64 * 0.35;
                Rectangle::new([(x0, 0.0), (x0 + 0.33, report[*k][quantile].as_f64().unwrap_or(0.0))], color.filled())
            }))?
            .label(quantile)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.draw_series(kinds.iter().enumerate().map(|(i, (_, _, goal))| {
        PathElement::new(vec![(i as f64 + 0.1, *goal), (i as f64 + 0.9, *goal)], BLACK.stroke_width(2))
    }))?;
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// The OpenTelemetry Collector testbed's trace load (`testbed/testbed/data_providers.go`,
/// `perfTestDataProvider.GenerateTraces`): every span its own trace, kind CLIENT, named `load-generator-span`,
/// 1 ms long, with `load_generator.span_seq_num` and `load_generator.trace_seq_num` attributes, under one
/// resource.
fn testbed_batch(seq: &mut u64, spans: usize, rng: &mut skein_datasets::synthetic::Rng) -> ExportTraceServiceRequest {
    use skein_proto::otlp_common::{AnyValue, KeyValue, any_value};
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let int = |k: &str, v: i64| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        key_strindex: 0,
    };
    let batch_index = *seq as i64;
    let spans = (0..spans)
        .map(|i| {
            *seq += 1;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            trace_id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            skein_proto::otlp_trace::Span {
                trace_id: trace_id.to_vec(),
                span_id: rng.next_u64().max(1).to_le_bytes().to_vec(),
                name: "load-generator-span".into(),
                kind: 3,
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1_000_000,
                attributes: vec![
                    int("load_generator.span_seq_num", i as i64),
                    int("load_generator.trace_seq_num", batch_index),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(skein_proto::otlp_resource::Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("load-generator".into())) }),
                    key_strindex: 0,
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    }
}

/// A pool of pre-encoded export requests for one ingest client. Each send copies one body and overwrites the first
/// 8 bytes of every trace ID in it with (client, round), so every request carries new traces while the client
/// spends its CPU on memcpy instead of building and encoding spans (the client shares the machine with the
/// collector).
struct Source {
    bodies: Vec<(Vec<u8>, Vec<usize>, usize)>,
    next: usize,
    round: u64,
    client: u64,
}

/// Where each distinct trace ID occurs in an encoded request.
fn trace_id_offsets(body: &[u8], req: &ExportTraceServiceRequest) -> Vec<usize> {
    let mut ids: Vec<&[u8]> = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.trace_id.as_slice())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let mut at = 0;
        while let Some(p) = body[at..].windows(id.len()).position(|w| w == id) {
            out.push(at + p);
            at += p + id.len();
        }
    }
    out
}

impl Source {
    fn new(payload: Payload, spans: usize, client: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut rng = skein_datasets::synthetic::Rng::new(0x1b5 ^ client.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut synthetic = Generator::new(42 + client, now, 2000);
        let mut pending: Vec<Span> = Vec::new();
        let mut seq = 0;
        let bodies = (0..64)
            .map(|_| {
                let req = match payload {
                    Payload::Testbed => testbed_batch(&mut seq, spans, &mut rng),
                    Payload::Synthetic => {
                        while pending.len() < spans {
                            pending.extend(synthetic.next_trace());
                        }
                        let rest = pending.split_off(spans);
                        let batch = std::mem::replace(&mut pending, rest);
                        ExportTraceServiceRequest { resource_spans: to_otlp(&batch) }
                    }
                };
                let n = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
                let body = req.encode_to_vec();
                let offsets = trace_id_offsets(&body, &req);
                (body, offsets, n)
            })
            .collect();
        Self { bodies, next: 0, round: 0, client }
    }

    /// The next request body and its span count.
    fn next(&mut self) -> (Vec<u8>, usize) {
        let (body, offsets, n) = &self.bodies[self.next];
        let mut out = body.clone();
        let prefix = (self.client << 48 | self.round).to_be_bytes();
        for &o in offsets {
            out[o..o + 8].copy_from_slice(&prefix);
        }
        self.next += 1;
        if self.next == self.bodies.len() {
            self.next = 0;
            self.round += 1;
        }
        (out, *n)
    }
}

/// Sends pre-encoded `ExportTraceServiceRequest` bytes.
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = skein_proto::otlp_collector_trace::ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = skein_proto::otlp_collector_trace::ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        Self::Item::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime is the 14th field overall, stime the 15th.
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let spans_acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..a.clients {
        let (stop, measuring, spans_acked, refused) =
            (stop.clone(), measuring.clone(), spans_acked.clone(), refused.clone());
        let endpoint = a.endpoint.clone();
        let (payload, batch) = (a.payload, a.batch_spans);
        tasks.spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect().await?;
            let mut client = tonic::client::Grpc::new(channel);
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            );
            let mut source = Source::new(payload, batch, c as u64);
            let mut latencies_ms = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (body, n) = source.next();
                let t = Instant::now();
                client.ready().await?;
                match client.unary(tonic::Request::new(body), path.clone(), RawCodec).await {
                    Ok(_) => {
                        if measuring.load(Ordering::Relaxed) {
                            latencies_ms.push((Instant::now(), t.elapsed().as_secs_f64() * 1e3, n));
                            spans_acked.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                    Err(st) if st.code() == tonic::Code::ResourceExhausted => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(st) => anyhow::bail!("export failed: {st}"),
                }
            }
            Ok::<_, anyhow::Error>(latencies_ms)
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks0 = a.pid.map(cpu_ticks).unwrap_or(0);
    measuring.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.duration_s)).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = t0.elapsed().as_secs_f64();
    let ticks1 = a.pid.map(cpu_ticks).unwrap_or(0);
    let acked = spans_acked.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut acks: Vec<(Instant, f64, usize)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        acks.extend(r??);
    }
    // Per second of the run: spans acknowledged and the p99 acknowledgement latency of that second.
    let seconds = a.duration_s.max(1) as usize;
    let mut per_second: Vec<(u64, Vec<f64>)> = vec![(0, Vec::new()); seconds];
    for (at, ms, n) in &acks {
        let i = (at.saturating_duration_since(t0).as_secs() as usize).min(seconds - 1);
        per_second[i].0 += *n as u64;
        per_second[i].1.push(*ms);
    }
    let timeline: Vec<serde_json::Value> = per_second
        .into_iter()
        .enumerate()
        .map(|(i, (spans, mut ms))| {
            ms.sort_by(f64::total_cmp);
            json!({ "second": i, "spans": spans, "p99_ack_ms": percentile(&ms, 0.99) })
        })
        .collect();
    let mut latencies: Vec<f64> = acks.iter().map(|(_, ms, _)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    // The ceiling: decoding the same kind of batches from protobuf, on every core, in this process.
    let mut source = Source::new(a.payload, a.batch_spans, 999);
    let bodies: Vec<Vec<u8>> = (0..500).map(|_| source.next().0).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let decode_secs = 3.0;
    let bodies = std::sync::Arc::new(bodies);
    let decoded: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cores)
            .map(|_| {
                let bodies = bodies.clone();
                s.spawn(move || {
                    let t = Instant::now();
                    let mut spans = 0u64;
                    while t.elapsed().as_secs_f64() < decode_secs {
                        for b in bodies.iter().take(50) {
                            if let Ok(r) = ExportTraceServiceRequest::decode(b.as_slice()) {
                                spans += r
                                    .resource_spans
                                    .iter()
                                    .flat_map(|x| &x.scope_spans)
                                    .map(|x| x.spans.len() as u64)
                                    .sum::<u64>();
                            }
                        }
                    }
                    spans
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let (_, hwm) = a.pid.map(rss_kib).unwrap_or((0, 0));
    let spans_per_s = acked as f64 / elapsed;
    let ceiling = decoded as f64 / decode_secs;
    let server_cpu_secs = (ticks1 - ticks0) as f64 / ticks_per_sec;
    let report = json!({
        "spans_per_s": spans_per_s,
        "server_cpu_seconds_per_million_spans": (a.pid.is_some() && acked > 0).then(|| server_cpu_secs / (acked as f64 / 1e6)),
        "decode_ceiling_spans_per_s": ceiling,
        "fraction_of_ceiling": spans_per_s / ceiling.max(1.0),
        "p50_ack_ms": percentile(&latencies, 0.5),
        "p99_ack_ms": percentile(&latencies, 0.99),
        "cpu_percent": if a.pid.is_some() { (ticks1 - ticks0) as f64 / ticks_per_sec / elapsed * 100.0 } else { 0.0 },
        "rss_bytes_peak": hwm * 1024,
        "refused_requests": refused.load(Ordering::SeqCst),
        "clients": a.clients, "batch_spans": a.batch_spans, "duration_s": elapsed,
        "payload": format!("{:?}", a.payload).to_lowercase(), "cores": cores,
        "timeline": timeline,
    });
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    ingest_svg(&a.report.with_extension("svg"), &report)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Plots an ingest run ([`ingest`]'s report): spans acknowledged per second (upper panel) and the p99
/// acknowledgement latency of each second (lower panel).
fn ingest_svg(path: &std::path::Path, report: &serde_json::Value) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let timeline = report["timeline"].as_array().cloned().unwrap_or_default();
    let point = |field: &str| -> Vec<(f64, f64)> {
        timeline.iter().map(|p| (p["second"].as_f64().unwrap_or(0.0), p[field].as_f64().unwrap_or(0.0))).collect()
    };
    let (throughput, ack) = (point("spans"), point("p99_ack_ms"));
    let t_max = throughput.iter().map(|p| p.0 + 1.0).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Ingest ({} payload, {} clients): {:.0} spans/s, ack p99 {:.1} ms, {:.1} server CPU-s per M spans",
        report["payload"].as_str().unwrap_or(""),
        report["clients"],
        report["spans_per_s"].as_f64().unwrap_or(0.0),
        report["p99_ack_ms"].as_f64().unwrap_or(0.0),
        report["server_cpu_seconds_per_million_spans"].as_f64().unwrap_or(0.0)
    );
    let root = root.titled(&caption, ("sans-serif", 18))?;
    let (upper, lower) = root.split_vertically(300);
    for (area, points, y_desc, color) in [
        (&upper, &throughput, "spans acknowledged / s", RGBColor(90, 140, 200)),
        (&lower, &ack, "ack p99 of the second, ms", RGBColor(220, 100, 40)),
    ] {
        let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
        chart.configure_mesh().x_desc("seconds").y_desc(y_desc).draw()?;
        chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// Starts `skein-all-in-one` and `skein-agent` (the binaries next to this one), sends `spans_per_s` through the
/// agent in `batch_spans` requests, and samples the agent's CPU ticks and RSS from `/proc`.
async fn agent(a: AgentArgs) -> anyhow::Result<()> {
    use skein_e2e::{Agent, AllInOne, bin};
    let dir = tempfile::tempdir()?;
    let collector = AllInOne::start(&dir.path().join("collector"), 1000);
    let spill = dir.path().join("spill");
    let mut args = vec!["--collector".to_string(), collector.otlp_grpc.clone()];
    args.extend(["--spill-dir".to_string(), spill.to_string_lossy().into_owned()]);
    args.extend(a.agent_args.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let binary = a.agent_bin.clone().unwrap_or_else(|| bin("skein-agent"));
    let agent = Agent::start_bin(&binary, &args);
    let pid = agent.pid();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle_kib = rss_kib(pid).0;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.otlp_grpc))?.connect().await?;
    let mut client = tonic::client::Grpc::new(channel);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let mut source = Source::new(a.payload, a.batch_spans, 1);
    let interval = Duration::from_secs_f64(a.batch_spans as f64 / a.spans_per_s.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let warmup = Duration::from_secs(5);
    let measure = Duration::from_secs(a.duration_s);
    let start = Instant::now();
    let (mut measured_start, mut ticks0, mut sent) = (None, 0, 0u64);
    let mut rss_samples = Vec::new();
    let mut last_sample = Instant::now();
    let mut latencies = Vec::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        if measured_start.is_none() && now - start >= warmup {
            measured_start = Some(now);
            ticks0 = cpu_ticks(pid);
        }
        if measured_start.is_some_and(|m| now - m >= measure) {
            break;
        }
        let (body, n) = source.next();
        client.ready().await?;
        let t = Instant::now();
        client.unary(tonic::Request::new(body), path.clone(), RawCodec).await?;
        if measured_start.is_some() {
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            sent += n as u64;
            if last_sample.elapsed() >= Duration::from_secs(1) {
                rss_samples.push(rss_kib(pid).0);
                last_sample = Instant::now();
            }
        }
    }
    let elapsed = measured_start.map_or(0.0, |m| m.elapsed().as_secs_f64());
    let cpu_percent = (cpu_ticks(pid) - ticks0) as f64 / 100.0 / elapsed.max(1e-9) * 100.0;
    let (_, hwm) = rss_kib(pid);
    let steady: Vec<u64> = rss_samples[rss_samples.len() / 2..].to_vec();
    let rss_steady_kib = steady.iter().sum::<u64>() / steady.len().max(1) as u64;
    latencies.sort_by(f64::total_cmp);
    let metrics = agent.metrics();
    let forwarded = metric_in(&metrics, "skein_agent_spans_forwarded_total");
    let dropped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("skein_agent_spans_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b);
    let report = json!({
        "spans_per_s": sent as f64 / elapsed.max(1e-9),
        "cpu_percent": cpu_percent,
        "rss_bytes_peak": hwm * 1024,
        "rss_bytes_steady": rss_steady_kib * 1024,
        "rss_bytes_idle": rss_idle_kib * 1024,
        "binary_bytes": std::fs::metadata(&binary)?.len(),
        "binary": binary.display().to_string(),
        "export_p50_ms": percentile(&latencies, 0.5),
        "export_p99_ms": percentile(&latencies, 0.99),
        "spans_forwarded": forwarded,
        "spans_dropped": dropped,
        "batch_spans": a.batch_spans,
        "duration_s": elapsed,
        "payload": format!("{:?}", a.payload).to_lowercase(),
        "agent_args": a.agent_args,
    });
    drop(agent);
    drop(collector);
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn soak(a: SoakArgs) -> anyhow::Result<()> {
    use skein_e2e::{Agent, AllInOne};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir()?;
    // The harness's process handles use blocking HTTP clients: made (and dropped) off the async workers.
    let (data, spill, idle) = (dir.path().join("collector"), dir.path().join("spill"), a.trace_idle_ms);
    let (collector, agent) = tokio::task::spawn_blocking(move || {
        let collector = AllInOne::start(&data, idle);
        let agent = Agent::start(&["--collector", &collector.otlp_grpc, "--spill-dir", &spill.to_string_lossy()]);
        (Arc::new(collector), Arc::new(agent))
    })
    .await?;
    let pids = [
        ("app (load generator)", std::process::id()),
        ("skein-agent", agent.pid()),
        ("skein-all-in-one", collector.pid()),
    ];
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );

    // The app: `clients` connections, each at its share of the rate.
    let mut senders = Vec::new();
    for c in 0..a.clients.max(1) {
        let (endpoint, sent, stop, path) =
            (format!("http://{}", agent.otlp_grpc), sent.clone(), stop.clone(), path.clone());
        let (payload, batch, rate) = (a.payload, a.batch_spans, a.spans_per_s as f64 / a.clients.max(1) as f64);
        senders.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)?.connect().await?;
            let mut client = tonic::client::Grpc::new(channel);
            let mut source = Source::new(payload, batch, 100 + c as u64);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate.max(1.0)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut failures = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (body, n) = source.next();
                client.ready().await?;
                match client.unary(tonic::Request::new(body), path.clone(), RawCodec).await {
                    Ok(_) => {
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => failures += 1,
                }
            }
            anyhow::Ok(failures)
        }));
    }

    // One probe trace (3 spans) per second: sent to the agent, then polled on the query API until all 3 are back.
    let probes = {
        let (agent, collector, sent, stop) = (agent.clone(), collector.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", agent.otlp_grpc))?.connect().await?;
            let mut client = skein_proto::trace_service_client::TraceServiceClient::new(channel);
            let mut waits = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                client.export(skein_e2e::otlp::request_for("soak-probe", i, 1, 3, 0)).await?;
                sent.fetch_add(3, Ordering::Relaxed);
                let (c, id) = (collector.clone(), skein_e2e::otlp::trace_hex(i, 0));
                waits.push(tokio::spawn(async move {
                    loop {
                        let (c, url) = (c.clone(), format!("/api/traces/{id}"));
                        let (status, body) = tokio::task::spawn_blocking(move || c.get(&url)).await?;
                        if status == 200 && body["data"][0]["spans"].as_array().map_or(0, Vec::len) == 3 {
                            return anyhow::Ok(t0.elapsed().as_secs_f64() * 1e3);
                        }
                        if t0.elapsed() > Duration::from_secs(120) {
                            anyhow::bail!("probe {id} not queryable after 120 s");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
                i += 1;
                tokio::time::sleep_until((t0 + Duration::from_secs(1)).into()).await;
            }
            let mut latencies = Vec::new();
            for w in waits {
                latencies.push(w.await??);
            }
            anyhow::Ok(latencies)
        })
    };

    // RSS of every process, once a second.
    let mut rss: Vec<Vec<(f64, f64)>> = vec![Vec::new(); pids.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(a.duration_s) {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        for (i, (_, pid)) in pids.iter().enumerate() {
            rss[i].push((t, rss_kib(*pid).0 as f64 / 1024.0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sending_s = started.elapsed().as_secs_f64();
    let mut app_failures = 0;
    for s in senders {
        app_failures += s.await??;
    }
    let mut e2e = probes.await??;
    let sent = sent.load(Ordering::Relaxed);
    // Drain: everything the agent holds is forwarded, every trace written.
    let (a2, c2) = (agent.clone(), collector.clone());
    let (agent_metrics, collector_metrics) = tokio::task::spawn_blocking(move || {
        a2.wait_forwarded(sent, Duration::from_secs(300));
        c2.wait_until_written();
        (a2.metrics(), c2.metrics())
    })
    .await?;
    let stored = skein_e2e::metric_sum_in(&collector_metrics, "skein_spans_written_total") as u64;
    let dropped = skein_e2e::metric_sum_in(&agent_metrics, "skein_agent_spans_dropped_total");
    let refused = skein_e2e::metric_sum_in(&collector_metrics, "skein_spans_refused_total");
    e2e.sort_by(f64::total_cmp);
    let summary = |v: &[(f64, f64)]| {
        let mbs: Vec<f64> = v.iter().map(|p| p.1).collect();
        let half = &mbs[mbs.len() / 2..];
        json!({
            "start_mib": mbs.first().copied().unwrap_or(0.0),
            "peak_mib": mbs.iter().copied().fold(0.0, f64::max),
            "end_mib": mbs.last().copied().unwrap_or(0.0),
            "second_half_mean_mib": half.iter().sum::<f64>() / half.len().max(1) as f64,
        })
    };
    let report = json!({
        "spans_per_s_target": a.spans_per_s,
        "spans_per_s": sent as f64 / sending_s.max(1e-9),
        "duration_s": sending_s,
        "spans_sent": sent,
        "spans_stored": stored,
        "spans_lost": sent as i64 - stored as i64,
        "agent_spans_dropped": dropped,
        "collector_spans_refused_then_retried": refused,
        "app_export_failures": app_failures,
        "e2e_probes": e2e.len(),
        "e2e_p50_ms": percentile(&e2e, 0.5),
        "e2e_p99_ms": percentile(&e2e, 0.99),
        "e2e_max_ms": e2e.last().copied().unwrap_or(0.0),
        "trace_idle_ms": a.trace_idle_ms,
        "rss": pids.iter().zip(&rss).map(|((name, _), v)| json!({"process": name, "summary": summary(v)})).collect::<Vec<_>>(),
        "rss_samples_mib": pids.iter().zip(&rss).map(|((name, _), v)| (name.to_string(), json!(v.iter().map(|p| p.1).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "payload": format!("{:?}", a.payload).to_lowercase(),
    });
    tokio::task::spawn_blocking(move || drop((agent, collector))).await?;
    rss_svg(&a.svg, &pids.iter().map(|p| p.0).collect::<Vec<_>>(), &rss, &report)?;
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "spans_sent": sent, "spans_stored": stored, "spans_lost": sent as i64 - stored as i64, "agent_spans_dropped": dropped,
            "e2e_p50_ms": report["e2e_p50_ms"], "e2e_p99_ms": report["e2e_p99_ms"], "rss": report["rss"],
        }))?
    );
    eprintln!("report: {} and {}", a.report.display(), a.svg.display());
    anyhow::ensure!(stored == sent && dropped == 0.0, "lost {} spans, dropped {dropped}", sent as i64 - stored as i64);
    Ok(())
}

/// Plots RSS (MiB) over time, one line per process.
fn rss_svg(
    path: &PathBuf,
    names: &[&str],
    series: &[Vec<(f64, f64)>],
    report: &serde_json::Value,
) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let colors = [RGBColor(90, 140, 200), RGBColor(220, 100, 40), RGBColor(60, 160, 90)];
    let t_max = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let y_max = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Soak: RSS per process at {:.0} spans/s — {} sent, {} stored, e2e p99 {:.0} ms",
        report["spans_per_s"].as_f64().unwrap_or(0.0),
        report["spans_sent"],
        report["spans_stored"],
        report["e2e_p99_ms"].as_f64().unwrap_or(0.0)
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart.configure_mesh().x_desc("seconds").y_desc("RSS, MiB").draw()?;
    for (i, (name, points)) in names.iter().zip(series).enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

/// An `AdmissionReview` v1 for a Deployment's pod, as the API server sends it; `inject` names the pipeline.
fn pod_review(i: usize, inject: &str) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "checkout-7d4b9c8f6-", "namespace": "shop", "annotations": {"skein.dev/inject": inject},
                     "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d4b9c8f6"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d4b9c8f6",
                                          "uid": "8f0e4c1a-0d7b-4f5e-9a53-0c3c1d2e4f5a", "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/checkout:1.4.2",
                                 "env": [{"name": "LOG_LEVEL", "value": "info"}],
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                 "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"}],
                 "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default"}
    });
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {"uid": format!("00000000-0000-0000-0000-{i:012}"),
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "shop", "operation": "CREATE",
                    "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                    "object": pod, "oldObject": null, "dryRun": false}
    }))
    .unwrap_or_default()
}

type AdmissionSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>;

async fn admission_connect(
    addr: std::net::SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<AdmissionSender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let stream = tls.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One admission call; checks the answer carries the review's uid.
async fn admission_call(sender: &mut AdmissionSender, body: Vec<u8>) -> anyhow::Result<()> {
    use http_body_util::BodyExt as _;
    let req = hyper::Request::post("/mutate-pods")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let bytes = resp.into_body().collect().await?.to_bytes();
    let review: serde_json::Value = serde_json::from_slice(&bytes)?;
    anyhow::ensure!(review["response"]["patch"].is_string(), "no base64 patch: {review}");
    Ok(())
}

async fn admission(a: AdmissionArgs) -> anyhow::Result<()> {
    use skein_operator::webhook::{self, certs};
    let names = vec!["127.0.0.1".to_string()];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let bundle = certs::issue(&certs::CertSettings { names, lifetime_secs: 3600, ca_lifetime_secs: 86400 }, None, now)?;
    let tp: skein_operator::crd::TracingPipeline = serde_json::from_value(json!({
        "apiVersion": "skein.dev/v1alpha1", "kind": "TracingPipeline",
        "metadata": {"name": "prod", "namespace": "shop", "uid": "u", "generation": 1},
        "spec": {"sampling": {"head": {"default_strategy": {"type": "probabilistic", "param": 0.1}}},
                 "redaction": [{"key": "(?i)^authorization$", "action": "mask"}]},
        "status": {"conditions": [{"type": "ConfigurationGenerated", "status": "True", "reason": "Generated",
                                   "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))?;
    let ns = serde_json::from_value(json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                                           "metadata": {"name": "shop"}}))?;
    let (pipelines, namespaces) = webhook::fixed_caches(vec![tp], vec![ns]);
    let (tx, mut rx) = tokio::sync::mpsc::channel(skein_operator::events::QUEUE_EVENTS);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let metrics = std::sync::Arc::new(skein_operator::metrics::Metrics::default());
    let hook = std::sync::Arc::new(webhook::Webhook {
        pipelines,
        namespaces,
        defaults: skein_operator::resources::Defaults::default(),
        native_sidecar: true,
        metrics: metrics.clone(),
        events: skein_operator::events::Queue::to_channel(tx, metrics.clone()),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(certs::server_config(&bundle)?);
    tokio::spawn(webhook::serve(listener, tls, webhook::router(hook), axum_server::Handle::new()));
    let connector = tokio_rustls::TlsConnector::from(certs::client_config(&bundle.ca_bundle_pem)?);

    // Half the pods name the pipeline (injected), half a missing one (skipped with the status annotation).
    let body = |i: usize| pod_review(i, if i.is_multiple_of(2) { "prod" } else { "missing" });
    let per_conn = a.requests.div_ceil(a.connections.max(1));
    let mut tasks = Vec::new();
    for c in 0..a.connections.max(1) {
        let mut sender = admission_connect(addr, &connector).await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..1000 / a.connections.max(1) {
                admission_call(&mut sender, body(i)).await?;
            }
            let mut latencies = Vec::with_capacity(per_conn);
            for i in 0..per_conn {
                let payload = body(c * per_conn + i);
                let started = Instant::now();
                admission_call(&mut sender, payload).await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let started = Instant::now();
    let mut keepalive = Vec::new();
    for t in tasks {
        keepalive.extend(t.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut fresh = Vec::with_capacity(a.new_connections);
    for i in 0..a.new_connections {
        let started = Instant::now();
        let mut sender = admission_connect(addr, &connector).await?;
        admission_call(&mut sender, body(i)).await?;
        fresh.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    keepalive.sort_by(f64::total_cmp);
    fresh.sort_by(f64::total_cmp);
    let max = |v: &[f64]| v.last().copied().unwrap_or_default();
    let report = json!({
        "requests": keepalive.len(),
        "connections": a.connections,
        "requests_per_s": keepalive.len() as f64 / elapsed.max(1e-9),
        "keepalive_p50_ms": percentile(&keepalive, 0.5),
        "keepalive_p99_ms": percentile(&keepalive, 0.99),
        "keepalive_max_ms": max(&keepalive),
        "new_connection_requests": fresh.len(),
        "new_connection_p50_ms": percentile(&fresh, 0.5),
        "new_connection_p99_ms": percentile(&fresh, 0.99),
        "server_side_counts": metrics.render().lines().filter(|l| l.starts_with("skein_operator_admissions_total")).collect::<Vec<_>>(),
        "request_bytes": body(0).len(),
    });
    std::fs::write(&a.report, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Storage(a) => storage(a).await,
        Cmd::Query(a) => query(a).await,
        Cmd::Ingest(a) => ingest(a).await,
        Cmd::Agent(a) => agent(a).await,
        Cmd::Admission(a) => admission(a).await,
        Cmd::Soak(a) => soak(a).await,
    }
}
