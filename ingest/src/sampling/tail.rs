//! Tail sampling: evaluating the OpenTelemetry Collector's `tail_sampling` policies (configured and compiled in
//! `skein_config::tail`) against whole traces, with upstream's evaluation semantics.
//!
//! Source: `open-telemetry/opentelemetry-collector-contrib` `processor/tailsamplingprocessor` (README, `config.go`,
//! `internal/sampling/*.go`). Every policy returns one of the upstream decisions; [`TailSampler::decide`]
//! combines them as upstream does: any `Dropped` → not sampled; else any `InvertNotSampled` → not sampled; else
//! any `Sampled` or `InvertSampled` → sampled; else not sampled.
//!

use skein_config::tail::{Policy, StringMatch, compile_policies};
pub use skein_config::tail::{PolicyError, TailSamplingConfig};
use skein_model::{Span, Value};

/// A policy's vote (upstream `sampling.Decision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Keep.
    Sampled,
    /// No opinion to keep.
    NotSampled,
    /// Inverted match that keeps.
    InvertSampled,
    /// Inverted match that vetoes keeping.
    InvertNotSampled,
    /// Explicit drop, overriding everything.
    Dropped,
}

impl Decision {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Sampled => "sampled",
            Decision::NotSampled => "not_sampled",
            Decision::InvertSampled => "inverted_sampled",
            Decision::InvertNotSampled => "inverted_not_sampled",
            Decision::Dropped => "dropped",
        }
    }

    fn samples(self) -> bool {
        matches!(self, Decision::Sampled | Decision::InvertSampled)
    }
}

/// What a trace looks like to the policies: its spans and facts computed once.
pub struct TraceView<'a> {
    spans: &'a [Span],
    duration_ms: i64,
    proto_bytes: std::cell::OnceCell<i64>,
}

impl<'a> TraceView<'a> {
    /// Wraps the spans of one trace.
    pub fn new(spans: &'a [Span]) -> Self {
        let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_unix_nanos).max().unwrap_or(0);
        let duration_ms = i64::try_from(end.saturating_sub(start) / 1_000_000).unwrap_or(i64::MAX);
        Self { spans, duration_ms, proto_bytes: std::cell::OnceCell::new() }
    }

    fn span_count(&self) -> i64 {
        self.spans.len() as i64
    }

    fn proto_bytes(&self) -> i64 {
        *self.proto_bytes.get_or_init(|| {
            use prost::Message as _;
            let rs = skein_model::otlp::to_otlp(self.spans);
            rs.iter().map(|r| r.encoded_len() as i64).sum()
        })
    }

    /// True when a resource or span attribute `key` satisfies `f` on any span.
    fn any_attr(&self, key: &str, mut f: impl FnMut(&Value) -> bool) -> bool {
        let mut seen_resources: Vec<*const skein_model::Resource> = Vec::new();
        for s in self.spans {
            let r = std::sync::Arc::as_ptr(&s.resource);
            if !seen_resources.contains(&r) {
                if s.resource.attributes.iter().any(|kv| kv.key == key && f(&kv.value)) {
                    return true;
                }
                if seen_resources.len() < 16 {
                    seen_resources.push(r);
                }
            }
            if s.attributes.iter().any(|kv| kv.key == key && f(&kv.value)) {
                return true;
            }
        }
        false
    }
}

fn inverted(matched: bool, invert: bool) -> Decision {
    match (invert, matched) {
        (false, true) => Decision::Sampled,
        (false, false) => Decision::NotSampled,
        (true, true) => Decision::InvertNotSampled,
        (true, false) => Decision::InvertSampled,
    }
}

/// Upstream's `and` / `drop` rule: true unless a sub-policy says NotSampled or InvertNotSampled (evaluation stops
/// there).
fn all_sample(subs: &mut [Policy], t: &TraceView<'_>, now_nanos: u64) -> bool {
    subs.iter_mut().all(|sub| !matches!(evaluate(sub, t, now_nanos), Decision::NotSampled | Decision::InvertNotSampled))
}

fn bool_decision(b: bool) -> Decision {
    if b { Decision::Sampled } else { Decision::NotSampled }
}

/// One policy's vote on a trace at wall-clock time `now_nanos` (rate limiters use its second).
fn evaluate(policy: &mut Policy, t: &TraceView<'_>, now_nanos: u64) -> Decision {
    let now_second = now_nanos / 1_000_000_000;
    {
        match policy {
            Policy::Always => Decision::Sampled,
            Policy::TraceFlags => bool_decision(t.spans.iter().any(|s| s.flags & 1 == 1)),
            Policy::Latency { threshold_ms, upper_ms } => {
                let d = t.duration_ms;
                bool_decision(if *upper_ms == 0 { d >= *threshold_ms } else { *threshold_ms < d && d <= *upper_ms })
            }
            Policy::Status(codes) => bool_decision(t.spans.iter().any(|s| codes.contains(&s.status_code.0))),
            Policy::Probabilistic { salt, percentage } => {
                let trace_id = t.spans.first().map(|s| s.trace_id.0).unwrap_or_default();
                bool_decision(skein_proto::sampling::sampled(salt, &trace_id, *percentage))
            }
            Policy::RateLimiting { per_second, second, used } => {
                if *second != now_second {
                    *second = now_second;
                    *used = 0;
                }
                let after = *used + t.span_count();
                if after < *per_second {
                    *used = after;
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Policy::BytesLimiting { per_second, burst, tokens, last_nanos } => {
                if *last_nanos != 0 {
                    let elapsed = now_nanos.saturating_sub(*last_nanos) as f64 / 1e9;
                    *tokens = (*tokens + elapsed * *per_second).min(*burst);
                }
                *last_nanos = now_nanos;
                let need = t.proto_bytes() as f64;
                if need <= *tokens {
                    *tokens -= need;
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Policy::StringAttr { key, matcher, invert } => {
                let matched = t.any_attr(key, |v| match (v, &*matcher) {
                    (Value::Str(s), StringMatch::Exact(set)) => set.contains(s.as_str()),
                    (Value::Str(s), StringMatch::Regex(re)) => re.is_match(s),
                    _ => false,
                });
                inverted(matched, *invert)
            }
            Policy::NumericAttr { key, min, max, invert } => {
                let matched = t.any_attr(key, |v| match v {
                    Value::Int(i) => (*min..=*max).contains(i),
                    _ => false,
                });
                inverted(matched, *invert)
            }
            Policy::BoolAttr { key, value, invert } => {
                let matched = t.any_attr(key, |v| matches!(v, Value::Bool(b) if b == value));
                inverted(matched, *invert)
            }
            Policy::SpanCount { min, max } => bool_decision((*min..=*max).contains(&t.span_count())),
            Policy::TraceState { key, values } => bool_decision(t.spans.iter().any(|s| {
                s.trace_state
                    .split(',')
                    .filter_map(|m| m.trim().split_once('='))
                    .any(|(k, v)| k.trim() == key && values.contains(v.trim()))
            })),
            Policy::And(subs) => {
                if all_sample(subs, t, now_nanos) {
                    Decision::Sampled
                } else {
                    Decision::NotSampled
                }
            }
            Policy::Not(sub) => {
                if evaluate(sub, t, now_nanos).samples() {
                    Decision::NotSampled
                } else {
                    Decision::Sampled
                }
            }
            Policy::Drop(subs) => {
                if all_sample(subs, t, now_nanos) {
                    Decision::Dropped
                } else {
                    Decision::NotSampled
                }
            }
            Policy::Composite { max_total, subs, second } => {
                if *second != now_second {
                    *second = now_second;
                    for s in subs.iter_mut() {
                        s.2 = 0;
                    }
                }
                let total: i64 = subs.iter().map(|s| s.2).sum();
                for (sub, budget, used) in subs.iter_mut() {
                    if evaluate(sub, t, now_nanos).samples() {
                        let after = *used + t.span_count();
                        if after <= *budget && total + t.span_count() <= *max_total {
                            *used = after;
                            return Decision::Sampled;
                        }
                    }
                }
                Decision::NotSampled
            }
        }
    }
}

/// The outcome for one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Keep the trace.
    pub sampled: bool,
    /// Each top-level policy's vote, in configuration order (for the per-policy metrics).
    pub votes: Vec<(usize, Decision)>,
    /// How many traces this kept trace stands for: `100 / sampling_percentage` when only probabilistic
    /// policies sampled it, else 1 (weights dependency-edge and RED counts).
    pub weight: f64,
}

/// The compiled policy set (`tail_sampling.policies`), with its rate-limiter state.
pub struct TailSampler {
    names: Vec<String>,
    policies: Vec<Policy>,
    sample_on_first_match: bool,
}

impl TailSampler {
    /// Compiles and validates a configuration.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first bad policy (missing block, bad bounds, bad regex, nesting, empty set).
    pub fn new(config: &TailSamplingConfig) -> Result<Self, PolicyError> {
        let (names, policies) = compile_policies(config)?.into_iter().unzip();
        Ok(Self { names, policies, sample_on_first_match: config.sample_on_first_match })
    }

    /// The policy names, in order (indexes of [`Verdict::votes`]).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Decides one trace at wall-clock time `now_unix_nanos` (rate limiters use its second).
    pub fn decide(&mut self, spans: &[Span], now_unix_nanos: u64) -> Verdict {
        let view = TraceView::new(spans);
        let mut votes = Vec::with_capacity(self.policies.len());
        let mut probabilistic_only = true;
        let mut best_percentage: f64 = 0.0;
        for (i, p) in self.policies.iter_mut().enumerate() {
            let d = evaluate(p, &view, now_unix_nanos);
            votes.push((i, d));
            if d.samples() {
                match p {
                    Policy::Probabilistic { percentage, .. } => best_percentage = best_percentage.max(*percentage),
                    _ => probabilistic_only = false,
                }
                if self.sample_on_first_match && d == Decision::Sampled {
                    break;
                }
            }
        }
        let has = |want: Decision| votes.iter().any(|(_, d)| *d == want);
        let sampled = if has(Decision::Dropped) || has(Decision::InvertNotSampled) {
            false
        } else {
            has(Decision::Sampled) || has(Decision::InvertSampled)
        };
        let weight = if sampled && probabilistic_only && best_percentage > 0.0 { 100.0 / best_percentage } else { 1.0 };
        Verdict { sampled, votes, weight }
    }
}

#[cfg(test)]
#[path = "tail_tests.rs"]
mod tests;
