//! The Zipkin v2 receiver: `POST /api/v2/spans` with a JSON array of spans (spec:
//! <https://zipkin.io/zipkin-api/#/default/post_spans>), optionally `Content-Encoding: gzip`, on port 9411.
//!
//! Spans are mapped as the OpenTelemetry Collector's Zipkin receiver maps them (see [`crate::formats`]'s Zipkin
//! reader: `kind`, `localEndpoint.serviceName` → `service.name`, `remoteEndpoint` → `peer.service` /
//! `net.peer.ip` / `net.peer.port`, tags → attributes, `error` tag → ERROR status, annotations → events; shared
//! client/server spans keep their one span ID and stay two spans, told apart by kind), then go through the same
//! validation, write-ahead log and pipeline as OTLP. Answers `202 Accepted` like Zipkin; `400` with a message for
//! bad JSON; `429` with `Retry-After` when overloaded.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;

use super::Ingest;
use super::http::{MAX_BODY_BYTES, decompress, refusal_status};
use skein_model::zipkin;

/// The router serving `POST /api/v2/spans`.
pub fn router(ingest: Ingest) -> Router {
    Router::new().route("/api/v2/spans", post(spans)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(ingest)
}

fn text(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], message).into_response()
}

async fn spans(State(ingest): State<Ingest>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" && !mime.is_empty() {
        ingest.metrics().reject_request("unsupported_media_type");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {content_type:?}: Skein accepts Zipkin v2 JSON (application/json)"),
        );
    }
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let parsed = decompress(encoding.trim(), &body).and_then(|raw| {
        let s = std::str::from_utf8(&raw).map_err(|e| format!("body is not UTF-8: {e}"))?;
        if !s.trim_start().starts_with('[') {
            return Err("Zipkin v2 JSON must be an array of spans".to_string());
        }
        let mut out = Vec::new();
        for (i, value) in serde_json::Deserializer::from_str(s).into_iter::<serde_json::Value>().enumerate() {
            let value = value.map_err(|e| format!("malformed Zipkin v2 JSON: JSON value {}: {e}", i + 1))?;
            out.extend(zipkin::to_otlp(&value).map_err(|e| format!("malformed Zipkin v2 JSON: {e}"))?);
        }
        Ok(out)
    });
    let resource_spans = match parsed {
        Ok(r) => r,
        Err(message) => {
            ingest.metrics().reject_request("malformed");
            return text(StatusCode::BAD_REQUEST, message);
        }
    };
    match ingest.export(ExportTraceServiceRequest { resource_spans }, None, "zipkin").await {
        Ok(r) => match r.partial_success {
            Some(p) => text(StatusCode::ACCEPTED, format!("{} spans rejected: {}", p.rejected_spans, p.error_message)),
            None => StatusCode::ACCEPTED.into_response(),
        },
        Err(e) => {
            let (status, retry) = refusal_status(&e);
            let mut resp = text(status, e.to_string());
            if let Some(secs) = retry {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            resp
        }
    }
}
