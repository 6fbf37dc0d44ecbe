//! Building OTLP from other trace formats: the helpers the Zipkin converter ([`crate::zipkin`]) and the dataset
//! readers of `skein-datasets` (Jaeger JSON, Nezha CSV) share.

use std::collections::HashMap;

use skein_proto::otlp_common::{self as pc, any_value};
use skein_proto::otlp_resource as pr;
use skein_proto::otlp_trace as pt;

use crate::{SpanId, TraceId};

/// An OTLP attribute.
pub fn kv(key: &str, value: any_value::Value) -> pc::KeyValue {
    pc::KeyValue { key: key.to_string(), value: Some(pc::AnyValue { value: Some(value) }), key_strindex: 0 }
}

/// An OTLP string attribute.
pub fn str_kv(key: &str, value: &str) -> pc::KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// Parses a (possibly short, left-padded) hex trace ID into OTLP bytes, naming the field on error.
pub fn trace_id_bytes(s: &str, what: &str) -> Result<Vec<u8>, String> {
    TraceId::from_hex(s).map(|t| t.0.to_vec()).map_err(|e| format!("{what}: {e}"))
}

/// Parses a (possibly short, left-padded) hex span ID into OTLP bytes, naming the field on error.
pub fn span_id_bytes(s: &str, what: &str) -> Result<Vec<u8>, String> {
    SpanId::from_hex(s).map(|t| t.0.to_vec()).map_err(|e| format!("{what}: {e}"))
}

/// Groups spans under one `ResourceSpans` per distinct resource and one `ScopeSpans` per distinct scope,
/// keeping first-appearance order.
pub fn group(items: Vec<(Vec<pc::KeyValue>, Option<pc::InstrumentationScope>, pt::Span)>) -> Vec<pt::ResourceSpans> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<pt::ResourceSpans> = Vec::new();
    for (attrs, scope, span) in items {
        let key = format!("{attrs:?}");
        let i = *index.entry(key).or_insert_with(|| {
            out.push(pt::ResourceSpans {
                resource: Some(pr::Resource {
                    attributes: attrs,
                    dropped_attributes_count: 0,
                    entity_refs: Vec::new(),
                }),
                scope_spans: Vec::new(),
                schema_url: String::new(),
            });
            out.len() - 1
        });
        let scopes = &mut out[i].scope_spans;
        let j = match scopes.iter().position(|ss| ss.scope == scope) {
            Some(j) => j,
            None => {
                scopes.push(pt::ScopeSpans { scope, spans: Vec::new(), schema_url: String::new() });
                scopes.len() - 1
            }
        };
        scopes[j].spans.push(span);
    }
    out
}
