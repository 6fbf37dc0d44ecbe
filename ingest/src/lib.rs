//! Skein's ingest pipeline: receivers → write-ahead log → trace assembly (with tail sampling) → storage writer,
//! and the remote-sampling API.
//!
//! Every receiver ([`grpc`], [`http`], [`zipkin`]) hands a request to [`Ingest::export_protobuf`] (protobuf bytes,
//! decoded straight into spans by [`decode_export`]) or [`Ingest::export`] (decoded structs, validated with
//! [`convert`]); both log the request in the [`wal`], count, and hand accepted spans to the [`assembly`] over a
//! bounded channel, and the receiver reports rejected spans back in OTLP `partial_success`
//! (spec: <https://opentelemetry.io/docs/specs/otlp/#partial-success>). The assembler groups spans by trace, asks
//! [`sampling::tail`] for a decision and hands trace chunks to the [`writer`], which persists them through
//! `skein_storage::TraceStore`. [`pipeline`] starts all of it as one component with a shutdown handle (replaying the
//! write-ahead log through [`Ingest::accept_logged`], the same path live requests take); [`sampling::remote`] serves
//! head-sampling strategies; [`reload`] re-reads the configuration file.
//!
//! This crate must not import `skein-query` or the server binaries' code.

pub mod assembly;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod sampling;
pub mod wal;
pub mod writer;
pub mod zipkin;

use std::sync::Arc;

use prost::Message as _;
use skein_proto::otlp_collector_trace::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::{Semaphore, mpsc};

use skein_model::otlp::{Converted, Processes};
pub use skein_model::otlp::{Limits, convert, decode_export};

use crate::assembly::Batch;
use crate::metrics::{Metrics, ProtocolLabels, ReasonLabels, RefusedLabels, ResultLabels};
use crate::wal::{Wal, WalError};

/// Default `--max-inflight-bytes`: export-request bytes processed at once before new requests are refused.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 * 1024 * 1024;
/// Budget of the cache of decoded resources and scopes shared across OTLP/gRPC requests
/// ([`skein_model::otlp::Processes`]), bytes: about 16 thousand processes of 1 KiB.
pub const PROCESS_CACHE_BYTES: u64 = 16 * 1024 * 1024;
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
    /// The request is not valid OTLP (the message names the field); retrying it cannot succeed.
    #[error("{0}")]
    Malformed(String),
}

/// The receivers' handle on the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    limits: Arc<Limits>,
    processes: Arc<Processes>,
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
            processes: Arc::new(Processes::new(PROCESS_CACHE_BYTES)),
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

    fn count_processes(&self, converted: &Converted) {
        let lookups = &self.metrics.process_cache_lookups;
        lookups.get_or_create(&ResultLabels { result: "hit" }).inc_by(converted.processes_reused);
        lookups.get_or_create(&ResultLabels { result: "miss" }).inc_by(converted.processes_decoded);
        self.metrics.process_cache_bytes.set(i64::try_from(self.processes.weight_bytes()).unwrap_or(i64::MAX));
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
        let size = raw.as_ref().map_or_else(|| request.encoded_len(), |r| r.len());
        let received: usize =
            request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        let logging = self.wal.is_some();
        let limits = self.limits.clone();
        let admitted = move || {
            let payload = match (logging, raw) {
                (false, _) => None,
                (true, Some(r)) => Some(r),
                (true, None) => Some(bytes::Bytes::from(request.encode_to_vec())),
            };
            let resource_spans = request.resource_spans;
            let converting = async move {
                if received > 256 {
                    tokio::task::spawn_blocking(move || convert(resource_spans, &limits)).await.ok()
                } else {
                    Some(convert(resource_spans, &limits))
                }
            };
            (payload, converting)
        };
        self.admit(protocol, received, size, admitted).await
    }

    /// [`Ingest::export`] for a request as protobuf bytes (the OTLP/gRPC body): decoded straight into spans by
    /// [`skein_model::otlp::decode_export`], and those bytes are what the write-ahead log keeps.
    ///
    /// # Errors
    /// [`IngestError::Malformed`] when the bytes are not an `ExportTraceServiceRequest` (nothing is logged then),
    /// else as [`Ingest::export`].
    pub async fn export_protobuf(
        &self,
        raw: bytes::Bytes,
        protocol: &str,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let converted = decode_export(&raw, &self.limits, &self.processes)
            .map_err(|e| IngestError::Malformed(format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}")))?;
        self.count_processes(&converted);
        let received = converted.spans.len() + usize::try_from(converted.rejected_count()).unwrap_or(usize::MAX);
        let size = raw.len();
        let payload = self.wal.as_ref().map(|_| raw);
        self.admit(protocol, received, size, move || (payload, std::future::ready(Some(converted)))).await
    }

    /// Counts a request of `received` spans and takes `size` bytes of the in-flight budget; once admitted,
    /// `admitted` gives the bytes to log (when the log is on) and the validation to run meanwhile, and the accepted
    /// spans are forwarded.
    async fn admit<F: Future<Output = Option<Converted>>>(
        &self,
        protocol: &str,
        received: usize,
        size: usize,
        admitted: impl FnOnce() -> (Option<bytes::Bytes>, F),
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        self.metrics
            .spans_received
            .get_or_create(&ProtocolLabels { protocol: protocol.to_string() })
            .inc_by(received as u64);
        let permits = u32::try_from(size.clamp(1, self.max_inflight_bytes)).unwrap_or(u32::MAX);
        let Ok(_permit) = self.inflight.clone().try_acquire_many_owned(permits) else {
            self.refuse(protocol, received, "inflight_bytes");
            return Err(IngestError::Overloaded { reason: "inflight_bytes", retry_after_secs: RETRY_AFTER_SECS });
        };
        self.metrics.inflight_bytes.inc_by(permits as i64);
        let (payload, converting) = admitted();
        let result = self.accept(payload, converting, protocol, received).await;
        self.metrics.inflight_bytes.dec_by(permits as i64);
        result
    }

    async fn accept(
        &self,
        payload: Option<bytes::Bytes>,
        converting: impl Future<Output = Option<Converted>>,
        protocol: &str,
        received: usize,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let logged = async {
            match (&self.wal, payload) {
                (Some(wal), Some(payload)) => wal.append(payload).await.map(Some),
                _ => Ok(None),
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
        if self.forward(converted.spans, wal_seq, false).await.is_err() {
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

    /// Hands validated spans, logged under `wal_seq`, to the assembler; spans of a request that had none left
    /// release their log record at once. Live requests and write-ahead-log replay both end here.
    ///
    /// # Errors
    /// [`IngestError::ShuttingDown`] when the assembler is gone.
    async fn forward(
        &self,
        spans: Vec<skein_model::Span>,
        wal_seq: Option<u64>,
        replayed: bool,
    ) -> Result<(), IngestError> {
        if spans.is_empty() {
            if let (Some(wal), Some(seq)) = (&self.wal, wal_seq) {
                wal.refs().release(seq);
            }
            return Ok(());
        }
        self.spans.send(Batch { spans, wal_seq, replayed }).await.map_err(|_| IngestError::ShuttingDown)
    }

    /// Feeds the write-ahead log's records (from [`Wal::open`]) back through validation and [`Ingest::forward`],
    /// as their requests took when they arrived, before the receivers open. Returns the spans replayed; an
    /// undecodable record is skipped and counted in `skein_wal_corrupt_records_total`. Rejections were counted
    /// when the request arrived and are not counted again.
    pub async fn replay(&self, records: Vec<crate::wal::Record>) -> u64 {
        let mut replayed = 0u64;
        for r in records {
            let converted = match decode_export(&r.payload, &self.limits, &self.processes) {
                Ok(converted) => {
                    self.count_processes(&converted);
                    converted
                }
                Err(e) => {
                    tracing::warn!(seq = r.seq, error = %e, "undecodable write-ahead-log record skipped");
                    self.metrics.wal_corrupt_records.inc();
                    if let Some(wal) = &self.wal {
                        wal.refs().release(r.seq);
                    }
                    continue;
                }
            };
            let n = converted.spans.len() as u64;
            if self.forward(converted.spans, Some(r.seq), true).await.is_err() {
                break;
            }
            replayed += n;
        }
        self.metrics.wal_replayed_spans.inc_by(replayed);
        replayed
    }
}
