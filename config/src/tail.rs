//! The OpenTelemetry Collector's `tail_sampling` policy set as configuration: field names, defaults and
//! validation of `processor/tailsamplingprocessor` (`config.go`), so a user can paste the `processors.tail_sampling`
//! block of an OpenTelemetry Collector config. [`compile_policies`] turns it into [`Policy`] values; evaluating them
//! against a trace is `skein-ingest`'s `sampling::tail`.
//!
//! Differences, on purpose: the decision cache is on by default (upstream: off), because late spans that follow
//! their trace's decision are what users expect; unknown fields are errors (`deny_unknown_fields`), so a typo
//! does not silently disable a policy.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::GoDuration;

fn default_decision_wait() -> GoDuration {
    GoDuration(30_000_000_000)
}

fn default_num_traces() -> u64 {
    50_000
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `tail_sampling` block: upstream's processor config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TailSamplingConfig {
    /// Wait after the first span of a trace before deciding (default `30s`).
    #[serde(default = "default_decision_wait")]
    pub decision_wait: GoDuration,
    /// Traces held in memory; when full, the oldest trace is decided early and counted (default 50000).
    #[serde(default = "default_num_traces")]
    pub num_traces: u64,
    /// Sizing hint, accepted for compatibility (Skein sizes its maps on demand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_new_traces_per_sec: Option<u64>,
    /// Remembered decisions so late spans follow their trace's decision.
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Stop evaluating at the first policy that samples.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sample_on_first_match: bool,
    /// At shutdown, drop held traces instead of deciding on what has arrived.
    #[serde(default, skip_serializing_if = "is_false")]
    pub drop_pending_traces_on_shutdown: bool,
    /// The policies, evaluated in order.
    pub policies: Vec<PolicyConfig>,
}

fn default_cache_size() -> usize {
    50_000
}

/// `decision_cache`: sizes of the remembered sampled and not-sampled trace-ID sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionCacheConfig {
    /// Trace IDs remembered as sampled (default 50000; 0 turns it off).
    #[serde(default = "default_cache_size")]
    pub sampled_cache_size: usize,
    /// Trace IDs remembered as not sampled (default 50000; 0 turns it off).
    #[serde(default = "default_cache_size")]
    pub non_sampled_cache_size: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self { sampled_cache_size: default_cache_size(), non_sampled_cache_size: default_cache_size() }
    }
}

/// A policy type (upstream `PolicyType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyType {
    /// Samples every trace.
    AlwaysSample,
    /// Trace duration (latest end − earliest start) against thresholds.
    Latency,
    /// Any span with one of the listed status codes.
    StatusCode,
    /// A percentage of traces by trace-ID hash.
    Probabilistic,
    /// Spans per second.
    RateLimiting,
    /// Bytes (OTLP protobuf size) per second, token bucket.
    BytesLimiting,
    /// A string resource or span attribute matching values or regexes.
    StringAttribute,
    /// An integer attribute in a range.
    NumericAttribute,
    /// A boolean attribute with a value.
    BooleanAttribute,
    /// The number of spans in a range.
    SpanCount,
    /// A W3C `tracestate` entry with one of the values.
    TraceState,
    /// The sampled flag set on any span.
    TraceFlags,
    /// All sub-policies must sample.
    And,
    /// Inverts one sub-policy.
    Not,
    /// Sub-policies in order, each within its share of a spans-per-second budget.
    Composite,
    /// Drops the trace when all sub-policies sample, overriding every other vote.
    Drop,
}

/// One policy: `name`, `type` and the block named after the type (upstream `PolicyCfg`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy name (labels the decision metrics).
    pub name: String,
    /// Policy type.
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    /// `latency` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConfig>,
    /// `status_code` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<StatusCodeConfig>,
    /// `probabilistic` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<ProbabilisticConfig>,
    /// `rate_limiting` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiting: Option<RateLimitingConfig>,
    /// `bytes_limiting` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_limiting: Option<BytesLimitingConfig>,
    /// `string_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_attribute: Option<StringAttributeConfig>,
    /// `numeric_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_attribute: Option<NumericAttributeConfig>,
    /// `boolean_attribute` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean_attribute: Option<BooleanAttributeConfig>,
    /// `span_count` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_count: Option<SpanCountConfig>,
    /// `trace_state` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_state: Option<TraceStateConfig>,
    /// `and` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_policy_schema::<AndConfig>")]
    pub and: Option<AndConfig>,
    /// `not` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_policy_schema::<NotConfig>")]
    pub not: Option<NotConfig>,
    /// `composite` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_policy_schema::<CompositeConfig>")]
    pub composite: Option<CompositeConfig>,
    /// `drop` settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nested_policy_schema::<DropConfig>")]
    pub drop: Option<DropConfig>,
}

/// `latency`: sampled when duration ≥ `threshold_ms`, or, with `upper_threshold_ms`, when
/// `threshold_ms` < duration ≤ `upper_threshold_ms` (milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Lower bound, milliseconds.
    #[serde(default)]
    pub threshold_ms: i64,
    /// Upper bound, milliseconds (0: none).
    #[serde(default)]
    pub upper_threshold_ms: i64,
}

/// `status_code`: any span with one of `status_codes` (`OK`, `ERROR`, `UNSET`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusCodeConfig {
    /// The codes that sample.
    pub status_codes: Vec<String>,
}

/// `probabilistic`: `sampling_percentage` of traces by FNV-1a hash of `hash_salt` + trace ID.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticConfig {
    /// Salt; use different salts in different sampling layers (default `default-hash-seed`).
    #[serde(default)]
    pub hash_salt: String,
    /// Percentage 0–100.
    pub sampling_percentage: f64,
}

/// `rate_limiting`: at most `spans_per_second` spans of sampled traces per wall-clock second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
    /// Span budget per second.
    pub spans_per_second: i64,
}

/// `bytes_limiting`: token bucket on the traces' OTLP protobuf size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesLimitingConfig {
    /// Refill rate, bytes per second.
    pub bytes_per_second: i64,
    /// Bucket size, bytes (default 2 × `bytes_per_second`).
    #[serde(default)]
    pub burst_capacity: i64,
}

/// `string_attribute`: a resource or span attribute `key` whose string value is one of `values` (or matches one
/// of them as a regex with `enabled_regex_matching`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Values (or regexes).
    pub values: Vec<String>,
    /// Treat `values` as regular expressions (unanchored, as upstream).
    #[serde(default, skip_serializing_if = "is_false")]
    pub enabled_regex_matching: bool,
    /// Accepted for compatibility (regex results are not cached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_size: Option<u64>,
    /// Sample traces that do *not* match (upstream's inverted decisions).
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert_match: bool,
}

/// `numeric_attribute`: an integer attribute in `[min_value, max_value]` (either bound may be omitted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumericAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// Lower bound, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<i64>,
    /// Upper bound, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<i64>,
    /// Sample traces that do *not* match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert_match: bool,
}

/// `boolean_attribute`: a boolean attribute equal to `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BooleanAttributeConfig {
    /// Attribute key.
    pub key: String,
    /// The value that samples.
    pub value: bool,
    /// Sample traces that do *not* match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert_match: bool,
}

/// `span_count`: `min_spans` ≤ spans ≤ `max_spans` (0: no upper bound).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanCountConfig {
    /// Lower bound, inclusive.
    #[serde(default)]
    pub min_spans: i64,
    /// Upper bound, inclusive (0: none).
    #[serde(default)]
    pub max_spans: i64,
}

/// `trace_state`: a W3C `tracestate` list member `key=value` with value in `values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceStateConfig {
    /// `tracestate` key.
    pub key: String,
    /// Values that sample.
    pub values: Vec<String>,
}

/// `and`: every sub-policy must sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AndConfig {
    /// Sub-policies (no `and`, `composite` or `drop` inside).
    #[schemars(schema_with = "sub_policies_schema")]
    pub and_sub_policy: Vec<PolicyConfig>,
}

/// `not`: inverts one sub-policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotConfig {
    /// The sub-policy.
    #[schemars(schema_with = "sub_policy_schema")]
    pub not_sub_policy: Box<PolicyConfig>,
}

/// `drop`: when every sub-policy samples, the trace is dropped whatever other policies say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropConfig {
    /// Sub-policies.
    #[schemars(schema_with = "sub_policies_schema")]
    pub drop_sub_policy: Vec<PolicyConfig>,
}

/// `composite`: sub-policies in `policy_order`; the first that samples and still has budget left in its share of
/// `max_total_spans_per_second` this second samples the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Total span budget per second.
    pub max_total_spans_per_second: i64,
    /// Sub-policy names in evaluation order.
    pub policy_order: Vec<String>,
    /// The sub-policies.
    #[schemars(schema_with = "sub_policies_schema")]
    pub composite_sub_policy: Vec<PolicyConfig>,
    /// Budget shares; a sub-policy without one gets an equal share of the total.
    #[serde(default)]
    pub rate_allocation: Vec<RateAllocation>,
}

thread_local! {
    /// Set while a sub-policy's schema is generated, so the schema stays finite and has no `$ref`.
    static IN_SUB_POLICY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The JSON Schema of one sub-policy: a [`PolicyConfig`] whose own `and`/`not`/`composite`/`drop` blocks are open
/// objects. Kubernetes CRD schemas allow neither recursion nor `$ref`, so the operator's CRD validates one level of
/// nesting in the schema and deeper levels when the configuration is loaded ([`TailSampler::new`]).
fn sub_policy_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    if IN_SUB_POLICY.get() {
        return open_object_schema();
    }
    IN_SUB_POLICY.set(true);
    let schema = PolicyConfig::json_schema(generator);
    IN_SUB_POLICY.set(false);
    schema
}

/// The JSON Schema of a sub-policy list (see [`sub_policy_schema`]).
fn sub_policies_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = sub_policy_schema(generator);
    schemars::json_schema!({"type": "array", "items": item})
}

/// The schema of an optional composite block of a policy: its own schema at the top level, an open object inside a
/// sub-policy.
fn nested_policy_schema<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    if IN_SUB_POLICY.get() { open_object_schema() } else { generator.subschema_for::<Option<T>>() }
}

fn open_object_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Checked when the configuration is loaded (nested sub-policies are not described here)."
    })
}

/// One `rate_allocation` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateAllocation {
    /// Sub-policy name.
    pub policy: String,
    /// Percent of `max_total_spans_per_second`.
    pub percent: i64,
}

/// A tail-sampling configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("tail_sampling policy {policy:?}: {message}")]
pub struct PolicyError {
    /// The policy's name.
    pub policy: String,
    /// What is wrong.
    pub message: String,
}

/// How a `string_attribute` policy matches values.
#[allow(missing_docs, reason = "variants are the two matching modes")]
pub enum StringMatch {
    Exact(HashSet<String>),
    Regex(regex::RegexSet),
}

/// A compiled policy with its rate state: the validated parameters of one [`PolicyConfig`] (evaluated against a
/// trace by `skein-ingest`'s tail sampler).
#[allow(missing_docs, reason = "variants and fields mirror the PolicyConfig blocks documented above")]
pub enum Policy {
    Always,
    Latency {
        threshold_ms: i64,
        upper_ms: i64,
    },
    /// OTLP status codes (`0` unset, `1` ok, `2` error).
    Status(Vec<i32>),
    Probabilistic {
        salt: String,
        percentage: f64,
    },
    RateLimiting {
        per_second: i64,
        second: u64,
        used: i64,
    },
    BytesLimiting {
        per_second: f64,
        burst: f64,
        tokens: f64,
        last_nanos: u64,
    },
    StringAttr {
        key: String,
        matcher: StringMatch,
        invert: bool,
    },
    NumericAttr {
        key: String,
        min: i64,
        max: i64,
        invert: bool,
    },
    BoolAttr {
        key: String,
        value: bool,
        invert: bool,
    },
    SpanCount {
        min: i64,
        max: i64,
    },
    TraceState {
        key: String,
        values: HashSet<String>,
    },
    TraceFlags,
    And(Vec<Policy>),
    Not(Box<Policy>),
    Composite {
        max_total: i64,
        subs: Vec<(Policy, i64, i64)>,
        second: u64,
    },
    Drop(Vec<Policy>),
}

fn err(p: &PolicyConfig, message: impl Into<String>) -> PolicyError {
    PolicyError { policy: p.name.clone(), message: message.into() }
}

fn block<'a, T>(p: &PolicyConfig, b: &'a Option<T>, name: &str) -> Result<&'a T, PolicyError> {
    b.as_ref().ok_or_else(|| err(p, format!("type {name} needs a `{name}:` block")))
}

fn compile(p: &PolicyConfig, nested: bool) -> Result<Policy, PolicyError> {
    use PolicyType as T;
    Ok(match p.policy_type {
        T::AlwaysSample => Policy::Always,
        T::TraceFlags => Policy::TraceFlags,
        T::Latency => {
            let c = block(p, &p.latency, "latency")?;
            if c.threshold_ms < 0 || c.upper_threshold_ms < 0 {
                return Err(err(p, "latency thresholds must not be negative"));
            }
            if c.upper_threshold_ms != 0 && c.upper_threshold_ms < c.threshold_ms {
                return Err(err(p, "upper_threshold_ms must be greater than threshold_ms"));
            }
            Policy::Latency { threshold_ms: c.threshold_ms, upper_ms: c.upper_threshold_ms }
        }
        T::StatusCode => {
            let c = block(p, &p.status_code, "status_code")?;
            if c.status_codes.is_empty() {
                return Err(err(p, "status_codes must list at least one of OK, ERROR, UNSET"));
            }
            let codes = c
                .status_codes
                .iter()
                .map(|s| match s.as_str() {
                    "OK" => Ok(1),
                    "ERROR" => Ok(2),
                    "UNSET" => Ok(0),
                    other => Err(err(p, format!("unknown status code {other:?}: use OK, ERROR or UNSET"))),
                })
                .collect::<Result<_, _>>()?;
            Policy::Status(codes)
        }
        T::Probabilistic => {
            let c = block(p, &p.probabilistic, "probabilistic")?;
            if !(0.0..=100.0).contains(&c.sampling_percentage) {
                return Err(err(p, "sampling_percentage must be between 0 and 100"));
            }
            // An empty salt is the agent's and upstream's default salt (`skein_proto::sampling::DEFAULT_HASH_SALT`).
            Policy::Probabilistic { salt: c.hash_salt.clone(), percentage: c.sampling_percentage }
        }
        T::RateLimiting => {
            let c = block(p, &p.rate_limiting, "rate_limiting")?;
            if c.spans_per_second <= 0 {
                return Err(err(p, "spans_per_second must be positive"));
            }
            Policy::RateLimiting { per_second: c.spans_per_second, second: 0, used: 0 }
        }
        T::BytesLimiting => {
            let c = block(p, &p.bytes_limiting, "bytes_limiting")?;
            if c.bytes_per_second <= 0 || c.burst_capacity < 0 {
                return Err(err(p, "bytes_per_second must be positive and burst_capacity not negative"));
            }
            let burst = if c.burst_capacity == 0 { 2 * c.bytes_per_second } else { c.burst_capacity } as f64;
            Policy::BytesLimiting { per_second: c.bytes_per_second as f64, burst, tokens: burst, last_nanos: 0 }
        }
        T::StringAttribute => {
            let c = block(p, &p.string_attribute, "string_attribute")?;
            if c.key.is_empty() || c.values.is_empty() {
                return Err(err(p, "string_attribute needs a key and at least one value"));
            }
            let matcher = if c.enabled_regex_matching {
                StringMatch::Regex(regex::RegexSet::new(&c.values).map_err(|e| err(p, format!("bad regex: {e}")))?)
            } else {
                StringMatch::Exact(c.values.iter().cloned().collect())
            };
            Policy::StringAttr { key: c.key.clone(), matcher, invert: c.invert_match }
        }
        T::NumericAttribute => {
            let c = block(p, &p.numeric_attribute, "numeric_attribute")?;
            let (min, max) = (c.min_value.unwrap_or(i64::MIN), c.max_value.unwrap_or(i64::MAX));
            if c.key.is_empty() || (c.min_value.is_none() && c.max_value.is_none()) || min > max {
                return Err(err(p, "numeric_attribute needs a key and min_value ≤ max_value (at least one set)"));
            }
            Policy::NumericAttr { key: c.key.clone(), min, max, invert: c.invert_match }
        }
        T::BooleanAttribute => {
            let c = block(p, &p.boolean_attribute, "boolean_attribute")?;
            if c.key.is_empty() {
                return Err(err(p, "boolean_attribute needs a key"));
            }
            Policy::BoolAttr { key: c.key.clone(), value: c.value, invert: c.invert_match }
        }
        T::SpanCount => {
            let c = block(p, &p.span_count, "span_count")?;
            if c.min_spans < 0 || (c.max_spans != 0 && c.max_spans < c.min_spans) {
                return Err(err(p, "span_count needs 0 ≤ min_spans ≤ max_spans (max_spans 0: no limit)"));
            }
            Policy::SpanCount { min: c.min_spans, max: if c.max_spans == 0 { i64::MAX } else { c.max_spans } }
        }
        T::TraceState => {
            let c = block(p, &p.trace_state, "trace_state")?;
            if c.key.is_empty() || c.values.is_empty() {
                return Err(err(p, "trace_state needs a key and at least one value"));
            }
            Policy::TraceState { key: c.key.clone(), values: c.values.iter().cloned().collect() }
        }
        T::And | T::Composite | T::Drop | T::Not if nested => {
            return Err(err(p, "and, not, composite and drop cannot be nested inside another policy"));
        }
        T::And => {
            let c = block(p, &p.and, "and")?;
            if c.and_sub_policy.is_empty() {
                return Err(err(p, "and_sub_policy is empty"));
            }
            Policy::And(c.and_sub_policy.iter().map(|s| compile(s, true)).collect::<Result<_, _>>()?)
        }
        T::Not => {
            let c = block(p, &p.not, "not")?;
            Policy::Not(Box::new(compile(&c.not_sub_policy, true)?))
        }
        T::Drop => {
            let c = block(p, &p.drop, "drop")?;
            if c.drop_sub_policy.is_empty() {
                return Err(err(p, "drop_sub_policy is empty"));
            }
            Policy::Drop(c.drop_sub_policy.iter().map(|s| compile(s, true)).collect::<Result<_, _>>()?)
        }
        T::Composite => {
            let c = block(p, &p.composite, "composite")?;
            if c.max_total_spans_per_second <= 0 || c.policy_order.is_empty() {
                return Err(err(p, "composite needs max_total_spans_per_second > 0 and a policy_order"));
            }
            let even = c.max_total_spans_per_second / c.composite_sub_policy.len().max(1) as i64;
            let mut subs = Vec::new();
            for name in &c.policy_order {
                let sub = c.composite_sub_policy.iter().find(|s| &s.name == name).ok_or_else(|| {
                    err(p, format!("policy_order names {name:?}, which is not a composite_sub_policy"))
                })?;
                let budget = match c.rate_allocation.iter().find(|r| &r.policy == name) {
                    Some(r) if r.percent > 0 => c.max_total_spans_per_second * r.percent / 100,
                    _ => even,
                };
                subs.push((compile(sub, true)?, budget, 0));
            }
            let total: i64 = c.rate_allocation.iter().map(|r| r.percent.max(0)).sum();
            if total > 100 {
                return Err(err(p, format!("rate_allocation percents add up to {total} > 100")));
            }
            Policy::Composite { max_total: c.max_total_spans_per_second, subs, second: 0 }
        }
    })
}

/// Compiles and validates a `tail_sampling` block: each top-level policy's name and its compiled form, in order.
///
/// # Errors
/// [`PolicyError`] naming the first bad policy (missing block, bad bounds, bad regex, nesting, empty set, duplicate
/// name).
pub fn compile_policies(config: &TailSamplingConfig) -> Result<Vec<(String, Policy)>, PolicyError> {
    if config.policies.is_empty() {
        return Err(PolicyError { policy: String::new(), message: "policies must not be empty".into() });
    }
    let mut names = HashSet::new();
    for p in &config.policies {
        if !names.insert(p.name.as_str()) {
            return Err(err(p, "duplicate policy name"));
        }
    }
    config.policies.iter().map(|p| Ok((p.name.clone(), compile(p, false)?))).collect()
}

impl TailSamplingConfig {
    /// Checks every policy (what the collector does when it loads the configuration).
    ///
    /// # Errors
    /// [`PolicyError`] naming the first bad policy.
    pub fn validate(&self) -> Result<(), PolicyError> {
        compile_policies(self).map(drop)
    }
}
