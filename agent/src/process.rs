//! What the agent does to spans before anything leaves the pod: Kubernetes resource enrichment from the
//! downward-API environment, head sampling by trace-ID hash, and attribute redaction.

use regex::Regex;
use sha2::{Digest as _, Sha256};
use skein_proto::otlp_collector_trace::ExportTraceServiceRequest;
use skein_proto::otlp_common::{AnyValue, KeyValue, any_value};

use crate::config::{AgentConfig, HeadSampling, RedactAction};
use crate::wire::is_error;

/// Downward-API environment variables and the OpenTelemetry semantic-convention resource attribute each fills.
pub const K8S_ENV: &[(&str, &str)] = &[
    ("K8S_POD_NAME", "k8s.pod.name"),
    ("K8S_NAMESPACE", "k8s.namespace.name"),
    ("K8S_NODE_NAME", "k8s.node.name"),
    ("K8S_POD_UID", "k8s.pod.uid"),
    ("K8S_POD_IP", "k8s.pod.ip"),
    ("K8S_CONTAINER_NAME", "k8s.container.name"),
];

/// The value written in place of a masked attribute.
pub const MASK: &str = "****";

/// What processing one request did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// Spans left in the request.
    pub spans: u64,
    /// Of those, spans with error status.
    pub error_spans: u64,
    /// Spans removed by head sampling.
    pub sampled_out: u64,
    /// Attributes masked, hashed or dropped.
    pub redacted: u64,
}

/// Enrichment, head sampling and redaction, built once from the environment and the config file.
#[derive(Debug, Default)]
pub struct Processor {
    enrich: Vec<(String, String)>,
    /// `enrich` as encoded `Resource.attributes` fields, for [`Processor::process_wire`].
    enrich_fields: Vec<(String, Vec<u8>)>,
    rules: Vec<(Regex, RedactAction)>,
    sampling: Option<HeadSampling>,
}

impl Processor {
    /// Builds the processor from `config` and the given environment lookup (`std::env::var` in the binary).
    ///
    /// # Errors
    /// An invalid redaction regex (already checked by [`AgentConfig::parse`]).
    pub fn new(config: &AgentConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, regex::Error> {
        let enrich: Vec<(String, String)> = K8S_ENV
            .iter()
            .filter_map(|(var, key)| env(var).filter(|v| !v.is_empty()).map(|v| (key.to_string(), v)))
            .collect();
        let rules = config
            .redaction
            .iter()
            .map(|r| Ok((Regex::new(&r.key)?, r.action)))
            .collect::<Result<Vec<_>, regex::Error>>()?;
        let sampling = config.head_sampling.clone().filter(|h| h.sampling_percentage < 100.0);
        let enrich_fields = enrich
            .iter()
            .map(|(k, v)| {
                let kv = KeyValue { key: k.clone(), value: Some(string_value(v.clone())), ..Default::default() };
                let body = prost::Message::encode_to_vec(&kv);
                let mut field = vec![0x0a]; // Resource.attributes, field 1, length-delimited
                prost::encoding::encode_varint(body.len() as u64, &mut field);
                field.extend_from_slice(&body);
                (k.clone(), field)
            })
            .collect();
        Ok(Self { enrich, enrich_fields, rules, sampling })
    }

    /// Whether requests must take the decoded path: redaction rewrites attribute values, which the wire path
    /// does not reach.
    pub fn needs_decode(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Enrichment, head sampling and routing over `keys` on the encoded request (see [`crate::wire`]); the
    /// result equals [`Processor::process`] followed by routing.
    ///
    /// # Errors
    /// The envelope is not valid protobuf.
    pub fn process_wire(
        &self,
        raw: &bytes::Bytes,
        keys: &[u64],
    ) -> Result<crate::wire::Outcome, crate::wire::WireError> {
        let h = self.sampling.as_ref();
        let keep =
            |id: &[u8]| h.is_none_or(|h| skein_proto::sampling::sampled(&h.hash_salt, id, h.sampling_percentage));
        let plan = crate::wire::Plan {
            enrich: &self.enrich_fields,
            keep: if h.is_some() { Some(&keep as &crate::wire::KeepTrace<'_>) } else { None },
        };
        crate::wire::process(raw, &plan, keys)
    }

    /// Applies head sampling, enrichment (never overwriting an attribute the SDK set) and redaction in place;
    /// empty scopes and resources are removed.
    pub fn process(&self, request: &mut ExportTraceServiceRequest) -> Processed {
        let mut out = Processed::default();
        for rs in &mut request.resource_spans {
            for ss in &mut rs.scope_spans {
                if let Some(h) = &self.sampling {
                    let before = ss.spans.len();
                    ss.spans
                        .retain(|s| skein_proto::sampling::sampled(&h.hash_salt, &s.trace_id, h.sampling_percentage));
                    out.sampled_out += (before - ss.spans.len()) as u64;
                }
                if self.rules.is_empty() {
                    continue;
                }
                if let Some(scope) = &mut ss.scope {
                    out.redacted += self.redact(&mut scope.attributes);
                }
                for span in &mut ss.spans {
                    out.redacted += self.redact(&mut span.attributes);
                    for e in &mut span.events {
                        out.redacted += self.redact(&mut e.attributes);
                    }
                    for l in &mut span.links {
                        out.redacted += self.redact(&mut l.attributes);
                    }
                }
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            if rs.scope_spans.is_empty() {
                continue;
            }
            let resource = rs.resource.get_or_insert_with(Default::default);
            for (key, value) in &self.enrich {
                if !resource.attributes.iter().any(|kv| &kv.key == key) {
                    resource.attributes.push(KeyValue {
                        key: key.clone(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.clone())) }),
                        ..Default::default()
                    });
                }
            }
            out.redacted += self.redact(&mut resource.attributes);
            for ss in &rs.scope_spans {
                out.spans += ss.spans.len() as u64;
                out.error_spans += ss.spans.iter().filter(|s| is_error(s)).count() as u64;
            }
        }
        request.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        out
    }

    /// Applies the rules to one attribute list (and nested key-value lists); returns how many were changed.
    fn redact(&self, attrs: &mut Vec<KeyValue>) -> u64 {
        if self.rules.is_empty() {
            return 0;
        }
        let mut changed = 0;
        attrs.retain_mut(|kv| {
            match self.rules.iter().find(|(re, _)| re.is_match(&kv.key)).map(|(_, a)| *a) {
                Some(RedactAction::Drop) => {
                    changed += 1;
                    return false;
                }
                Some(RedactAction::Mask) => {
                    changed += 1;
                    kv.value = Some(string_value(MASK.to_string()));
                }
                Some(RedactAction::Hash) => {
                    changed += 1;
                    kv.value = Some(string_value(hash_value(kv.value.as_ref())));
                }
                None => changed += self.redact_nested(kv.value.as_mut()),
            }
            true
        });
        changed
    }

    fn redact_nested(&self, value: Option<&mut AnyValue>) -> u64 {
        match value.and_then(|v| v.value.as_mut()) {
            Some(any_value::Value::KvlistValue(list)) => self.redact(&mut list.values),
            Some(any_value::Value::ArrayValue(arr)) => arr.values.iter_mut().map(|v| self.redact_nested(Some(v))).sum(),
            _ => 0,
        }
    }
}

fn string_value(s: String) -> AnyValue {
    AnyValue { value: Some(any_value::Value::StringValue(s)) }
}

/// `"sha256:"` + hex SHA-256 of a string value's UTF-8 bytes, or of any other value's protobuf encoding.
fn hash_value(value: Option<&AnyValue>) -> String {
    let digest = match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Sha256::digest(s.as_bytes()),
        Some(_) => Sha256::digest(prost::Message::encode_to_vec(value.unwrap_or(&AnyValue::default()))),
        None => Sha256::digest(b""),
    };
    format!("sha256:{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_proto::otlp_common::KeyValueList;
    use skein_proto::otlp_resource::Resource;
    use skein_proto::otlp_trace::Span;

    use crate::wire::STATUS_ERROR;
    use skein_proto::otlp_trace::{ResourceSpans, ScopeSpans, Status, span};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(string_value(value.into())), ..Default::default() }
    }

    fn request(spans: Vec<Span>, resource: Vec<KeyValue>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: resource, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn span(trace: u8, attrs: Vec<KeyValue>) -> Span {
        Span { trace_id: vec![trace; 16], span_id: vec![1; 8], attributes: attrs, ..Default::default() }
    }

    fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
        attrs.iter().find(|k| k.key == key).and_then(|k| match k.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
    }

    #[test]
    fn enrichment_adds_k8s_attributes_without_overwriting_the_sdk() {
        let env = |k: &str| match k {
            "K8S_POD_NAME" => Some("checkout-7d9f".to_string()),
            "K8S_NAMESPACE" => Some("shop".to_string()),
            "K8S_NODE_NAME" => Some(String::new()),
            _ => None,
        };
        let p = Processor::new(&AgentConfig::default(), env).expect("processor");
        let mut req = request(vec![span(1, vec![])], vec![kv("k8s.namespace.name", "from-sdk")]);
        let out = p.process(&mut req);
        assert_eq!(out.spans, 1);
        let attrs = &req.resource_spans[0].resource.as_ref().expect("resource").attributes;
        assert_eq!(value(attrs, "k8s.pod.name"), Some("checkout-7d9f"));
        assert_eq!(value(attrs, "k8s.namespace.name"), Some("from-sdk"));
        assert_eq!(attrs.iter().filter(|k| k.key == "k8s.namespace.name").count(), 1);
        assert_eq!(value(attrs, "k8s.node.name"), None, "empty variables are skipped");
    }

    #[test]
    fn redaction_masks_hashes_and_drops_everywhere() {
        let config = AgentConfig::parse(
            "redaction:\n  - {key: \"(?i)^password$\", action: drop}\n  - {key: \"(?i)authorization\", action: mask}\n  - {key: \"^user\\\\.email$\", action: hash}\n",
        )
        .expect("config");
        let p = Processor::new(&config, |_| None).expect("processor");
        let nested = KeyValue {
            key: "http.request.header".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("Authorization", "Bearer x")],
                })),
            }),
            ..Default::default()
        };
        let mut s = span(1, vec![kv("password", "hunter2"), kv("user.email", "a@b.c"), kv("ok", "1"), nested]);
        s.events.push(span::Event { attributes: vec![kv("PASSWORD", "x")], ..Default::default() });
        let mut req = request(vec![s], vec![kv("authorization", "Basic y")]);
        let out = p.process(&mut req);
        assert_eq!(out.redacted, 5);
        let rs = &req.resource_spans[0];
        assert_eq!(value(&rs.resource.as_ref().expect("resource").attributes, "authorization"), Some(MASK));
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(value(&s.attributes, "password"), None);
        assert!(s.events[0].attributes.is_empty());
        let hashed = value(&s.attributes, "user.email").expect("hashed");
        assert_eq!(hashed, format!("sha256:{}", hex::encode(Sha256::digest(b"a@b.c"))));
        assert_eq!(value(&s.attributes, "ok"), Some("1"));
        let Some(any_value::Value::KvlistValue(list)) = &s.attributes[2].value.as_ref().expect("v").value else {
            panic!("nested list kept")
        };
        assert_eq!(value(&list.values, "Authorization"), Some(MASK));
        let encoded = prost::Message::encode_to_vec(&req);
        for secret in ["hunter2", "a@b.c", "Bearer x", "Basic y"] {
            assert!(!String::from_utf8_lossy(&encoded).contains(secret), "{secret} left the pod");
        }
    }

    #[test]
    fn head_sampling_matches_the_collector_hash_and_keeps_traces_whole() {
        let config = AgentConfig::parse("head_sampling:\n  sampling_percentage: 30\n").expect("config");
        let p = Processor::new(&config, |_| None).expect("processor");
        let mut spans = Vec::new();
        for t in 0..=255u8 {
            let mut a = span(t, vec![]);
            a.trace_id[3] = t.wrapping_mul(7);
            let mut b = a.clone();
            b.status = Some(Status { code: STATUS_ERROR, ..Default::default() });
            spans.extend([a, b]);
        }
        let mut req = request(spans.clone(), vec![]);
        let out = p.process(&mut req);
        let kept = &req.resource_spans[0].scope_spans[0].spans;
        let expected: Vec<_> =
            spans.iter().filter(|s| skein_proto::sampling::sampled("", &s.trace_id, 30.0)).cloned().collect();
        assert_eq!(kept, &expected);
        assert_eq!(out.spans + out.sampled_out, 512);
        assert_eq!(out.error_spans * 2, out.spans, "both spans of a trace share the decision");
        assert!((100..220).contains(&out.spans), "{} of 512 at 30 %", out.spans);
    }

    #[test]
    fn fully_sampled_out_requests_become_empty() {
        let config = AgentConfig::parse("head_sampling:\n  sampling_percentage: 0\n").expect("config");
        let p = Processor::new(&config, |_| Some("x".into())).expect("processor");
        let mut req = request(vec![span(9, vec![])], vec![]);
        assert_eq!(p.process(&mut req).spans, 0);
        assert!(req.resource_spans.is_empty());
    }
}
