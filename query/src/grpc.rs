//! Skein's gRPC query API, `skein.query.v1.QueryService` (`proto/skein/query/v1/query.proto`, port 16685).
//!
//! The same queries as the HTTP API over the same [`TraceStore`]; traces come back as a stream of OTLP
//! `TracesData` chunks, each at most [`CHUNK_MAX_SPANS`] spans and about [`CHUNK_MAX_BYTES`] encoded (below
//! gRPC's default 4 MiB message limit), so a 100,000-span trace never needs one huge message. Chunks are produced
//! by a task feeding a two-slot channel: a slow client holds the producer back, and a client that goes away drops
//! the response stream, which closes the channel and stops the search or the chunking at once. A stream dropped
//! before its end is counted in `skein_query_grpc_streams_cancelled_total`.

use std::sync::Arc;

use prost::Message as _;
use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, TracesData};
use skein_proto::query::query_service_server::{QueryService, QueryServiceServer};
use skein_proto::query::{
    DependencyLink, FindTracesRequest, GetDependenciesRequest, GetDependenciesResponse, GetOperationsRequest,
    GetOperationsResponse, GetServicesRequest, GetServicesResponse, GetTraceRequest, Operation,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::metrics::QueryMetrics;
use skein_model::otlp::to_otlp;
use skein_model::{Span, SpanKind, TraceId};
use skein_storage::{StoreError, StoreResult, TraceQuery, TraceStore};

/// Most spans in one streamed `TracesData`.
pub const CHUNK_MAX_SPANS: usize = 1000;
/// Target encoded size of one streamed `TracesData`, bytes (a single larger span is sent alone).
pub const CHUNK_MAX_BYTES: usize = 3 << 20;
/// Default dependency window when the request gives none: 24 hours.
const DEFAULT_LOOKBACK_NANOS: u64 = 24 * 3600 * 1_000_000_000;

/// Splits OTLP `ResourceSpans` into `TracesData` chunks of at most `max_spans` spans and about `max_bytes`
/// encoded, keeping span order; each chunk repeats the resource and scope of the spans it carries.
pub fn chunk(resource_spans: Vec<ResourceSpans>, max_spans: usize, max_bytes: usize) -> Vec<TracesData> {
    let mut out = Vec::new();
    let mut current = TracesData::default();
    let (mut spans, mut bytes) = (0usize, 0usize);
    for rs in resource_spans {
        let resource_bytes = rs.resource.as_ref().map_or(0, |r| r.encoded_len()) + rs.schema_url.len() + 8;
        let mut resource_open = false;
        for ss in rs.scope_spans {
            let scope_bytes = ss.scope.as_ref().map_or(0, |s| s.encoded_len()) + ss.schema_url.len() + 8;
            let mut scope_open = false;
            for span in ss.spans {
                let size = span.encoded_len() + 8;
                if spans > 0 && (spans + 1 > max_spans || bytes + size > max_bytes) {
                    out.push(std::mem::take(&mut current));
                    (spans, bytes) = (0, 0);
                    (resource_open, scope_open) = (false, false);
                }
                if !resource_open {
                    current.resource_spans.push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    });
                    bytes += resource_bytes;
                    resource_open = true;
                }
                let open_rs = current.resource_spans.last_mut().expect("a resource was just opened");
                if !scope_open {
                    open_rs.scope_spans.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    });
                    bytes += scope_bytes;
                    scope_open = true;
                }
                open_rs.scope_spans.last_mut().expect("a scope was just opened").spans.push(span);
                spans += 1;
                bytes += size;
            }
        }
    }
    if spans > 0 {
        out.push(current);
    }
    out
}

async fn limited<T>(
    timeout: std::time::Duration,
    metrics: &QueryMetrics,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => {
            metrics.query_timeouts.inc();
            Err(Status::deadline_exceeded(format!("the query took longer than --query-timeout ({timeout:?})")))
        }
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Codec(e) => Status::internal(format!("stored block is corrupt: {e}")),
        other => Status::unavailable(other.to_string()),
    }
}

fn trace_id(bytes: &[u8]) -> Result<TraceId, Status> {
    let mut id = [0u8; 16];
    match bytes.len() {
        16 => id.copy_from_slice(bytes),
        8 => id[8..].copy_from_slice(bytes),
        n => return Err(Status::invalid_argument(format!("trace_id must be 16 (or 8) bytes, got {n}"))),
    }
    if id == [0; 16] {
        return Err(Status::invalid_argument("trace_id must not be all zeros"));
    }
    Ok(TraceId(id))
}

fn trace_query(q: Option<skein_proto::query::TraceQuery>) -> Result<TraceQuery, Status> {
    let q = q.ok_or_else(|| Status::invalid_argument("query is required"))?;
    if q.service_name.is_empty() {
        return Err(Status::invalid_argument("query.service_name is required"));
    }
    if q.start_time_min_unix_nano == 0 || q.start_time_max_unix_nano == 0 {
        return Err(Status::invalid_argument(
            "query.start_time_min_unix_nano and query.start_time_max_unix_nano are required",
        ));
    }
    if q.start_time_max_unix_nano < q.start_time_min_unix_nano {
        return Err(Status::invalid_argument(
            "query.start_time_max_unix_nano is before query.start_time_min_unix_nano",
        ));
    }
    let bound = |n: u64| (n > 0).then_some(n);
    let (min, max) = (bound(q.duration_min_nanos), bound(q.duration_max_nanos));
    if let (Some(min), Some(max)) = (min, max)
        && max < min
    {
        return Err(Status::invalid_argument("query.duration_max_nanos is less than query.duration_min_nanos"));
    }
    let mut tags: Vec<(String, String)> = q.attributes.into_iter().collect();
    tags.sort();
    Ok(TraceQuery {
        service: q.service_name,
        operation: (!q.operation_name.is_empty()).then_some(q.operation_name),
        tags,
        start_min_unix_nanos: q.start_time_min_unix_nano,
        start_max_unix_nanos: q.start_time_max_unix_nano,
        duration_min_nanos: min,
        duration_max_nanos: max,
        limit: super::params::limit(q.search_depth as usize),
    })
}

/// The `QueryService` implementation.
#[derive(Clone)]
pub struct QueryGrpc {
    store: Arc<dyn TraceStore>,
    metrics: Arc<QueryMetrics>,
    timeout: std::time::Duration,
}

/// A stream of `TracesData` chunks.
///
/// Dropped before its end (the client went away, however much the transport had buffered), it counts a
/// cancellation.
pub struct ChunkStream {
    inner: ReceiverStream<Result<TracesData, Status>>,
    ended: bool,
    metrics: Arc<QueryMetrics>,
}

impl tokio_stream::Stream for ChunkStream {
    type Item = Result<TracesData, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let next = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            self.ended = true;
        }
        next
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics.query_grpc_streams_cancelled.inc();
        }
    }
}

impl QueryGrpc {
    /// A service over `store`.
    pub fn new(store: Arc<dyn TraceStore>, metrics: Arc<QueryMetrics>) -> Self {
        Self { store, metrics, timeout: std::time::Duration::from_secs(30) }
    }

    /// Limits each query (the search or read, not the client's reading of the stream) to `timeout`:
    /// DEADLINE_EXCEEDED after it, counted in `skein_query_timeouts_total`.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs a store call within the query timeout, its error as a gRPC status.
    async fn call<T>(&self, fut: impl std::future::Future<Output = StoreResult<T>>) -> Result<T, Status> {
        limited(self.timeout, &self.metrics, async { fut.await.map_err(store_status) }).await
    }

    /// The tonic service, accepting gzip- and zstd-compressed requests and compressing responses when asked,
    /// behind the bearer-token check of `--query-auth-token-file` ([`super::auth`]; with `None`, every call is
    /// served).
    pub fn server(
        self,
        tokens: Option<Arc<super::auth::TokenFile>>,
    ) -> tonic::service::interceptor::InterceptedService<QueryServiceServer<Self>, super::auth::GrpcAuth> {
        use tonic::codec::CompressionEncoding::{Gzip, Zstd};
        let server = QueryServiceServer::new(self)
            .accept_compressed(Gzip)
            .accept_compressed(Zstd)
            .send_compressed(Gzip)
            .send_compressed(Zstd);
        tonic::service::interceptor::InterceptedService::new(server, super::auth::GrpcAuth(tokens))
    }

    /// Streams `traces` (found by `find`) as chunks; the producer stops when the client is gone.
    fn stream<F, Fut>(&self, find: F) -> ChunkStream
    where
        F: FnOnce(Arc<dyn TraceStore>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Vec<Vec<Span>>, Status>> + Send,
    {
        let (tx, rx) = mpsc::channel(2);
        let (store, metrics, timeout) = (self.store.clone(), self.metrics.clone(), self.timeout);
        tokio::spawn(async move {
            let traces = tokio::select! {
                found = limited(timeout, &metrics, find(store)) => found,
                _ = tx.closed() => return,
            };
            let traces = match traces {
                Ok(t) => t,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            for trace in traces {
                for data in chunk(to_otlp(&trace), CHUNK_MAX_SPANS, CHUNK_MAX_BYTES) {
                    if tx.send(Ok(data)).await.is_err() {
                        return;
                    }
                    metrics.query_grpc_chunks_sent.inc();
                }
            }
        });
        ChunkStream { inner: ReceiverStream::new(rx), ended: false, metrics: self.metrics.clone() }
    }
}

#[tonic::async_trait]
impl QueryService for QueryGrpc {
    type GetTraceStream = ChunkStream;
    type FindTracesStream = ChunkStream;

    async fn get_trace(&self, request: Request<GetTraceRequest>) -> Result<Response<Self::GetTraceStream>, Status> {
        let id = trace_id(&request.get_ref().trace_id)?;
        // Read before answering, so that a missing trace is a NOT_FOUND status rather than an empty stream.
        let spans = self.call(self.store.get_trace(id)).await?;
        let Some(spans) = spans else { return Err(Status::not_found(format!("trace {id} not found"))) };
        Ok(Response::new(self.stream(move |_| async move { Ok(vec![spans]) })))
    }

    async fn find_traces(
        &self,
        request: Request<FindTracesRequest>,
    ) -> Result<Response<Self::FindTracesStream>, Status> {
        let query = trace_query(request.into_inner().query)?;
        let metrics = self.metrics.clone();
        Ok(Response::new(self.stream(move |store| async move {
            let found = store.find_traces(query).await.map_err(store_status)?;
            super::report_corrupt(&metrics, &found.corrupt);
            Ok(found.traces)
        })))
    }

    async fn get_services(&self, _: Request<GetServicesRequest>) -> Result<Response<GetServicesResponse>, Status> {
        let services = self.call(self.store.services()).await?;
        Ok(Response::new(GetServicesResponse { services }))
    }

    async fn get_operations(
        &self,
        request: Request<GetOperationsRequest>,
    ) -> Result<Response<GetOperationsResponse>, Status> {
        let r = request.into_inner();
        if r.service.is_empty() {
            return Err(Status::invalid_argument("service is required"));
        }
        let kind = match r.span_kind.as_str() {
            "" => None,
            k => Some(SpanKind::from_jaeger_name(k).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "span_kind {k:?} is not one of server, client, producer, consumer, internal, unspecified"
                ))
            })?),
        };
        let ops = self.call(self.store.operations(&r.service, kind)).await?;
        let operations =
            ops.into_iter().map(|o| Operation { name: o.name, span_kind: o.kind.jaeger_name().to_string() }).collect();
        Ok(Response::new(GetOperationsResponse { operations }))
    }

    async fn get_dependencies(
        &self,
        request: Request<GetDependenciesRequest>,
    ) -> Result<Response<GetDependenciesResponse>, Status> {
        let r = request.into_inner();
        let end = if r.end_time_unix_nano == 0 { skein_model::now_nanos() } else { r.end_time_unix_nano };
        let lookback = if r.lookback_nanos == 0 { DEFAULT_LOOKBACK_NANOS } else { r.lookback_nanos };
        let links = self.call(self.store.dependencies(end, lookback)).await?;
        let dependencies = links
            .into_iter()
            .map(|l| DependencyLink {
                parent: l.parent,
                child: l.child,
                call_count: l.call_count,
                error_count: l.error_count,
            })
            .collect();
        Ok(Response::new(GetDependenciesResponse { dependencies }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::otlp_common::InstrumentationScope;
    use skein_proto::otlp_resource::Resource;
    use skein_proto::otlp_trace::Span as OtlpSpan;

    fn resource(name: &str, spans: usize, attr_bytes: usize) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: name.into(), ..Default::default() }),
                spans: (0..spans)
                    .map(|i| OtlpSpan {
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: "x".repeat(attr_bytes),
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn count(c: &TracesData) -> usize {
        c.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }

    #[test]
    fn chunks_are_bounded_by_spans_and_bytes_and_keep_every_span_in_order() {
        let input = vec![resource("a", 2500, 10), resource("b", 10, 10)];
        let chunks = chunk(input.clone(), 1000, 1 << 30);
        assert_eq!(chunks.iter().map(count).collect::<Vec<_>>(), [1000, 1000, 510]);
        // The last chunk carries the end of scope "a" and all of "b", each under its own resource.
        let last = &chunks[2];
        assert_eq!(last.resource_spans.len(), 2);
        assert_eq!(last.resource_spans[1].scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("b"));
        let ids: Vec<Vec<u8>> = chunks
            .iter()
            .flat_map(|c| &c.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect();
        let want: Vec<Vec<u8>> =
            input.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.span_id.clone()).collect();
        assert_eq!(ids, want);

        // 100 spans of ~10 KB against a 64 KiB budget: every chunk stays under it, none is empty.
        let chunks = chunk(vec![resource("big", 100, 10_000)], 1000, 64 << 10);
        assert!(chunks.len() >= 16, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.encoded_len() <= 64 << 10 && count(c) >= 1));
        assert_eq!(chunks.iter().map(count).sum::<usize>(), 100);
        // A single span over the budget goes alone rather than being lost.
        let chunks = chunk(vec![resource("huge", 2, 100_000)], 1000, 64 << 10);
        assert_eq!(chunks.iter().map(count).collect::<Vec<_>>(), [1, 1]);
        assert!(chunk(Vec::new(), 10, 10).is_empty());
    }

    #[test]
    fn bad_requests_are_invalid_argument_with_the_field() {
        assert_eq!(trace_id(&[1; 3]).expect_err("short").code(), tonic::Code::InvalidArgument);
        assert!(trace_id(&[0; 16]).is_err());
        assert_eq!(trace_id(&[7; 8]).expect("64-bit").0[..8], [0; 8]);
        let q = |f: &dyn Fn(&mut skein_proto::query::TraceQuery)| {
            let mut q = skein_proto::query::TraceQuery {
                service_name: "a".into(),
                start_time_min_unix_nano: 1,
                start_time_max_unix_nano: 2,
                ..Default::default()
            };
            f(&mut q);
            trace_query(Some(q))
        };
        assert!(q(&|_| {}).is_ok());
        assert!(q(&|q| q.service_name.clear()).expect_err("service").message().contains("service_name"));
        assert!(q(&|q| q.start_time_max_unix_nano = 0).expect_err("window").message().contains("start_time"));
        assert!(q(&|q| q.start_time_min_unix_nano = 5).is_err());
        assert!(
            q(&|q| {
                q.duration_min_nanos = 5;
                q.duration_max_nanos = 2;
            })
            .is_err()
        );
        assert_eq!(q(&|q| q.search_depth = 100_000).expect("capped").limit, super::super::params::MAX_LIMIT);
        assert!(trace_query(None).is_err());
    }
}
