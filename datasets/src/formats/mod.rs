//! Readers for trace datasets, all producing OTLP `ResourceSpans` (what `skein-replay` sends).
//!
//! Formats, detected from content unless given:
//! - **OTLP JSON**: `TracesData` / `ExportTraceServiceRequest` (`{"resourceSpans":[…]}`), one per line or a whole
//!   file, or an api_v3 response (`{"result":{…}}`). Spec: <https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>.
//! - **Jaeger JSON**: `/api/traces` responses (`{"data":[{traceID, spans, processes}]}`) and Elasticsearch span
//!   documents (one span per line with an embedded `process`, `tag` maps with `@` for `.`; `{"index":{}}` lines
//!   skipped). Mapped to OTLP as Jaeger's translator does (`span.kind` → kind, `error`/`otel.status_code` →
//!   status, logs → events, `CHILD_OF` → parent, other references → links).
//! - **Zipkin v2 JSON**: an array of spans (`traceId`, `id`, `parentId`, `kind`, `localEndpoint`, `tags`,
//!   `annotations`; µs times).
//! - **Nezha CSV**: `TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,EndTimeUnixNano,Duration`;
//!   `service.name` is the pod name without its two trailing ReplicaSet/pod suffixes, `k8s.pod.name` the pod name.

mod jaeger;
mod nezha;

use std::path::Path;

use skein_proto::otlp_trace::{self as pt, TracesData};

/// A dataset format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OTLP JSON (`TracesData`, `ExportTraceServiceRequest` or an api_v3 `{"result":…}` response).
    OtlpJson,
    /// Jaeger `/api/traces` response JSON.
    JaegerJson,
    /// Jaeger Elasticsearch/OpenSearch span documents (NDJSON).
    JaegerEs,
    /// Zipkin v2 JSON.
    Zipkin,
    /// Nezha CSV.
    NezhaCsv,
}

/// A dataset that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The content is not valid for the format.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
}

/// Reads one file in the given (or detected) format.
///
/// # Errors
/// [`FormatError::Io`] when the file cannot be read; [`FormatError::Invalid`] when its content does not parse or
/// its format cannot be detected.
pub fn read_file(path: &Path, format: Option<Format>) -> Result<Vec<pt::ResourceSpans>, FormatError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::Io { path: p.clone(), source })?;
    read_str(&text, format).map_err(|message| FormatError::Invalid { path: p, message })
}

/// Reads text in the given (or detected) format.
///
/// # Errors
/// A message saying what did not parse.
pub fn read_str(text: &str, format: Option<Format>) -> Result<Vec<pt::ResourceSpans>, String> {
    let trimmed = text.trim_start();
    let is_csv = trimmed.starts_with("TraceID,");
    if format == Some(Format::NezhaCsv) || (format.is_none() && is_csv) {
        return nezha::read(text);
    }
    let mut out = Vec::new();
    for (i, value) in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>().enumerate() {
        let value = value.map_err(|e| format!("JSON value {}: {e}", i + 1))?;
        let f = match format {
            Some(f) => f,
            None => match detect(&value) {
                Some(f) => f,
                None if is_es_action(&value) => continue,
                None => return Err(format!("JSON value {}: unknown trace format", i + 1)),
            },
        };
        match f {
            Format::OtlpJson => out.extend(otlp_json(value)?),
            Format::JaegerJson => out.extend(jaeger::api_response(&value)?),
            Format::JaegerEs => {
                if !is_es_action(&value) {
                    out.extend(jaeger::es_document(&value)?);
                }
            }
            Format::Zipkin => out.extend(skein_model::zipkin::to_otlp(&value)?),
            // CSV is read whole above; detection never yields it for a JSON value.
            Format::NezhaCsv => return Err("a CSV dataset cannot contain JSON values".into()),
        }
    }
    Ok(out)
}

fn is_es_action(v: &serde_json::Value) -> bool {
    v.as_object().is_some_and(|o| o.len() == 1 && (o.contains_key("index") || o.contains_key("create")))
}

/// Detects the format of one JSON value.
pub fn detect(v: &serde_json::Value) -> Option<Format> {
    if v.get("resourceSpans").is_some() || v.get("result").and_then(|r| r.get("resourceSpans")).is_some() {
        return Some(Format::OtlpJson);
    }
    if v.get("data").and_then(|d| d.as_array()).is_some() {
        return Some(Format::JaegerJson);
    }
    if v.get("traceID").is_some() && v.get("spanID").is_some() {
        return Some(Format::JaegerEs);
    }
    if let Some(first) = v.as_array().and_then(|a| a.first())
        && first.get("traceId").is_some()
        && first.get("id").is_some()
    {
        return Some(Format::Zipkin);
    }
    None
}

fn otlp_json(value: serde_json::Value) -> Result<Vec<pt::ResourceSpans>, String> {
    let value = match value {
        serde_json::Value::Object(mut o) if o.contains_key("result") => o.remove("result").unwrap_or_default(),
        v => v,
    };
    let data: TracesData = serde_json::from_value(value).map_err(|e| format!("invalid OTLP JSON: {e}"))?;
    Ok(data.resource_spans)
}

/// Moves every timestamp of `all` (span start and end, event times) by one offset so that the latest span ends at
/// `now_nanos`, keeping relative timing; returns the offset applied, in nanoseconds (negative when the data lay in
/// the future). A replayed dataset then lies entirely in the past, inside a search window that ends now — the
/// window every query UI opens with. Zero timestamps (unset in OTLP) stay zero.
pub fn shift_to_end_at(all: &mut [pt::ResourceSpans], now_nanos: u64) -> i128 {
    let spans = || all.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
    let Some(latest) = spans().map(|s| s.end_time_unix_nano.max(s.start_time_unix_nano)).filter(|t| *t > 0).max()
    else {
        return 0;
    };
    let delta = i128::from(now_nanos) - i128::from(latest);
    let moved = |t: u64| if t == 0 { 0 } else { u64::try_from((i128::from(t) + delta).max(1)).unwrap_or(u64::MAX) };
    for s in all.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
        s.start_time_unix_nano = moved(s.start_time_unix_nano);
        s.end_time_unix_nano = moved(s.end_time_unix_nano);
        for e in &mut s.events {
            e.time_unix_nano = moved(e.time_unix_nano);
        }
    }
    delta
}

#[cfg(test)]
mod tests;
