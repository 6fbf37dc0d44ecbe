//! The OTLP/HTTP receiver: `POST /v1/traces`; body reading and error bodies are [`skein_proto::otlp_http`]'s
//! (protobuf or JSON, gzip/zstd/deflate); protobuf bodies are decoded by [`Ingest::export_protobuf`], JSON by
//! `otlp_http::decode_json`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use skein_proto::otlp_http::{self, Format, HttpError};

use super::{Ingest, IngestError};

pub use skein_proto::otlp_http::{MAX_BODY_BYTES, decompress};

/// The router serving `POST /v1/traces`.
pub fn router(ingest: Ingest) -> Router {
    Router::new().route("/v1/traces", post(export)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(ingest)
}

/// Maps a whole-request refusal to its HTTP status: 429 (with `Retry-After`) for overload, 400 for a malformed
/// request, 503 otherwise.
pub(crate) fn refusal_status(e: &IngestError) -> (StatusCode, Option<u32>) {
    match e {
        IngestError::Overloaded { retry_after_secs, .. } => (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs)),
        IngestError::ShuttingDown | IngestError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
        IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, None),
    }
}

/// An HTTP response with a body in `format`.
pub(crate) fn respond(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()))], body).into_response()
}

fn error_response(e: &HttpError) -> Response {
    let mut response = respond(e.status, e.format, e.body());
    if e.status == StatusCode::TOO_MANY_REQUESTS || e.status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::RETRY_AFTER_SECS));
    }
    response
}

async fn export(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let decoded = otlp_http::read_body(&headers, &body).and_then(|(format, raw)| match format {
        Format::Protobuf => Ok((format, None, Bytes::from(raw))),
        Format::Json => otlp_http::decode_json(&raw).map(|request| (format, Some(request), Bytes::new())),
    });
    let (format, request, raw) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => {
            let reason =
                if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE { "unsupported_media_type" } else { "malformed" };
            ingest.metrics().reject_request(reason);
            return error_response(&e);
        }
    };
    // Protobuf bodies are decoded straight into spans, as gRPC requests are; refusals of whole requests are
    // counted by `Ingest` itself, except a malformed body, counted here as the decoding errors above are.
    let result = match request {
        None => ingest.export_protobuf(raw, "http").await,
        Some(request) => ingest.export(request, None, "http").await,
    };
    match result {
        Ok(response) => respond(StatusCode::OK, format, otlp_http::encode(format, &response)),
        Err(e) => {
            if matches!(e, IngestError::Malformed(_)) {
                ingest.metrics().reject_request("malformed");
            }
            error_response(&HttpError { status: refusal_status(&e).0, format, message: e.to_string() })
        }
    }
}
