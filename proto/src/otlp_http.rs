//! OTLP/HTTP trace requests and responses (`POST /v1/traces`), shared by the collector's and the agent's
//! receivers: protobuf (`application/x-protobuf`) or JSON (`application/json`) bodies, optionally
//! `Content-Encoding: gzip`, `zstd` or `deflate`.
//!
//! Spec: <https://opentelemetry.io/docs/specs/otlp/#otlphttp>. The response uses the request's content type;
//! errors carry a `google.rpc.Status` body (protobuf or JSON) with a message saying what was wrong. OTLP JSON is
//! decoded by `opentelemetry-proto`'s serde support: hex trace and span IDs, integer enums, int64 as strings or
//! numbers, unknown fields ignored.

use std::io::Read as _;

use prost::Message as _;
use tonic::codegen::Bytes;
use tonic::codegen::http::{HeaderMap, StatusCode, header};

use crate::otlp_collector_trace::ExportTraceServiceRequest;

/// Largest accepted request body, compressed or decompressed, bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// `google.rpc.Status`, the OTLP/HTTP error body (`details` omitted).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    /// gRPC status code (3 = INVALID_ARGUMENT, 8 = RESOURCE_EXHAUSTED, 14 = UNAVAILABLE).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Body encoding of a request and of its response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// A refused request: HTTP status, the format to answer in, and the message.
#[derive(Debug)]
pub struct HttpError {
    /// 400, 415, 429 or 503.
    pub status: StatusCode,
    /// Response encoding.
    pub format: Format,
    /// What was wrong.
    pub message: String,
}

impl HttpError {
    /// The `google.rpc.Status` body (as bytes) for this error.
    pub fn body(&self) -> Vec<u8> {
        let code = match self.status {
            StatusCode::SERVICE_UNAVAILABLE => 14,
            StatusCode::TOO_MANY_REQUESTS => 8,
            _ => 3,
        };
        encode(self.format, &RpcStatus { code, message: self.message.clone() })
    }
}

/// Encodes a response message in `format`.
pub fn encode<T: prost::Message + serde::Serialize>(format: Format, body: &T) -> Vec<u8> {
    match format {
        Format::Protobuf => body.encode_to_vec(),
        Format::Json => serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// The format named by a `Content-Type` header.
///
/// # Errors
/// 415 for anything but protobuf or JSON.
pub fn format_of(headers: &HeaderMap) -> Result<Format, HttpError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(HttpError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format: Format::Json,
            message: format!(
                "unsupported Content-Type {content_type:?}: use application/x-protobuf or application/json"
            ),
        }),
    }
}

/// Reads an export request body: its format and the decompressed bytes.
///
/// # Errors
/// 415 for an unsupported content type, 400 for a bad content encoding.
pub fn read_body(headers: &HeaderMap, body: &[u8]) -> Result<(Format, Vec<u8>), HttpError> {
    let format = format_of(headers)?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let raw = decompress(encoding.trim(), body).map_err(|message| HttpError {
        status: StatusCode::BAD_REQUEST,
        format,
        message,
    })?;
    Ok((format, raw))
}

/// Decodes OTLP JSON.
///
/// # Errors
/// 400 with serde's message.
pub fn decode_json(raw: &[u8]) -> Result<ExportTraceServiceRequest, HttpError> {
    serde_json::from_slice::<ExportTraceServiceRequest>(raw).map_err(|e| HttpError {
        status: StatusCode::BAD_REQUEST,
        format: Format::Json,
        message: format!("malformed OTLP JSON ExportTraceServiceRequest: {e}"),
    })
}

/// Decodes an export request body; returns the format, the request, and for protobuf the decompressed bytes.
///
/// # Errors
/// 415 for an unsupported content type, 400 for a bad encoding or a malformed body.
pub fn decode_request(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Format, ExportTraceServiceRequest, Option<Bytes>), HttpError> {
    let (format, raw) = read_body(headers, body)?;
    match format {
        Format::Protobuf => {
            let raw = Bytes::from(raw);
            let request = ExportTraceServiceRequest::decode(raw.clone()).map_err(|e| HttpError {
                status: StatusCode::BAD_REQUEST,
                format,
                message: format!("malformed OTLP ExportTraceServiceRequest protobuf: {e}"),
            })?;
            Ok((format, request, Some(raw)))
        }
        Format::Json => Ok((format, decode_json(&raw)?, None)),
    }
}

/// Decompresses a request body, refusing output larger than [`MAX_BODY_BYTES`].
///
/// # Errors
/// An unsupported encoding, a corrupt body, or too much output.
pub fn decompress(encoding: &str, body: &[u8]) -> Result<Vec<u8>, String> {
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
