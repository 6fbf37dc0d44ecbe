//! The OTLP/gRPC trace export service (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip and
//! zstd) for any [`ExportHandler`]: the collector's ingest and the agent's buffer share it.
//!
//! The service is written out here instead of using the generated `TraceServiceServer` for two reasons: the
//! generated server decodes with tonic's prost codec, which reports a malformed message as `INTERNAL` (OTLP
//! clients must not retry malformed data: [`RawExport::decode`] answers `INVALID_ARGUMENT` with prost's message),
//! and the handler gets the protobuf bytes (the collector writes them to its write-ahead log as is; the agent
//! routes them without decoding).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Bytes, Service, StdError, http};
use tonic::{Request, Response, Status};

use crate::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};

/// Full gRPC path of the OTLP trace export method.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The accepted connections of `listener` with `TCP_NODELAY` set, for `Server::serve_with_incoming`: a gRPC
/// response is one small write, and Nagle's algorithm would hold it for the peer's delayed ACK (40 ms).
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
        conn.inspect(|tcp| {
            let _ = tcp.set_nodelay(true);
        })
    })
}

/// An export request as received: its protobuf bytes (after decompression), decoded by the handler when it
/// needs the structs ([`RawExport::decode`]) — the agent routes most requests without decoding them.
pub struct RawExport {
    /// The protobuf encoding, as received.
    pub raw: Bytes,
}

impl RawExport {
    /// Decodes the request.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` with prost's message when the bytes are not a valid `ExportTraceServiceRequest`.
    pub fn decode(&self) -> Result<ExportTraceServiceRequest, Status> {
        ExportTraceServiceRequest::decode(self.raw.clone())
            .map_err(|e| Status::invalid_argument(format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}")))
    }
}

/// What handles decoded export requests.
pub trait ExportHandler: Clone + Send + Sync + 'static {
    /// Handles one export call.
    fn export(
        &self,
        request: RawExport,
    ) -> impl Future<Output = Result<ExportTraceServiceResponse, Status>> + Send + 'static;

    /// Counts a request refused before reaching [`ExportHandler::export`]: reason `malformed` (undecodable
    /// protobuf, answered `INVALID_ARGUMENT`) or `unknown_method` (`UNIMPLEMENTED`).
    fn rejected(&self, reason: &str);
}

/// The tonic service for an [`ExportHandler`]; add it with `Server::builder().add_service(..)`.
#[derive(Clone)]
pub struct ExportServer<H> {
    handler: H,
    max_request_bytes: usize,
}

impl<H: ExportHandler> ExportServer<H> {
    /// A service accepting decompressed requests up to `max_request_bytes`.
    pub fn new(handler: H, max_request_bytes: usize) -> Self {
        Self { handler, max_request_bytes }
    }
}

impl<H> tonic::server::NamedService for ExportServer<H> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct ExportMethod<H>(Arc<H>);

impl<H: ExportHandler> tonic::server::UnaryService<RawExport> for ExportMethod<H> {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<RawExport>) -> Self::Future {
        let fut = self.0.export(request.into_inner());
        Box::pin(async move { fut.await.map(Response::new) })
    }
}

impl<H, B> Service<http::Request<B>> for ExportServer<H>
where
    H: ExportHandler,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        let max = self.max_request_bytes;
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                handler.rejected("unknown_method");
                return Ok(Status::unimplemented(format!("unknown method {}", req.uri().path())).into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(OtlpCodec)
                .apply_compression_config(accept, accept)
                .apply_max_message_size_config(Some(max), None);
            let response = grpc.unary(ExportMethod(Arc::new(handler.clone())), req).await;
            // Malformed bodies are answered INVALID_ARGUMENT (trailers-only): count them from the status.
            if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"3") {
                handler.rejected("malformed");
            }
            Ok(response)
        })
    }
}

/// Responses encoded with prost; requests passed on as bytes.
struct OtlpCodec;

impl Codec for OtlpCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = RawExport;
    type Encoder = OtlpEncoder;
    type Decoder = OtlpDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OtlpEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        OtlpDecoder
    }
}

struct OtlpEncoder;

impl Encoder for OtlpEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

struct OtlpDecoder;

impl Decoder for OtlpDecoder {
    type Item = RawExport;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let raw = prost::bytes::Buf::copy_to_bytes(src, prost::bytes::Buf::remaining(src));
        Ok(Some(RawExport { raw }))
    }
}
