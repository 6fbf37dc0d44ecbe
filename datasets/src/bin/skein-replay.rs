//! `skein-replay`: sends trace datasets to an OTLP/gRPC endpoint.
//!
//! Reads OTLP JSON, Jaeger JSON (API responses and Elasticsearch documents), Zipkin v2 JSON and Nezha CSV
//! (detected from content, or `--format`), re-batches spans into export requests of `--batch-spans`, and sends
//! them at `--rate` spans/s (0 = as fast as accepted) with `--concurrency` requests in flight. Prints a summary of
//! spans read, sent, accepted and rejected.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use skein_datasets::formats::{self, Format};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans};
use skein_proto::trace_service_client::TraceServiceClient;

/// Replays trace datasets into Skein (or any OTLP/gRPC receiver).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Dataset files, sent in the order given.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// OTLP/gRPC endpoint.
    #[arg(long, env = "SKEIN_REPLAY_ENDPOINT", default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Spans per second; 0 sends as fast as the endpoint accepts.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Move all timestamps so that the latest span ends now (relative timing is kept): the whole dataset lies in
    /// the default search window, which ends now.
    #[arg(long)]
    shift_to_now: bool,
    /// Input format; detected from the content when absent.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Maximum spans per export request.
    #[arg(long, default_value_t = 512)]
    batch_spans: usize,
    /// Export requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Splits resource spans into requests of at most `max` spans, keeping resources and scopes.
fn batches(all: Vec<ResourceSpans>, max: usize) -> Vec<(usize, ExportTraceServiceRequest)> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut current: Vec<ResourceSpans> = Vec::new();
    let mut count = 0;
    for rs in all {
        for ss in rs.scope_spans {
            for chunk in ss.spans.chunks(max) {
                if count + chunk.len() > max && count > 0 {
                    out.push((count, ExportTraceServiceRequest { resource_spans: std::mem::take(&mut current) }));
                    count = 0;
                }
                current.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    schema_url: rs.schema_url.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        schema_url: ss.schema_url.clone(),
                        spans: chunk.to_vec(),
                    }],
                });
                count += chunk.len();
            }
        }
    }
    if count > 0 {
        out.push((count, ExportTraceServiceRequest { resource_spans: current }));
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut all = Vec::new();
    for f in &args.files {
        all.extend(formats::read_file(f, args.format)?);
    }
    if args.shift_to_now {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        formats::shift_to_end_at(&mut all, u64::try_from(now)?);
    }
    let read: usize = all.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    let requests = batches(all, args.batch_spans);
    let client = TraceServiceClient::connect(args.endpoint.clone())
        .await
        .with_context(|| format!("connecting to {}", args.endpoint))?
        .max_encoding_message_size(64 * 1024 * 1024);

    let bar = indicatif::ProgressBar::new(read as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} spans {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let rate = args.rate;
    let mut scheduled = 0u64;
    let results = futures::stream::iter(requests.into_iter().map(|(n, req)| {
        let due = if rate > 0 { Some(started + Duration::from_secs_f64(scheduled as f64 / rate as f64)) } else { None };
        scheduled += n as u64;
        let mut client = client.clone();
        let bar = bar.clone();
        async move {
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            let mut backoff = Duration::from_millis(100);
            for attempt in 0..10 {
                match client.export(req.clone()).await {
                    Ok(resp) => {
                        bar.inc(n as u64);
                        let rejected = resp
                            .into_inner()
                            .partial_success
                            .map(|p| usize::try_from(p.rejected_spans).unwrap_or(0))
                            .unwrap_or(0);
                        return Ok::<_, String>((n, n - rejected.min(n), rejected));
                    }
                    Err(s)
                        if attempt < 9
                            && matches!(s.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) =>
                    {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(s) => return Err(format!("export failed: {}: {}", s.code(), s.message())),
                }
            }
            Err("export kept failing".to_string())
        }
    }))
    .buffer_unordered(args.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let (mut sent, mut accepted, mut rejected, mut failed) = (0usize, 0usize, 0usize, Vec::new());
    for r in results {
        match r {
            Ok((n, a, rj)) => {
                sent += n;
                accepted += a;
                rejected += rj;
            }
            Err(e) => failed.push(e),
        }
    }
    let rate = if elapsed > 0.0 { sent as f64 / elapsed } else { 0.0 };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"read": read, "sent": sent, "accepted": accepted, "rejected": rejected,
                "failed_requests": failed.len(), "elapsed_s": elapsed, "spans_per_s": rate})
        );
    } else {
        println!(
            "spans read {read}, sent {sent}, accepted {accepted}, rejected {rejected}, failed requests {}; \
             {elapsed:.2} s, {rate:.0} spans/s",
            failed.len()
        );
    }
    if let Some(first) = failed.first() {
        anyhow::bail!("{} export request(s) failed; first: {first}", failed.len());
    }
    Ok(())
}
