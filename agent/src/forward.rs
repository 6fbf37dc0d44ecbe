//! The forwarder: takes batches from the [`Buffer`], splits them by collector (rendezvous hashing by trace ID)
//! and by size (below the gRPC message limit), and sends them as zstd-compressed OTLP/gRPC exports with retries.
//!
//! Retry rules (OTLP spec, "Failures" and "OTLP/gRPC Throttling"): `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `CANCELLED` and transport errors mean the endpoint is unhealthy: retried with exponential backoff
//! and jitter, then the endpoint's circuit opens and its spans go to their next-choice collector.
//! `RESOURCE_EXHAUSTED` means the collector is alive but overloaded: the delay it asks for
//! (`google.rpc.RetryInfo`, a `retry-after` seconds header, or `grpc-retry-pushback-ms`) is honoured, otherwise
//! backoff; the spans stay with the same collector (moving them would split traces) and go back to the head of the
//! buffer if it keeps refusing. Any other status is a permanent rejection: the spans are dropped and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use skein_proto::otlp_grpc::EXPORT_PATH;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::buffer::{Buffer, Entry, Taken};
use crate::metrics::{Endpoint as EndpointLabel, Metrics, Reason};
use crate::route::{Breaker, Routes, Target, choose, trace_hash};

/// Forwarder settings (from the command line).
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// A batch is sent once it holds this many spans…
    pub batch_max_spans: u64,
    /// …or this many bytes…
    pub batch_max_bytes: usize,
    /// …or its oldest span has waited this long.
    pub batch_timeout: Duration,
    /// Largest export request (uncompressed protobuf bytes) sent to a collector; larger batches are split.
    pub max_request_bytes: usize,
    /// Attempts per request before an endpoint counts as unhealthy (1 while probing a tripped endpoint).
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with ±50 % jitter.
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// TLS to the collectors (`None`: plaintext).
    pub tls: Option<TlsFiles>,
}

/// PEM files for TLS to the collectors, read whenever a collector connection is set up: certificates that appear
/// after start (a Secret volume filled late) or are renewed apply to the next connection, and a missing file keeps
/// the endpoint down (spans wait in the buffer) instead of stopping the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle the collectors' certificates are verified against.
    pub ca: std::path::PathBuf,
    /// Client certificate chain and its private key, for collectors that require mutual TLS.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsFiles {
    /// The TLS client configuration from the files as they are now.
    ///
    /// # Errors
    /// A file cannot be read (its path and the OS error).
    pub fn load(&self) -> Result<ClientTlsConfig, String> {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
        let mut tls = ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)?));
        if let Some((cert, key)) = &self.client {
            tls = tls.identity(tonic::transport::Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(tls)
    }
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            batch_max_spans: 8192,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_timeout: Duration::from_millis(200),
            max_request_bytes: 4 * 1024 * 1024 - 64 * 1024,
            max_attempts: 3,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

struct Endpoint {
    target: Target,
    key: u64,
    breaker: Breaker,
    client: tonic::client::Grpc<Channel>,
}

/// Builds per-endpoint requests from spans in input order, keeping resource and scope grouping and starting a new
/// request before one would exceed the size limit.
struct RequestBuilder {
    done: Vec<ExportTraceServiceRequest>,
    current: ExportTraceServiceRequest,
    bytes: usize,
    last_group: Option<(usize, usize, usize)>,
}

/// Overhead of a nested message's tag and length prefix, bytes (upper bound).
const FRAME_BYTES: usize = 6;

impl RequestBuilder {
    fn new() -> Self {
        Self { done: Vec::new(), current: ExportTraceServiceRequest::default(), bytes: 0, last_group: None }
    }

    fn push(&mut self, group: (usize, usize, usize), rs: &ResourceSpans, ss: &ScopeSpans, span: Span, max: usize) {
        let sized = max != usize::MAX;
        let span_bytes = if sized { span.encoded_len() + FRAME_BYTES } else { 0 };
        if sized && self.bytes > 0 && self.bytes + span_bytes > max {
            self.done.push(std::mem::take(&mut self.current));
            self.bytes = 0;
            self.last_group = None;
        }
        if self.last_group.map(|g| (g.0, g.1)) != Some((group.0, group.1)) {
            let header = ResourceSpans {
                resource: rs.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: rs.schema_url.clone(),
            };
            self.bytes += if sized { header.encoded_len() + FRAME_BYTES } else { 0 };
            self.current.resource_spans.push(header);
            self.last_group = None;
        }
        if self.last_group != Some(group) {
            let header = ScopeSpans { scope: ss.scope.clone(), spans: Vec::new(), schema_url: ss.schema_url.clone() };
            self.bytes += if sized { header.encoded_len() + FRAME_BYTES } else { 0 };
            if let Some(r) = self.current.resource_spans.last_mut() {
                r.scope_spans.push(header);
            }
        }
        self.last_group = Some(group);
        if let Some(s) = self.current.resource_spans.last_mut().and_then(|r| r.scope_spans.last_mut()) {
            s.spans.push(span);
        }
        self.bytes += span_bytes;
    }

    fn finish(mut self) -> Vec<ExportTraceServiceRequest> {
        if !self.current.resource_spans.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// Splits requests by destination (`route(trace_id)` gives an index, or `None` to keep the span aside) and by
/// size (`max_request_bytes`; `usize::MAX` skips sizing). Returns the requests per destination index, and the spans with no destination as
/// requests of their own.
pub fn partition(
    requests: Vec<ExportTraceServiceRequest>,
    route: impl Fn(&[u8]) -> Option<usize>,
    max_request_bytes: usize,
) -> (BTreeMap<usize, Vec<ExportTraceServiceRequest>>, Vec<ExportTraceServiceRequest>) {
    let mut builders: BTreeMap<usize, RequestBuilder> = BTreeMap::new();
    let mut unrouted = RequestBuilder::new();
    for (q, mut req) in requests.into_iter().enumerate() {
        for (r, rs) in req.resource_spans.iter_mut().enumerate() {
            let mut scopes = std::mem::take(&mut rs.scope_spans);
            for (s, ss) in scopes.iter_mut().enumerate() {
                for span in std::mem::take(&mut ss.spans) {
                    let builder = match route(&span.trace_id) {
                        Some(i) => builders.entry(i).or_insert_with(RequestBuilder::new),
                        None => &mut unrouted,
                    };
                    builder.push((q, r, s), rs, ss, span, max_request_bytes);
                }
            }
        }
    }
    (builders.into_iter().map(|(i, b)| (i, b.finish())).collect(), unrouted.finish())
}

/// How one endpoint's share of a batch went.
#[derive(Debug, Default)]
struct Outcome {
    delivered_spans: u64,
    /// The endpoint failed every attempt (unreachable): these go to the next choice.
    unhealthy: Vec<Entry>,
    /// The endpoint kept refusing with `RESOURCE_EXHAUSTED`: these go back to the buffer, after `delay`.
    throttled: Vec<Entry>,
    delay: Duration,
}

/// One export request: buffered payloads sent back to back (concatenated protobuf messages merge, so the body is
/// one `ExportTraceServiceRequest` holding every entry's `resource_spans`), written straight from the entries'
/// buffers into the gRPC frame.
#[derive(Debug)]
struct Chunk {
    spans: u64,
    entries: Vec<Entry>,
}

impl Chunk {
    fn new(entries: Vec<Entry>) -> Self {
        let spans = entries.iter().map(|e| u64::from(e.spans)).sum();
        Self { spans, entries }
    }

    fn body(&self) -> Vec<Bytes> {
        self.entries.iter().map(|e| e.payload.clone()).collect()
    }
}

/// Packs entries into requests of at most `max_bytes`, without decoding; an entry larger than that on its own is
/// decoded and split by span.
fn chunks(entries: Vec<Entry>, max_bytes: usize) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut current: Vec<Entry> = Vec::new();
    let mut bytes = 0;
    for e in entries {
        if e.payload.len() > max_bytes {
            let Ok(req) = e.decode() else { continue };
            let (parts, _) = partition(vec![req], |_| Some(0), max_bytes);
            out.extend(parts.into_values().flatten().map(|part| Chunk::new(vec![Entry::encode(&part, e.dest)])));
            continue;
        }
        if bytes + e.payload.len() > max_bytes && !current.is_empty() {
            out.push(Chunk::new(std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes += e.payload.len();
        current.push(e);
    }
    if !current.is_empty() {
        out.push(Chunk::new(current));
    }
    out
}

/// Sends pre-encoded request bodies and decodes the `ExportTraceServiceResponse`.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<Bytes>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<Bytes>;
    type Error = Status;

    fn encode(&mut self, item: Vec<Bytes>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        for part in item {
            bytes::BufMut::put_slice(dst, &part);
        }
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed ExportTraceServiceResponse: {e}")))
    }
}

/// The delay a refusal asks for: `google.rpc.RetryInfo`, else `retry-after` (seconds), else
/// `grpc-retry-pushback-ms`.
pub fn requested_delay(status: &Status) -> Option<Duration> {
    if let Some(d) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        return Some(d);
    }
    let meta = status.metadata();
    if let Some(s) = meta.get("retry-after").and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(s));
    }
    meta.get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Exponential backoff with ±50 % jitter: `base × 2^attempt`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32, jitter_seed: u64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    // A fraction in [0.5, 1.5) from the seed (not cryptographic; spreads retries of many agents).
    let frac = 0.5 + (crate::route::weight(jitter_seed, 0x5eed) >> 11) as f64 / (1u64 << 53) as f64;
    exp.mul_f64(frac).min(max)
}

/// Whether a failed export may be retried: the OTLP spec's retryable codes (`CANCELLED`, `DEADLINE_EXCEEDED`,
/// `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS`), `RESOURCE_EXHAUSTED` (the collector sheds load with it),
/// and `UNKNOWN` raised by the client's own transport (a connection reset mid-request: no answer from the server).
pub fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss
        | Code::ResourceExhausted => true,
        Code::Unknown => std::error::Error::source(status).is_some() || status.message().contains("transport error"),
        _ => false,
    }
}

fn retry_reason(code: Code) -> &'static str {
    match code {
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource_exhausted",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::Aborted => "aborted",
        Code::Cancelled => "cancelled",
        Code::Unknown => "transport",
        _ => "other",
    }
}

async fn send_share(
    mut client: tonic::client::Grpc<Channel>,
    chunks: Vec<Chunk>,
    attempts: u32,
    config: ForwardConfig,
    metrics: Arc<Metrics>,
    seed: u64,
) -> Outcome {
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
    let mut out = Outcome::default();
    let mut queue = chunks.into_iter();
    while let Some(chunk) = queue.next() {
        let spans = chunk.spans;
        let mut attempt = 0;
        loop {
            let mut request = tonic::Request::new(chunk.body());
            request.set_timeout(config.request_timeout);
            let result = match client.ready().await {
                Ok(()) => client.unary(request, path.clone(), RawCodec).await,
                Err(e) => Err(Status::unavailable(format!("connecting: {e}"))),
            };
            match result {
                Ok(resp) => {
                    let rejected = resp.into_inner().partial_success.map_or(0, |p| p.rejected_spans.max(0) as u64);
                    metrics.drop_spans("rejected_by_collector", rejected);
                    metrics.export_result("ok");
                    out.delivered_spans += spans - rejected.min(spans);
                    break;
                }
                Err(status) => {
                    let code = status.code();
                    if !is_retryable(&status) && chunk.entries.len() > 1 {
                        // One malformed app request must not take the rest of the batch with it: resend alone.
                        let singles: Vec<Chunk> = chunk.entries.into_iter().map(|e| Chunk::new(vec![e])).collect();
                        queue = singles.into_iter().chain(queue).collect::<Vec<_>>().into_iter();
                        break;
                    }
                    if !is_retryable(&status) {
                        tracing::warn!(code = ?code, message = status.message(), spans, "collector rejected spans");
                        metrics.export_result("rejected");
                        metrics.drop_spans("rejected_by_collector", spans);
                        break;
                    }
                    metrics.export_result("retryable");
                    attempt += 1;
                    let delay = requested_delay(&status).unwrap_or_else(|| {
                        backoff(
                            config.backoff_base,
                            config.backoff_max,
                            attempt - 1,
                            seed.wrapping_add(u64::from(attempt)),
                        )
                    });
                    if attempt >= attempts {
                        let rest = std::iter::once(chunk).chain(queue).flat_map(|c| c.entries);
                        if code == Code::ResourceExhausted {
                            out.throttled.extend(rest);
                            out.delay = delay;
                        } else {
                            tracing::debug!(code = ?code, message = status.message(), "collector endpoint unhealthy");
                            out.unhealthy.extend(rest);
                        }
                        return out;
                    }
                    metrics.retries.get_or_create(&Reason { reason: retry_reason(code).into() }).inc();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    out
}

/// The forwarding loop and its endpoints.
pub struct Forwarder {
    buffer: Arc<Buffer>,
    metrics: Arc<Metrics>,
    config: ForwardConfig,
    routes: Arc<Routes>,
    targets: watch::Receiver<Vec<Target>>,
    endpoints: Vec<Endpoint>,
    seed: u64,
}

impl Forwarder {
    /// A forwarder for `buffer` to the collectors of `routes`.
    pub fn new(buffer: Arc<Buffer>, metrics: Arc<Metrics>, config: ForwardConfig, routes: Arc<Routes>) -> Self {
        let targets = routes.targets();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = u64::from(std::process::id()) ^ (now.as_nanos() as u64);
        Self { buffer, metrics, config, routes, targets, endpoints: Vec::new(), seed }
    }

    fn refresh_endpoints(&mut self) {
        if !self.targets.has_changed().unwrap_or(false) && !self.endpoints.is_empty() {
            return;
        }
        let targets = self.targets.borrow_and_update().clone();
        let mut old: HashMap<_, Endpoint> = self.endpoints.drain(..).map(|e| (e.target.addr, e)).collect();
        for e in old.values() {
            if !targets.iter().any(|t| t.addr == e.target.addr) {
                let _ = self.metrics.endpoint_healthy.remove(&EndpointLabel { endpoint: e.target.addr.to_string() });
            }
        }
        for t in targets {
            let endpoint = match old.remove(&t.addr) {
                Some(e) => e,
                None => match self.connect(&t) {
                    Ok(client) => Endpoint {
                        key: t.key,
                        breaker: Breaker::new(Duration::from_millis(500), Duration::from_secs(5)),
                        target: t,
                        client,
                    },
                    Err(e) => {
                        tracing::warn!(endpoint = %t.addr, error = %e, "cannot set up collector endpoint");
                        self.metrics.endpoint_setup_failures.inc();
                        continue;
                    }
                },
            };
            self.endpoints.push(endpoint);
        }
        self.metrics.endpoints.set(self.endpoints.len() as i64);
    }

    fn connect(&self, t: &Target) -> Result<tonic::client::Grpc<Channel>, String> {
        let scheme = if self.config.tls.is_some() { "https" } else { "http" };
        let mut ep = Channel::from_shared(format!("{scheme}://{}", t.addr))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(files) = &self.config.tls {
            ep = ep.tls_config(files.load()?.domain_name(t.host.clone())).map_err(|e| e.to_string())?;
        }
        Ok(tonic::client::Grpc::new(ep.connect_lazy())
            .send_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Zstd)
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(4 * 1024 * 1024))
    }

    fn publish_health(&self, now: Instant) {
        for e in &self.endpoints {
            let label = EndpointLabel { endpoint: e.target.addr.to_string() };
            self.metrics.endpoint_healthy.get_or_create(&label).set(i64::from(e.breaker.available(now)));
        }
    }

    /// Routes entries whose collector is not usable (or unknown) again, over the usable ones (`usable[i]`);
    /// returns them grouped by endpoint index, plus what has nowhere to go.
    fn reroute(&self, entries: Vec<Entry>, usable: &[bool]) -> (BTreeMap<usize, Vec<Entry>>, Vec<Entry>) {
        let keys: Vec<u64> = self.endpoints.iter().map(|e| e.key).collect();
        let mut requests = Vec::with_capacity(entries.len());
        for e in entries {
            match e.decode() {
                Ok(r) => requests.push(r),
                Err(err) => {
                    tracing::warn!(error = %err, "undecodable buffered batch dropped");
                    self.metrics.drop_spans("spill_corrupt", u64::from(e.spans));
                }
            }
        }
        let (shares, unrouted) = partition(requests, |id| choose(trace_hash(id), &keys, |i| usable[i]), usize::MAX);
        let mut out: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
        for (i, reqs) in shares {
            let moved = out.entry(i).or_default();
            moved.extend(reqs.iter().map(|r| Entry::encode(r, keys[i])));
            self.metrics.spans_rerouted.inc_by(moved.iter().map(|e| u64::from(e.spans)).sum());
        }
        (out, unrouted.iter().map(|r| Entry::encode(r, 0)).collect())
    }

    /// Sends one taken batch; returns what must go back to the buffer and how long to wait before the next.
    async fn send(&mut self, entries: Vec<Entry>) -> (Vec<Entry>, Duration) {
        let mut excluded = vec![false; self.endpoints.len()];
        let mut requeue = Vec::new();
        let mut wait = Duration::ZERO;
        let mut delivered_any = false;
        let mut pending = entries;
        while !pending.is_empty() {
            let now = Instant::now();
            let usable: Vec<bool> =
                self.endpoints.iter().zip(&excluded).map(|(e, x)| !x && e.breaker.available(now)).collect();
            let index: HashMap<u64, usize> = self.endpoints.iter().enumerate().map(|(i, e)| (e.key, i)).collect();
            let mut shares: BTreeMap<usize, Vec<Entry>> = BTreeMap::new();
            let mut elsewhere = Vec::new();
            for e in pending.drain(..) {
                match index.get(&e.dest).filter(|&&i| usable[i]) {
                    Some(&i) => shares.entry(i).or_default().push(e),
                    None => elsewhere.push(e),
                }
            }
            if !elsewhere.is_empty() {
                let (moved, nowhere) = self.reroute(elsewhere, &usable);
                for (i, es) in moved {
                    shares.entry(i).or_default().extend(es);
                }
                requeue.extend(nowhere);
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (i, es) in shares {
                let e = &self.endpoints[i];
                let attempts = if e.breaker.probing() { 1 } else { self.config.max_attempts };
                self.seed = crate::route::weight(self.seed, i as u64);
                let chunks = chunks(es, self.config.max_request_bytes);
                let fut = send_share(
                    e.client.clone(),
                    chunks,
                    attempts,
                    self.config.clone(),
                    self.metrics.clone(),
                    self.seed,
                );
                tasks.spawn(async move { (i, fut.await) });
            }
            while let Some(joined) = tasks.join_next().await {
                let Ok((i, out)) = joined else { continue };
                self.metrics.spans_forwarded.inc_by(out.delivered_spans);
                let e = &mut self.endpoints[i];
                if out.unhealthy.is_empty() {
                    e.breaker.success();
                    self.routes.set_healthy(e.key, true);
                    delivered_any = true;
                } else {
                    e.breaker.trip(Instant::now());
                    self.routes.set_healthy(e.key, false);
                    excluded[i] = true;
                    delivered_any |= out.delivered_spans > 0;
                    tracing::warn!(endpoint = %e.target.addr, "collector endpoint unhealthy; its traces move to the next choice");
                }
                pending.extend(out.unhealthy);
                if !out.throttled.is_empty() {
                    wait = wait.max(out.delay);
                    requeue.extend(out.throttled);
                }
            }
        }
        self.publish_health(Instant::now());
        if delivered_any {
            self.buffer.set_spill_mode(false);
        } else if !requeue.is_empty() && wait.is_zero() {
            // Nothing reachable: keep everything on disk until a probe succeeds.
            self.buffer.set_spill_mode(true);
        }
        (requeue, wait)
    }

    /// Time until some endpoint may be tried again (`None`: one is usable now).
    fn next_probe(&self, now: Instant) -> Option<Duration> {
        if self.endpoints.iter().any(|e| e.breaker.available(now)) {
            return None;
        }
        let soonest = self.endpoints.iter().filter_map(|e| e.breaker.open_until()).min();
        Some(soonest.map_or(Duration::from_millis(500), |t| t.saturating_duration_since(now)))
    }

    /// Runs until `shutdown` turns true, then flushes for at most `drain` and persists what is left.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, drain: Duration) {
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && *shutdown.borrow() {
                deadline = Some(Instant::now() + drain);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            self.refresh_endpoints();
            let now = Instant::now();
            if let Some(wait) = self.next_probe(now) {
                self.publish_health(now);
                self.buffer.set_spill_mode(true);
                if deadline.is_some() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.targets.changed() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let timeout = if deadline.is_some() { Duration::ZERO } else { self.config.batch_timeout };
            match self.buffer.due_in(self.config.batch_max_spans, self.config.batch_max_bytes, timeout) {
                None if deadline.is_some() => break,
                None => {
                    tokio::select! {
                        _ = self.buffer.pushed() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Some(d) if !d.is_zero() => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.buffer.pushed() => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                Some(_) => {}
            }
            let taken: Taken = self.buffer.take(self.config.batch_max_spans, self.config.batch_max_bytes);
            let (requeue, wait) = self.send(taken.entries.clone()).await;
            self.buffer.complete(taken, requeue);
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        self.buffer.persist();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::otlp_resource::Resource;

    fn span_count(req: &ExportTraceServiceRequest) -> u64 {
        req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
    }

    #[test]
    fn chunks_concatenate_payloads_into_valid_requests_below_the_limit() {
        let entries: Vec<Entry> =
            (0..10u8).map(|i| Entry::encode(&req("a", (0..10).map(|t| span(t + i * 10, 100)).collect()), 7)).collect();
        let size = entries[0].payload.len();
        let cs = chunks(entries, size * 3 + 1);
        assert_eq!(cs.len(), 4);
        for c in &cs {
            let body: Vec<u8> = c.body().concat();
            assert!(body.len() <= size * 3 + 1);
            let r = ExportTraceServiceRequest::decode(body.as_slice()).expect("concatenation is a valid request");
            assert_eq!(span_count(&r), c.spans);
            assert_eq!(r.resource_spans.len(), c.entries.len());
        }
        let big = Entry::encode(&req("a", (0..50).map(|t| span(t, 1000)).collect()), 7);
        let cs = chunks(vec![big], 10_000);
        assert!(cs.len() >= 5, "{} chunks", cs.len());
        assert!(cs.iter().all(|c| c.body().concat().len() <= 10_000 && c.entries[0].dest == 7));
        assert_eq!(cs.iter().map(|c| c.spans).sum::<u64>(), 50);
    }

    fn span(trace: u8, bytes: usize) -> Span {
        Span { trace_id: vec![trace; 16], span_id: vec![1; 8], name: "x".repeat(bytes), ..Default::default() }
    }

    fn req(resource: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { dropped_attributes_count: resource.len() as u32, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn partition_keeps_resources_and_routes_each_trace_to_one_destination() {
        let reqs =
            vec![req("a", (0..10).map(|t| span(t, 10)).collect()), req("bb", (5..15).map(|t| span(t, 10)).collect())];
        let (shares, unrouted) = partition(reqs, |id| (id[0] != 14).then_some(usize::from(id[0] % 3)), 1 << 20);
        assert_eq!(span_count(&unrouted[0]), 1);
        let mut seen = 0;
        for (dest, reqs) in &shares {
            assert_eq!(reqs.len(), 1);
            for rs in &reqs[0].resource_spans {
                for s in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    assert_eq!(usize::from(s.trace_id[0] % 3), *dest);
                    // Spans keep their resource.
                    let from_b = rs.resource.as_ref().expect("resource").dropped_attributes_count == 2;
                    assert!(if s.trace_id[0] < 5 { !from_b } else { true });
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 19);
    }

    #[test]
    fn partition_splits_below_the_size_limit() {
        let reqs = vec![req("a", (0..100).map(|t| span(t, 1000)).collect())];
        let (shares, _) = partition(reqs, |_| Some(0), 20_000);
        let parts = &shares[&0];
        assert!(parts.len() >= 5, "{} parts", parts.len());
        assert!(
            parts.iter().all(|p| p.encoded_len() <= 20_000),
            "{:?}",
            parts.iter().map(|p| p.encoded_len()).collect::<Vec<_>>()
        );
        assert_eq!(parts.iter().map(span_count).sum::<u64>(), 100);
        let (one, _) = partition(vec![req("a", vec![span(1, 50_000)])], |_| Some(0), 20_000);
        assert_eq!(one[&0].len(), 1, "a single oversized span is sent alone");
    }

    #[test]
    fn retry_delays_follow_the_collector_then_backoff() {
        let st = Status::with_error_details(
            Code::ResourceExhausted,
            "busy",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        assert_eq!(requested_delay(&st), Some(Duration::from_millis(1500)));
        let mut st = Status::resource_exhausted("busy");
        st.metadata_mut().insert("retry-after", "2".parse().expect("ascii"));
        assert_eq!(requested_delay(&st), Some(Duration::from_secs(2)));
        assert_eq!(requested_delay(&Status::unavailable("down")), None);
        assert!(is_retryable(&Status::unavailable("down")) && is_retryable(&Status::resource_exhausted("busy")));
        assert!(is_retryable(&Status::unknown("transport error")), "a reset connection is retried");
        assert!(!is_retryable(&Status::invalid_argument("bad span")) && !is_retryable(&Status::unknown("server said")));
        let base = Duration::from_millis(100);
        for attempt in 0..6 {
            let d = backoff(base, Duration::from_secs(2), attempt, u64::from(attempt) * 77);
            let nominal = (base * (1 << attempt)).min(Duration::from_secs(2));
            assert!(d >= nominal / 2 && d <= nominal.mul_f64(1.5).min(Duration::from_secs(2)), "{attempt}: {d:?}");
        }
    }
}
