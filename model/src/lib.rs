//! Skein's span model: the one in-memory shape of a span between ingest and storage.
//!
//! OTLP `ResourceSpans` are converted into [`Span`]s by [`otlp::convert`]; each span carries shared
//! (`Arc`) pointers to its [`Resource`] and [`Scope`], so a batch of spans from one SDK costs one resource. The
//! model is lossless against OTLP (spec: `opentelemetry/proto/trace/v1/trace.proto`): every field of an OTLP span,
//! its resource and its instrumentation scope has a place here, and [`otlp::to_otlp`] converts back.
//!
//! This crate owns the model and the conversions between it and the wire formats Skein receives: [`otlp`]
//! (OTLP ⇄ model, with validation limits), [`zipkin`] (Zipkin v2 JSON → OTLP) and [`build`] (helpers for such
//! converters); [`dependencies`] (service-dependency edges of a trace); and [`now_nanos`], the one wall clock.
//! It must not import any other Skein crate but `skein-proto`, nor do I/O.

pub mod build;
pub mod dependencies;
pub mod otlp;
pub mod zipkin;

pub use compact_str::{CompactString, ToCompactString};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch (0 if the system clock is before 1970). Every wall-clock read of the
/// backend goes through here, so tests and the code under them agree on the clock.
pub fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Service name used when a resource has no `service.name` attribute (the name Jaeger's OTLP translator uses).
pub const UNKNOWN_SERVICE: &str = "OTLPResourceNoServiceName";

/// A 16-byte W3C trace ID. Never all zero once validated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span ID. Never all zero once validated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses 1–32 hex characters (Jaeger accepts 64-bit IDs as 16 hex chars; they are left-padded with zeros).
    ///
    /// # Errors
    /// Returns a message when the string is empty, longer than 32 characters or not hex.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 32 {
            return Err(format!("trace ID {s:?} must be 1 to 32 hex characters"));
        }
        let padded = format!("{s:0>32}");
        let mut out = [0u8; 16];
        hex::decode_to_slice(&padded, &mut out).map_err(|e| format!("trace ID {s:?} is not hex: {e}"))?;
        Ok(Self(out))
    }

    /// Parses a trace ID as engineers paste it from logs and request dumps:
    /// - 1–32 hex characters ([`TraceId::from_hex`]);
    /// - a W3C `traceparent` value, `{version:2}-{trace-id:32}-{parent-id:16}-{flags:2}` in lower-case hex
    ///   (<https://www.w3.org/TR/trace-context/#traceparent-header>): version `ff` is invalid, version `00` has
    ///   exactly these four fields, later versions may append `-…` fields, which are ignored; all-zero trace or
    ///   parent IDs are invalid;
    /// - a B3 single header, `{trace-id:16|32}-{span-id:16}[-{sampling:0|1|d}[-{parent-span-id:16}]]`
    ///   (<https://github.com/openzipkin/b3-propagation#single-header>); a 64-bit trace ID is left-padded.
    ///
    /// # Errors
    /// A message naming the form the value looked like and what is wrong with it.
    pub fn from_lookup(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.contains('-') {
            return Self::from_hex(s);
        }
        let parts: Vec<&str> = s.split('-').collect();
        let lower_hex =
            |p: &str, len: usize| p.len() == len && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
        if parts[0].len() == 2 {
            let version = parts[0];
            let bad = |why: &str| Err(format!("traceparent {s:?}: {why}"));
            if !lower_hex(version, 2) || version == "ff" {
                return bad("version must be two lower-case hex digits other than ff");
            }
            if parts.len() < 4 || (version == "00" && parts.len() != 4) {
                return bad("expected version-traceid-parentid-flags");
            }
            if !lower_hex(parts[1], 32) || !nonzero(parts[1]) {
                return bad("trace-id must be 32 lower-case hex digits, not all zero");
            }
            if !lower_hex(parts[2], 16) || !nonzero(parts[2]) {
                return bad("parent-id must be 16 lower-case hex digits, not all zero");
            }
            if !lower_hex(parts[3], 2) {
                return bad("trace-flags must be two lower-case hex digits");
            }
            return Self::from_hex(parts[1]);
        }
        let bad = |why: &str| Err(format!("b3 {s:?}: {why}"));
        if parts.len() > 4 {
            return bad("expected traceid-spanid[-sampled[-parentspanid]]");
        }
        if !(lower_hex(parts[0], 16) || lower_hex(parts[0], 32)) || !nonzero(parts[0]) {
            return bad("trace ID must be 16 or 32 lower-case hex digits, not all zero");
        }
        if !lower_hex(parts[1], 16) || !nonzero(parts[1]) {
            return bad("span ID must be 16 lower-case hex digits, not all zero");
        }
        if parts.len() > 2 && !matches!(parts[2], "0" | "1" | "d") {
            return bad("sampling state must be 0, 1 or d");
        }
        if parts.len() > 3 && (!lower_hex(parts[3], 16) || !nonzero(parts[3])) {
            return bad("parent span ID must be 16 lower-case hex digits, not all zero");
        }
        Self::from_hex(parts[0])
    }

    /// Lower-case 32-character hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl SpanId {
    /// Parses 1–16 hex characters, left-padded with zeros.
    ///
    /// # Errors
    /// Returns a message when the string is empty, longer than 16 characters or not hex.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 {
            return Err(format!("span ID {s:?} must be 1 to 16 hex characters"));
        }
        let padded = format!("{s:0>16}");
        let mut out = [0u8; 8];
        hex::decode_to_slice(&padded, &mut out).map_err(|e| format!("span ID {s:?} is not hex: {e}"))?;
        Ok(Self(out))
    }

    /// Lower-case 16-character hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An attribute value: OTLP `AnyValue` (spec: `opentelemetry/proto/common/v1/common.proto`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `AnyValue` with no field set.
    Empty,
    /// `string_value`.
    Str(CompactString),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bytes_value`.
    Bytes(Vec<u8>),
    /// `array_value`.
    Array(Vec<Value>),
    /// `kvlist_value`.
    KvList(Vec<KeyValue>),
}

impl Value {
    /// The string form used for tag matching and Jaeger's `key=value` search: strings as is, `true`/`false`,
    /// decimal integers, shortest round-trip floats, base64 bytes, and JSON for arrays and maps.
    pub fn to_tag_string(&self) -> String {
        self.tag_str().into_owned()
    }

    /// [`Value::to_tag_string`], borrowed for strings (the common case: nothing is allocated).
    pub fn tag_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Value::Empty => std::borrow::Cow::Borrowed(""),
            Value::Str(s) => std::borrow::Cow::Borrowed(s),
            Value::Bool(b) => std::borrow::Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) => i.to_string().into(),
            Value::Double(d) => d.to_string().into(),
            Value::Bytes(b) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(b).into()
            }
            Value::Array(_) | Value::KvList(_) => self.to_json().to_string().into(),
        }
    }

    /// A plain JSON rendering (arrays as arrays, maps as objects), as Jaeger renders complex values.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Empty => serde_json::Value::Null,
            Value::Str(s) => serde_json::Value::String(s.as_str().to_owned()),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Double(d) => serde_json::Number::from_f64(*d)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(d.to_string())),
            Value::Bytes(_) => serde_json::Value::String(self.to_tag_string()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(Value::to_json).collect()),
            Value::KvList(kvs) => serde_json::Value::Object(
                kvs.iter().map(|kv| (kv.key.as_str().to_owned(), kv.value.to_json())).collect(),
            ),
        }
    }
}

/// One attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    /// Attribute key.
    pub key: CompactString,
    /// Attribute value.
    pub value: Value,
}

impl KeyValue {
    /// Builds a key/value pair.
    pub fn new(key: impl Into<CompactString>, value: Value) -> Self {
        Self { key: key.into(), value }
    }
}

/// The entity that produced spans (OTLP `Resource` plus the `schema_url` of its `ResourceSpans`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Resource {
    /// Resource attributes, `service.name` among them.
    pub attributes: Vec<KeyValue>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// `ResourceSpans.schema_url`.
    pub schema_url: String,
}

impl Resource {
    /// The `service.name` attribute, or [`UNKNOWN_SERVICE`].
    pub fn service_name(&self) -> &str {
        self.attributes
            .iter()
            .find_map(|kv| match (&kv.key[..], &kv.value) {
                ("service.name", Value::Str(s)) if !s.is_empty() => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or(UNKNOWN_SERVICE)
    }
}

/// The instrumentation scope (OTLP `InstrumentationScope` plus the `schema_url` of its `ScopeSpans`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Scope {
    /// Scope name (instrumentation library).
    pub name: String,
    /// Scope version.
    pub version: String,
    /// Scope attributes.
    pub attributes: Vec<KeyValue>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// `ScopeSpans.schema_url`.
    pub schema_url: String,
}

/// OTLP span kind (`Span.SpanKind`), kept as the wire integer so unknown future kinds survive a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SpanKind(pub i32);

impl SpanKind {
    /// `SPAN_KIND_UNSPECIFIED`.
    pub const UNSPECIFIED: SpanKind = SpanKind(0);
    /// `SPAN_KIND_INTERNAL`.
    pub const INTERNAL: SpanKind = SpanKind(1);
    /// `SPAN_KIND_SERVER`.
    pub const SERVER: SpanKind = SpanKind(2);
    /// `SPAN_KIND_CLIENT`.
    pub const CLIENT: SpanKind = SpanKind(3);
    /// `SPAN_KIND_PRODUCER`.
    pub const PRODUCER: SpanKind = SpanKind(4);
    /// `SPAN_KIND_CONSUMER`.
    pub const CONSUMER: SpanKind = SpanKind(5);

    /// The lower-case name Jaeger uses (`server`, `client`, …), or `""` for unspecified and unknown kinds.
    pub fn jaeger_name(self) -> &'static str {
        match self.0 {
            1 => "internal",
            2 => "server",
            3 => "client",
            4 => "producer",
            5 => "consumer",
            _ => "",
        }
    }

    /// Parses Jaeger's `spanKind` query value (`server`, `client`, `producer`, `consumer`, `internal`).
    pub fn from_jaeger_name(name: &str) -> Option<SpanKind> {
        Some(match name {
            "internal" => Self::INTERNAL,
            "server" => Self::SERVER,
            "client" => Self::CLIENT,
            "producer" => Self::PRODUCER,
            "consumer" => Self::CONSUMER,
            "unspecified" | "" => Self::UNSPECIFIED,
            _ => return None,
        })
    }
}

/// OTLP status code: 0 unset, 1 ok, 2 error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StatusCode(pub i32);

impl StatusCode {
    /// `STATUS_CODE_UNSET`.
    pub const UNSET: StatusCode = StatusCode(0);
    /// `STATUS_CODE_OK`.
    pub const OK: StatusCode = StatusCode(1);
    /// `STATUS_CODE_ERROR`.
    pub const ERROR: StatusCode = StatusCode(2);
}

/// A span event (a Jaeger log).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Event {
    /// Event time, nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// Event name.
    pub name: CompactString,
    /// Event attributes.
    pub attributes: Vec<KeyValue>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
}

/// A link to another span.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Link {
    /// Linked trace ID, as received (normally 16 bytes).
    pub trace_id: Vec<u8>,
    /// Linked span ID, as received (normally 8 bytes).
    pub span_id: Vec<u8>,
    /// W3C tracestate of the link.
    pub trace_state: String,
    /// Link attributes.
    pub attributes: Vec<KeyValue>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// Link flags (W3C trace flags plus OTLP's remote bits).
    pub flags: u32,
}

/// One span, with its resource and scope.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Trace ID.
    pub trace_id: TraceId,
    /// Span ID.
    pub span_id: SpanId,
    /// Parent span ID bytes as received; empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// W3C tracestate.
    pub trace_state: String,
    /// OTLP span flags (W3C trace flags in bits 0–7, remote-parent bits 8–9).
    pub flags: u32,
    /// Operation name.
    pub name: CompactString,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// Span attributes.
    pub attributes: Vec<KeyValue>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// Events.
    pub events: Vec<Event>,
    /// `dropped_events_count`.
    pub dropped_events_count: u32,
    /// Links.
    pub links: Vec<Link>,
    /// `dropped_links_count`.
    pub dropped_links_count: u32,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message.
    pub status_message: String,
    /// The resource that produced the span.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// Warnings recorded by Skein while accepting the span (shown as Jaeger span `warnings`).
    pub warnings: Vec<String>,
}

impl Span {
    /// Duration in nanoseconds; zero when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nanos.saturating_sub(self.start_unix_nanos)
    }

    /// The parent span ID when it is a well-formed, non-zero 8-byte ID.
    pub fn parent_id(&self) -> Option<SpanId> {
        let bytes: [u8; 8] = self.parent_span_id.as_slice().try_into().ok()?;
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// The service that emitted the span.
    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }

    /// True when the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == StatusCode::ERROR
    }

    /// The identity used for exact-duplicate detection: trace ID, span ID, kind, start and end.
    pub fn dedup_key(&self) -> (SpanId, i32, u64, u64) {
        (self.span_id, self.kind.0, self.start_unix_nanos, self.end_unix_nanos)
    }

    /// A span with only the required fields set, for tests and format converters.
    pub fn minimal(trace_id: TraceId, span_id: SpanId, name: &str, resource: Arc<Resource>) -> Self {
        Span {
            trace_id,
            span_id,
            parent_span_id: Vec::new(),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind: SpanKind::UNSPECIFIED,
            start_unix_nanos: 0,
            end_unix_nanos: 0,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Vec::new(),
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status_code: StatusCode::UNSET,
            status_message: String::new(),
            resource,
            scope: Arc::new(Scope::default()),
            warnings: Vec::new(),
        }
    }
}

/// A resource with just a `service.name`.
pub fn service_resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource {
        attributes: vec![KeyValue::new("service.name", Value::Str(service.into()))],
        ..Resource::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_jaeger_ids_are_left_padded() {
        let t = TraceId::from_hex("4376effce3c2d72d").expect("valid");
        assert_eq!(t.to_hex(), "00000000000000004376effce3c2d72d");
        assert!(TraceId::from_hex("xyz").is_err());
        assert!(TraceId::from_hex(&"a".repeat(33)).is_err());
        assert_eq!(SpanId::from_hex("1").expect("valid").0, [0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn lookups_accept_traceparent_and_b3_headers() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ok = |s: &str| TraceId::from_lookup(s).map(|t| t.to_hex());
        assert_eq!(ok(id).as_deref(), Ok(id));
        assert_eq!(ok(&format!(" 00-{id}-00f067aa0ba902b7-01 ")).as_deref(), Ok(id));
        // A later version may append fields; ff is never valid; version 00 has exactly four fields.
        assert_eq!(ok(&format!("cc-{id}-00f067aa0ba902b7-09-what-ever")).as_deref(), Ok(id));
        assert!(ok(&format!("ff-{id}-00f067aa0ba902b7-01")).is_err());
        assert!(ok(&format!("00-{id}-00f067aa0ba902b7-01-extra")).is_err());
        let zero = "0".repeat(32);
        let err = ok(&format!("00-{zero}-00f067aa0ba902b7-01")).expect_err("zero trace ID");
        assert!(err.contains("traceparent") && err.contains("trace-id"), "{err}");
        assert!(ok(&format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase())).is_err());
        assert!(ok(&format!("00-{id}-0000000000000000-01")).is_err());
        // B3 single header, 128- and 64-bit trace IDs, with and without sampling state and parent.
        assert_eq!(ok(&format!("{id}-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")).as_deref(), Ok(id));
        assert_eq!(ok("a3ce929d0e0e4736-e457b5a2e4d86bd1").as_deref(), Ok("0000000000000000a3ce929d0e0e4736"));
        assert_eq!(ok(&format!("{id}-e457b5a2e4d86bd1-d")).as_deref(), Ok(id));
        let err = ok(&format!("{id}-e457b5a2e4d86bd1-x")).expect_err("bad sampling state");
        assert!(err.contains("b3") && err.contains("sampling"), "{err}");
        assert!(ok("a3ce929d0e0e47-e457b5a2e4d86bd1").is_err());
        assert!(ok("-").is_err() && ok("--").is_err() && ok("").is_err());
    }

    #[test]
    fn tag_strings_are_typed() {
        assert_eq!(Value::Int(200).to_tag_string(), "200");
        assert_eq!(Value::Bool(true).to_tag_string(), "true");
        assert_eq!(Value::Double(1.5).to_tag_string(), "1.5");
        let arr = Value::Array(vec![Value::Int(1), Value::Str("a".into())]);
        assert_eq!(arr.to_tag_string(), r#"[1,"a"]"#);
        assert_eq!(Value::Bool(false).to_tag_string(), false.to_string());
        // Strings are borrowed, not copied.
        let v = Value::Str("checkout".into());
        let Value::Str(inner) = &v else { panic!("a string value") };
        assert!(matches!(v.tag_str(), std::borrow::Cow::Borrowed(b) if std::ptr::eq(b, inner.as_str())));
    }

    #[test]
    fn parent_requires_eight_nonzero_bytes() {
        let mut s = Span::minimal(TraceId([1; 16]), SpanId([1; 8]), "x", service_resource("a"));
        assert_eq!(s.parent_id(), None);
        s.parent_span_id = vec![0; 8];
        assert_eq!(s.parent_id(), None);
        s.parent_span_id = vec![2; 8];
        assert_eq!(s.parent_id(), Some(SpanId([2; 8])));
        assert_eq!(s.service_name(), "a");
    }
}
