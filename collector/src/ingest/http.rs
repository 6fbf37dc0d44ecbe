//! The OTLP/HTTP receiver: `POST /v1/traces` with protobuf (`application/x-protobuf`) or JSON
//! (`application/json`) bodies, optionally `Content-Encoding: gzip` or `zstd`.
//!
//! Spec: <https://opentelemetry.io/docs/specs/otlp/#otlphttp>. The response uses the request's content type;
//! errors carry a `google.rpc.Status` body (protobuf or JSON) with a message saying what was wrong. OTLP JSON is
//! decoded by `opentelemetry-proto`'s serde support: hex trace and span IDs, integer enums, int64 as strings or
//! numbers, unknown fields ignored.

use std::io::Read as _;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message as _;
use skein_proto::otlp_collector_trace::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use super::{Ingest, IngestError};

/// Largest accepted request body, compressed or not, bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// `google.rpc.Status`, the OTLP/HTTP error body (`details` omitted).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    /// gRPC status code (3 = INVALID_ARGUMENT, 14 = UNAVAILABLE).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// The router serving `POST /v1/traces`.
pub fn router(ingest: Ingest) -> Router {
    Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(ingest)
}

struct HttpError {
    status: StatusCode,
    format: Format,
    message: String,
}

/// Maps a whole-request refusal to its HTTP status: 429 (with `Retry-After`) for overload, 503 otherwise.
pub(crate) fn refusal_status(e: &IngestError) -> (StatusCode, Option<u32>) {
    match e {
        IngestError::Overloaded { retry_after_secs, .. } => (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs)),
        IngestError::ShuttingDown | IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let code = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => 14,
            StatusCode::TOO_MANY_REQUESTS => 8,
            _ => 3,
        };
        let status = RpcStatus { code, message: self.message };
        let mut response = encode_response(self.status, self.format, &status, |s| s.encode_to_vec());
        if self.status == StatusCode::TOO_MANY_REQUESTS || self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::ingest::RETRY_AFTER_SECS));
        }
        response
    }
}

fn encode_response<T: serde::Serialize>(
    status: StatusCode,
    format: Format,
    body: &T,
    protobuf: impl FnOnce(&T) -> Vec<u8>,
) -> Response {
    match format {
        Format::Protobuf => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"))], protobuf(body))
                .into_response()
        }
        Format::Json => {
            let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
        }
    }
}

async fn export(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&ingest, &headers, body).await {
        Ok((format, response)) => encode_response(StatusCode::OK, format, &response, |r| r.encode_to_vec()),
        Err(e) => {
            // Refusals of whole requests are counted by `Ingest::export` itself.
            match e.status {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => ingest.metrics().reject_request("unsupported_media_type"),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {}
                _ => ingest.metrics().reject_request("malformed"),
            }
            e.into_response()
        }
    }
}

async fn handle(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Format, ExportTraceServiceResponse), HttpError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            return Err(HttpError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format: Format::Json,
                message: format!(
                    "unsupported Content-Type {content_type:?}: use application/x-protobuf or application/json"
                ),
            });
        }
    };
    let bad = |message: String| HttpError { status: StatusCode::BAD_REQUEST, format, message };
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let raw = decompress(encoding.trim(), &body).map_err(bad)?;
    let (request, raw) = match format {
        Format::Protobuf => {
            let raw = bytes::Bytes::from(raw);
            let request = ExportTraceServiceRequest::decode(raw.clone())
                .map_err(|e| bad(format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}")))?;
            (request, Some(raw))
        }
        Format::Json => {
            let request = serde_json::from_slice::<ExportTraceServiceRequest>(&raw)
                .map_err(|e| bad(format!("malformed OTLP JSON ExportTraceServiceRequest: {e}")))?;
            (request, None)
        }
    };
    let response = ingest.export(request, raw, "http").await.map_err(|e| HttpError {
        status: refusal_status(&e).0,
        format,
        message: e.to_string(),
    })?;
    Ok((format, response))
}

/// Decompresses a request body, refusing output larger than [`MAX_BODY_BYTES`].
pub(crate) fn decompress(encoding: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let limit = MAX_BODY_BYTES as u64 + 1;
    let mut out = Vec::new();
    let result = match encoding.to_ascii_lowercase().as_str() {
        "" | "identity" => return Ok(body.to_vec()),
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body).take(limit).read_to_end(&mut out),
        "zstd" => match zstd::stream::read::Decoder::new(body) {
            Ok(d) => d.take(limit).read_to_end(&mut out),
            Err(e) => Err(e),
        },
        other => return Err(format!("unsupported Content-Encoding {other:?}: use gzip, zstd, deflate or identity")),
    };
    result.map_err(|e| format!("body is not valid {encoding}: {e}"))?;
    if out.len() > MAX_BODY_BYTES {
        return Err(format!("decompressed body exceeds {MAX_BODY_BYTES} bytes"));
    }
    Ok(out)
}
