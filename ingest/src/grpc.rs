//! The OTLP/gRPC receiver: [`skein_proto::otlp_grpc::ExportServer`] over an [`Ingest`] handle (gzip and zstd,
//! `INVALID_ARGUMENT` naming the field for malformed protobuf, decoded straight into spans by
//! [`super::Ingest::export_protobuf`], the raw bytes kept for the write-ahead log).

use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use skein_proto::otlp_grpc::{ExportHandler, ExportServer, RawExport};
use tonic::{Request, Response, Status};
use tonic_types::StatusExt as _;

use super::{Ingest, IngestError};

pub use skein_proto::otlp_grpc::EXPORT_PATH;

/// Largest accepted (decompressed) export request, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::ShuttingDown | IngestError::Unavailable(_) => Status::unavailable(e.to_string()),
            IngestError::Malformed(message) => Status::invalid_argument(message),
            IngestError::Overloaded { retry_after_secs, .. } => Status::with_error_details(
                tonic::Code::ResourceExhausted,
                e.to_string(),
                tonic_types::ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(u64::from(
                    retry_after_secs,
                )))),
            ),
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

    /// The tonic service to add to a server.
    pub fn server(self) -> ExportServer<Self> {
        ExportServer::new(self, MAX_REQUEST_BYTES)
    }

    /// Handles one export call (also callable directly in tests).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` (with `google.rpc.RetryInfo`) when overloaded, `UNAVAILABLE` while shutting down or
    /// when the write-ahead log fails.
    pub async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(self.ingest.export(request.into_inner(), None, "grpc").await?))
    }
}

impl ExportHandler for OtlpGrpc {
    fn export(
        &self,
        request: RawExport,
    ) -> impl Future<Output = Result<ExportTraceServiceResponse, Status>> + Send + 'static {
        let ingest = self.ingest.clone();
        async move { Ok(ingest.export_protobuf(request.raw, "grpc").await?) }
    }

    fn rejected(&self, reason: &str) {
        self.ingest.metrics().reject_request(reason);
    }
}
