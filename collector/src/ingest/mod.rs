//! Ingest: OTLP receivers (gRPC and HTTP) in front of validation and trace assembly.
//!
//! Both receivers decode a request, call [`Ingest::export`] — which validates with [`convert`], counts, and hands
//! accepted spans to the assembler over a bounded channel — and report rejected spans back in OTLP
//! `partial_success` (spec: <https://opentelemetry.io/docs/specs/otlp/#partial-success>).

pub mod convert;
pub mod grpc;
pub mod http;
pub mod zipkin;

use std::sync::Arc;

use prost::Message as _;
use skein_proto::otlp_collector_trace::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::{Semaphore, mpsc};

pub use convert::{Limits, convert, to_otlp};

use crate::assembly::Batch;
use crate::metrics::{Metrics, ProtocolLabels, ReasonLabels, RefusedLabels};
use crate::wal::{Wal, WalError};

/// Default `--max-inflight-bytes`: export-request bytes processed at once before new requests are refused.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// Seconds clients are asked to wait (`Retry-After`) when refused for overload.
pub const RETRY_AFTER_SECS: u32 = 1;

/// Why an export could not be accepted at all. Nothing of the request was stored when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline behind the receivers is shutting down.
    #[error("the collector is shutting down")]
    ShuttingDown,
    /// Over a load limit; the client should retry after `retry_after_secs`.
    #[error("collector overloaded ({reason}); retry after {retry_after_secs} s")]
    Overloaded {
        /// `inflight_bytes` or `wal_full`.
        reason: &'static str,
        /// Suggested wait, seconds.
        retry_after_secs: u32,
    },
    /// The write-ahead log could not persist the request.
    #[error("write-ahead log unavailable: {0}")]
    Unavailable(String),
}

/// The receivers' handle on the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    spans: mpsc::Sender<Batch>,
    wal: Option<Wal>,
    inflight: Arc<Semaphore>,
    max_inflight_bytes: usize,
}

impl Ingest {
    /// Creates a handle that sends accepted spans to `spans` (the assembler's input), without a write-ahead log
    /// and with the default in-flight budget.
    pub fn new(limits: Limits, metrics: Arc<Metrics>, spans: mpsc::Sender<Batch>) -> Self {
        Self {
            limits: Arc::new(limits),
            metrics,
            spans,
            wal: None,
            inflight: Arc::new(Semaphore::new(DEFAULT_MAX_INFLIGHT_BYTES)),
            max_inflight_bytes: DEFAULT_MAX_INFLIGHT_BYTES,
        }
    }

    /// Logs every request to `wal` before acknowledging it.
    pub fn with_wal(mut self, wal: Wal) -> Self {
        self.wal = Some(wal);
        self
    }

    /// Bounds the bytes of requests processed at once (`--max-inflight-bytes`); over it requests are refused.
    pub fn with_max_inflight_bytes(mut self, bytes: usize) -> Self {
        let bytes = bytes.clamp(1024, Semaphore::MAX_PERMITS);
        self.inflight = Arc::new(Semaphore::new(bytes));
        self.max_inflight_bytes = bytes;
        self
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn refuse(&self, protocol: &str, spans: usize, reason: &str) {
        self.metrics.reject_request(reason);
        self.metrics
            .spans_refused
            .get_or_create(&RefusedLabels { protocol: protocol.to_string(), reason: reason.to_string() })
            .inc_by(spans as u64);
    }

    /// Validates, logs and accepts one export request, returning the OTLP response (with `partial_success` when
    /// spans were rejected). `raw` is the request's protobuf encoding when the receiver has it (it is written to
    /// the write-ahead log as is); otherwise the request is encoded.
    ///
    /// # Errors
    /// [`IngestError`] when the request was refused as a whole (overload, full or failing log, shutdown); none of
    /// its spans is stored then and the client may retry.
    pub async fn export(
        &self,
        request: ExportTraceServiceRequest,
        raw: Option<bytes::Bytes>,
        protocol: &str,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let received: usize =
            request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        self.metrics
            .spans_received
            .get_or_create(&ProtocolLabels { protocol: protocol.to_string() })
            .inc_by(received as u64);
        let size = raw.as_ref().map_or_else(|| request.encoded_len(), |r| r.len()).max(1);
        let permits = u32::try_from(size.min(self.max_inflight_bytes)).unwrap_or(u32::MAX);
        let Ok(_permit) = self.inflight.clone().try_acquire_many_owned(permits) else {
            self.refuse(protocol, received, "inflight_bytes");
            return Err(IngestError::Overloaded { reason: "inflight_bytes", retry_after_secs: RETRY_AFTER_SECS });
        };
        self.metrics.inflight_bytes.inc_by(permits as i64);
        let result = self.accept(request, raw, protocol, received).await;
        self.metrics.inflight_bytes.dec_by(permits as i64);
        result
    }

    async fn accept(
        &self,
        request: ExportTraceServiceRequest,
        raw: Option<bytes::Bytes>,
        protocol: &str,
        received: usize,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let payload = match (&self.wal, raw) {
            (None, _) => None,
            (Some(_), Some(r)) => Some(r),
            (Some(_), None) => Some(bytes::Bytes::from(request.encode_to_vec())),
        };
        let logged = async {
            match (&self.wal, payload) {
                (Some(wal), Some(payload)) => wal.append(payload).await.map(Some),
                _ => Ok(None),
            }
        };
        let limits = self.limits.clone();
        let resource_spans = request.resource_spans;
        let converting = async move {
            if received > 256 {
                tokio::task::spawn_blocking(move || convert(resource_spans, &limits)).await.ok()
            } else {
                Some(convert(resource_spans, &limits))
            }
        };
        let (logged, converted) = tokio::join!(logged, converting);
        let wal_seq = match logged {
            Ok(seq) => seq,
            Err(WalError::Full { .. }) => {
                self.refuse(protocol, received, "wal_full");
                return Err(IngestError::Overloaded { reason: "wal_full", retry_after_secs: RETRY_AFTER_SECS });
            }
            Err(e) => {
                self.refuse(protocol, received, "wal_error");
                return Err(IngestError::Unavailable(e.to_string()));
            }
        };
        let Some(converted) = converted else {
            // Only a panic in validation ends here; the request is in the log and is replayed at next start.
            self.refuse(protocol, received, "shutting_down");
            return Err(IngestError::ShuttingDown);
        };
        for (reason, n) in &converted.rejected {
            self.metrics.spans_rejected.get_or_create(&ReasonLabels { reason: reason.label().to_string() }).inc_by(*n);
        }
        let rejected = converted.rejected_count();
        let message = converted.rejection_message();
        if converted.spans.is_empty() {
            if let (Some(wal), Some(seq)) = (&self.wal, wal_seq) {
                wal.refs().release(seq);
            }
        } else if self.spans.send(Batch { spans: converted.spans, wal_seq, replayed: false }).await.is_err() {
            // Logged already (when the log is on): replayed at next start, so nothing acknowledged is lost.
            self.refuse(protocol, received, "shutting_down");
            return Err(IngestError::ShuttingDown);
        }
        self.metrics
            .spans_accepted
            .get_or_create(&ProtocolLabels { protocol: protocol.to_string() })
            .inc_by((received as u64).saturating_sub(rejected));
        let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message,
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }
}
