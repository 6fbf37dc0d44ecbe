//! One buffered export: an encoded OTLP request with its span counts and destination, as the buffer holds it in
//! memory and the spill file stores it on disk.

use bytes::Bytes;
use prost::Message as _;
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;

use crate::wire::is_error;

/// Bookkeeping bytes charged per memory entry on top of its payload.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// One buffered export: an encoded OTLP `ExportTraceServiceRequest` and its span counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Protobuf encoding of the request.
    pub payload: Bytes,
    /// Spans in it.
    pub spans: u32,
    /// Of those, spans with error status.
    pub error_spans: u32,
    /// Rendezvous key of the collector its spans were routed to when accepted (0: not routed). The forwarder
    /// sends the payload as is while that collector is usable, and re-routes it otherwise.
    pub dest: u64,
}

impl Entry {
    /// Encodes a request routed to `dest`, counting its spans and error spans.
    pub fn encode(request: &ExportTraceServiceRequest, dest: u64) -> Self {
        let (mut spans, mut error_spans) = (0u32, 0u32);
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            spans += 1;
            error_spans += u32::from(is_error(span));
        }
        Self { payload: Bytes::from(request.encode_to_vec()), spans, error_spans, dest }
    }

    /// Decodes the request.
    ///
    /// # Errors
    /// The payload is not a valid request (only possible for corrupt spill data that passed its checksum).
    pub fn decode(&self) -> Result<ExportTraceServiceRequest, prost::DecodeError> {
        ExportTraceServiceRequest::decode(self.payload.clone())
    }

    /// The entry with its error spans only, or `None` when it has none.
    pub fn errors_only(&self) -> Option<Self> {
        if self.error_spans == 0 {
            return None;
        }
        if self.error_spans == self.spans {
            return Some(self.clone());
        }
        let mut req = self.decode().ok()?;
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(is_error);
            }
            rs.scope_spans.retain(|s| !s.spans.is_empty());
        }
        req.resource_spans.retain(|r| !r.scope_spans.is_empty());
        Some(Self::encode(&req, self.dest))
    }

    pub(crate) fn mem_bytes(&self) -> usize {
        self.payload.len() + ENTRY_OVERHEAD_BYTES
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use skein_proto::otlp_common::{AnyValue, KeyValue, any_value};
    use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;

    /// A ~1 KiB entry whose spans are named `id`; the first `errors` spans have error status.
    pub(crate) fn entry(id: u8, spans: u32, errors: u32) -> Entry {
        let pad = KeyValue {
            key: "pad".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(900 / spans as usize))) }),
            ..Default::default()
        };
        let spans = (0..spans)
            .map(|i| Span {
                trace_id: vec![id, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                span_id: vec![1; 8],
                name: id.to_string(),
                attributes: vec![pad.clone()],
                status: (i < errors).then(|| Status { code: 2, ..Default::default() }),
                ..Default::default()
            })
            .collect();
        Entry::encode(
            &ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            },
            u64::from(id),
        )
    }

    /// The `id` an [`entry`] was built with.
    pub(crate) fn id_of(e: &Entry) -> u8 {
        e.decode().expect("valid").resource_spans[0].scope_spans[0].spans[0].name.parse().expect("numeric name")
    }
}
