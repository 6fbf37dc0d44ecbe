//! The app-facing receivers: OTLP/gRPC (shared [`ExportServer`]) and OTLP/HTTP `POST /v1/traces` (protobuf or
//! JSON, via [`skein_proto::otlp_http`]). An export call returns as soon as its spans are in the buffer; the
//! agent never refuses a well-formed request (what the buffer cannot keep is dropped by policy and counted).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message as _;
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use skein_proto::otlp_grpc::{ExportHandler, ExportServer, RawExport};
use skein_proto::otlp_http::{self, Format, MAX_BODY_BYTES};
use tonic::Status;

use crate::buffer::{Buffer, Entry};
use crate::forward::partition;
use crate::metrics::{Metrics, Protocol};
use crate::process::Processor;
use crate::route::{Routes, choose, trace_hash};

/// Largest export request accepted from the app (decompressed), bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// Accepts export requests from the app into the buffer.
#[derive(Clone)]
pub struct Receiver {
    buffer: Arc<Buffer>,
    processor: Arc<Processor>,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
}

impl Receiver {
    /// A receiver feeding `buffer` through `processor`, routing spans over `routes`.
    pub fn new(buffer: Arc<Buffer>, processor: Arc<Processor>, routes: Arc<Routes>, metrics: Arc<Metrics>) -> Self {
        Self { buffer, processor, routes, metrics }
    }

    /// Processes (sampling, enrichment, redaction), routes (each span to its trace's collector: one buffered
    /// entry per collector, sent later without decoding) and buffers one decoded request.
    pub fn accept(&self, mut request: ExportTraceServiceRequest, protocol: &str) -> ExportTraceServiceResponse {
        let received: u64 =
            request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum();
        self.metrics.spans_received.get_or_create(&Protocol { protocol: protocol.to_string() }).inc_by(received);
        let out = self.processor.process(&mut request);
        self.metrics.spans_sampled_out.inc_by(out.sampled_out);
        self.metrics.attributes_redacted.inc_by(out.redacted);
        if out.spans == 0 {
            return ExportTraceServiceResponse { partial_success: None };
        }
        let keys = self.routes.usable_keys();
        if keys.len() <= 1 {
            self.buffer.push(Entry::encode(&request, keys.first().copied().unwrap_or(0)));
        } else {
            let (shares, _) = partition(vec![request], |id| choose(trace_hash(id), &keys, |_| true), usize::MAX);
            for (i, requests) in shares {
                for r in requests {
                    self.buffer.push(Entry::encode(&r, keys[i]));
                }
            }
        }
        ExportTraceServiceResponse { partial_success: None }
    }

    /// [`Receiver::accept`] for an encoded request: on the wire path (no decoding) unless redaction rules
    /// need the decoded one.
    ///
    /// # Errors
    /// The bytes are not a valid request: a message saying why (answered `INVALID_ARGUMENT` / 400).
    pub fn accept_raw(&self, raw: Bytes, protocol: &str) -> Result<ExportTraceServiceResponse, String> {
        let decode = || {
            ExportTraceServiceRequest::decode(raw.clone())
                .map_err(|e| format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}"))
        };
        if self.processor.needs_decode() {
            return Ok(self.accept(decode()?, protocol));
        }
        let keys = self.routes.usable_keys();
        let out = match self.processor.process_wire(&raw, &keys) {
            Ok(out) => out,
            // Envelopes the wire reader refuses but prost accepts still go through, decoded.
            Err(e) => return decode().map(|r| self.accept(r, protocol)).map_err(|d| format!("{d} ({e})")),
        };
        self.metrics.spans_received.get_or_create(&Protocol { protocol: protocol.to_string() }).inc_by(out.received);
        self.metrics.spans_sampled_out.inc_by(out.sampled_out);
        for r in out.routed {
            let dest = keys.get(r.dest).copied().unwrap_or(0);
            self.buffer.push(Entry { payload: r.payload, spans: r.spans, error_spans: r.error_spans, dest });
        }
        Ok(ExportTraceServiceResponse { partial_success: None })
    }

    /// The OTLP/gRPC service.
    pub fn grpc(self) -> ExportServer<Self> {
        ExportServer::new(self, MAX_REQUEST_BYTES)
    }

    /// The OTLP/HTTP router (`POST /v1/traces`).
    pub fn http(self) -> Router {
        Router::new()
            .route("/v1/traces", post(http_export))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self)
    }
}

impl ExportHandler for Receiver {
    fn export(
        &self,
        request: RawExport,
    ) -> impl Future<Output = Result<ExportTraceServiceResponse, Status>> + Send + 'static {
        let response = self.accept_raw(request.raw, "grpc").map_err(Status::invalid_argument);
        async move { response }
    }

    fn rejected(&self, reason: &str) {
        self.metrics.reject_request(reason);
    }
}

fn respond(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()))], body).into_response()
}

async fn http_export(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let result = otlp_http::read_body(&headers, &body).and_then(|(format, raw)| match format {
        Format::Protobuf => receiver
            .accept_raw(Bytes::from(raw), "http")
            .map(|r| (format, r))
            .map_err(|message| otlp_http::HttpError { status: StatusCode::BAD_REQUEST, format, message }),
        Format::Json => otlp_http::decode_json(&raw).map(|req| (format, receiver.accept(req, "http"))),
    });
    match result {
        Ok((format, response)) => respond(StatusCode::OK, format, otlp_http::encode(format, &response)),
        Err(e) => {
            let reason =
                if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE { "unsupported_media_type" } else { "malformed" };
            receiver.metrics.reject_request(reason);
            respond(e.status, e.format, e.body())
        }
    }
}
