//! Ingest: OTLP receivers (gRPC and HTTP) in front of validation and trace assembly.
//!
//! Both receivers decode a request, call [`Ingest::export`] — which validates with [`convert`], counts, and hands
//! accepted spans to the assembler over a bounded channel — and report rejected spans back in OTLP
//! `partial_success` (spec: <https://opentelemetry.io/docs/specs/otlp/#partial-success>).

pub mod convert;
pub mod grpc;
pub mod http;

use std::sync::Arc;

use skein_proto::otlp_collector_trace::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use skein_proto::otlp_trace::ResourceSpans;
use tokio::sync::mpsc;

pub use convert::{Limits, convert, to_otlp};

use crate::metrics::{Metrics, ProtocolLabels, ReasonLabels};
use crate::model::Span;

/// Why an export could not be accepted at all.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The pipeline behind the receivers is shutting down.
    #[error("the collector is shutting down")]
    ShuttingDown,
}

/// The receivers' handle on the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    spans: mpsc::Sender<Vec<Span>>,
}

impl Ingest {
    /// Creates a handle that sends accepted spans to `spans` (the assembler's input).
    pub fn new(limits: Limits, metrics: Arc<Metrics>, spans: mpsc::Sender<Vec<Span>>) -> Self {
        Self { limits: Arc::new(limits), metrics, spans }
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Validates and accepts one export request, returning the OTLP response (with `partial_success` when spans
    /// were rejected).
    ///
    /// # Errors
    /// [`IngestError::ShuttingDown`] when the assembler has stopped; nothing of the request was accepted then.
    pub async fn export(
        &self,
        resource_spans: Vec<ResourceSpans>,
        protocol: &str,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let received: usize = resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        self.metrics
            .spans_received
            .get_or_create(&ProtocolLabels { protocol: protocol.to_string() })
            .inc_by(received as u64);
        let limits = self.limits.clone();
        let converted = if received > 256 {
            tokio::task::spawn_blocking(move || convert(resource_spans, &limits))
                .await
                .map_err(|_| IngestError::ShuttingDown)?
        } else {
            convert(resource_spans, &limits)
        };
        for (reason, n) in &converted.rejected {
            self.metrics.spans_rejected.get_or_create(&ReasonLabels { reason: reason.label().to_string() }).inc_by(*n);
        }
        let rejected = converted.rejected_count();
        let message = converted.rejection_message();
        if !converted.spans.is_empty() && self.spans.send(converted.spans).await.is_err() {
            self.metrics.reject_request("shutting_down");
            return Err(IngestError::ShuttingDown);
        }
        let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message,
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }
}
