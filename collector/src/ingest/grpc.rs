//! The OTLP/gRPC receiver (`opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip and zstd).
//!
//! The service is written out here instead of using the generated `TraceServiceServer` for one reason: the
//! generated server decodes with tonic's prost codec, which reports a malformed message as `INTERNAL`. OTLP
//! clients must not retry malformed data, so Skein answers `INVALID_ARGUMENT` with prost's message instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message as _;
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Request, Response, Status};

use super::{Ingest, IngestError};

/// Full gRPC path of the OTLP trace export method.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Largest accepted (decompressed) export request, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::ShuttingDown | IngestError::Unavailable(_) => Status::unavailable(e.to_string()),
            IngestError::Overloaded { .. } => Status::resource_exhausted(e.to_string()),
        }
    }
}

/// The OTLP/gRPC trace service over an [`Ingest`] handle.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Ingest,
}

impl OtlpGrpc {
    /// Creates the service.
    pub fn new(ingest: Ingest) -> Self {
        Self { ingest }
    }

    /// Handles one export call (also callable directly in tests).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when overloaded (retry later), `UNAVAILABLE` while shutting down or when the
    /// write-ahead log fails.
    pub async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(self.ingest.export(request.into_inner(), None, "grpc").await?))
    }

    async fn export_raw(&self, request: Request<RawExport>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let RawExport { request, raw } = request.into_inner();
        Ok(Response::new(self.ingest.export(request, Some(raw), "grpc").await?))
    }
}

impl tonic::server::NamedService for OtlpGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct ExportMethod(Arc<OtlpGrpc>);

/// A decoded request with the protobuf bytes it was decoded from (written to the write-ahead log as is).
pub struct RawExport {
    /// The decoded request.
    pub request: ExportTraceServiceRequest,
    /// Its protobuf encoding, as received (after decompression).
    pub raw: bytes::Bytes,
}

impl tonic::server::UnaryService<RawExport> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<RawExport>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { svc.export_raw(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for OtlpGrpc
where
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
        let svc = Arc::new(self.clone());
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                let status = Status::unimplemented(format!("unknown method {}", req.uri().path()));
                svc.ingest.metrics().reject_request("unknown_method");
                return Ok(status.into_http());
            }
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            accept.enable(CompressionEncoding::Zstd);
            let mut send = EnabledCompressionEncodings::default();
            send.enable(CompressionEncoding::Gzip);
            send.enable(CompressionEncoding::Zstd);
            let mut grpc = tonic::server::Grpc::new(OtlpCodec)
                .apply_compression_config(accept, send)
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            let metrics = svc.ingest.metrics().clone();
            let response = grpc.unary(ExportMethod(svc), req).await;
            // Malformed bodies fail in the codec, before the handler: count them from the trailers-only status.
            if response.headers().get("grpc-status").is_some_and(|v| v.as_bytes() == b"3") {
                metrics.reject_request("malformed");
            }
            Ok(response)
        })
    }
}

/// Prost encoding with decode errors reported as `INVALID_ARGUMENT`.
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
        use bytes::Buf as _;
        let raw = src.copy_to_bytes(src.remaining());
        ExportTraceServiceRequest::decode(raw.clone())
            .map(|request| Some(RawExport { request, raw }))
            .map_err(|e| Status::invalid_argument(format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}")))
    }
}
