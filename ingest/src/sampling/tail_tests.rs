//! Policy tests against hand-built traces, one per policy type, with the OpenTelemetry Collector's semantics.

use super::*;
use skein_config::GoDuration;
use skein_model::{KeyValue, SpanId, StatusCode, TraceId, service_resource};

const SEC: u64 = 1_000_000_000;
const NOW: u64 = 1_700_000_000 * SEC;

fn span(trace: u8, id: u8, start_ms: u64, dur_ms: u64) -> Span {
    let mut s = Span::minimal(TraceId([trace; 16]), SpanId([id; 8]), "op", service_resource("svc"));
    s.start_unix_nanos = NOW + start_ms * 1_000_000;
    s.end_unix_nanos = s.start_unix_nanos + dur_ms * 1_000_000;
    s
}

fn trace(n: u8) -> Vec<Span> {
    (1..=n).map(|i| span(7, i, u64::from(i), 10)).collect()
}

fn with_attr(mut spans: Vec<Span>, key: &str, value: Value) -> Vec<Span> {
    spans[0].attributes.push(KeyValue::new(key, value));
    spans
}

fn sampler(yaml: &str) -> TailSampler {
    let cfg: TailSamplingConfig = serde_yaml::from_str(yaml).expect("yaml");
    TailSampler::new(&cfg).expect("valid")
}

fn decide(yaml: &str, spans: &[Span]) -> bool {
    sampler(yaml).decide(spans, NOW).sampled
}

#[test]
fn always_sample() {
    assert!(decide("policies: [{name: a, type: always_sample}]", &trace(1)));
}

#[test]
fn latency_lower_and_upper_thresholds() {
    let slow = vec![span(1, 1, 0, 600)];
    let fast = vec![span(1, 1, 0, 100)];
    let y = "policies: [{name: l, type: latency, latency: {threshold_ms: 500}}]";
    assert!(decide(y, &slow));
    assert!(!decide(y, &fast));
    // Duration is latest end − earliest start, across spans.
    let spread = vec![span(1, 1, 0, 10), span(1, 2, 590, 10)];
    assert!(decide(y, &spread));
    let band = "policies: [{name: l, type: latency, latency: {threshold_ms: 100, upper_threshold_ms: 500}}]";
    assert!(!decide(band, &fast), "lower bound is exclusive with an upper bound");
    assert!(decide(band, &[span(1, 1, 0, 300)]));
    assert!(!decide(band, &slow));
}

#[test]
fn status_code() {
    let mut t = trace(3);
    let y = "policies: [{name: s, type: status_code, status_code: {status_codes: [ERROR]}}]";
    assert!(!decide(y, &t));
    t[2].status_code = StatusCode::ERROR;
    assert!(decide(y, &t));
    assert!(decide("policies: [{name: s, type: status_code, status_code: {status_codes: [UNSET]}}]", &t));
}

#[test]
fn probabilistic_matches_the_shared_hash_and_gives_a_weight() {
    let y = "policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: 25}}]";
    let mut s = sampler(y);
    let mut kept = 0;
    for i in 0..4000u32 {
        let mut spans = trace(1);
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        id[12..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9).to_be_bytes());
        spans[0].trace_id = TraceId(id);
        let v = s.decide(&spans, NOW);
        assert_eq!(v.sampled, skein_proto::sampling::sampled("", &id, 25.0));
        if v.sampled {
            kept += 1;
            assert!((v.weight - 4.0).abs() < 1e-9);
        }
    }
    assert!((800..1200).contains(&kept), "{kept}");
    // Another salt keeps a different set.
    let salted = "policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: 25, hash_salt: x}}]";
    let differs = (0..200u8).any(|i| {
        let mut spans = trace(1);
        spans[0].trace_id = TraceId([i; 16]);
        decide(y, &spans) != decide(salted, &spans)
    });
    assert!(differs);
}

#[test]
fn rate_limiting_per_second() {
    let mut s = sampler("policies: [{name: r, type: rate_limiting, rate_limiting: {spans_per_second: 10}}]");
    assert!(s.decide(&trace(4), NOW).sampled);
    assert!(s.decide(&trace(4), NOW).sampled);
    assert!(!s.decide(&trace(4), NOW).sampled, "4+4+4 is not < 10");
    assert!(s.decide(&trace(4), NOW + SEC).sampled, "budget renews each second");
}

#[test]
fn bytes_limiting_token_bucket() {
    let t = trace(5);
    let size = TraceView::new(&t).proto_bytes();
    assert!(size > 100);
    let y = format!(
        "policies: [{{name: b, type: bytes_limiting, bytes_limiting: {{bytes_per_second: {size}, burst_capacity: {}}}}}]",
        size * 2
    );
    let mut s = sampler(&y);
    assert!(s.decide(&t, NOW).sampled);
    assert!(s.decide(&t, NOW).sampled);
    assert!(!s.decide(&t, NOW).sampled, "burst spent");
    assert!(s.decide(&t, NOW + SEC).sampled, "refilled after a second");
}

#[test]
fn string_attribute_exact_regex_resource_and_inverted() {
    let t = with_attr(trace(2), "http.route", Value::Str("/api/checkout".into()));
    let exact =
        "policies: [{name: s, type: string_attribute, string_attribute: {key: http.route, values: [/api/checkout]}}]";
    assert!(decide(exact, &t));
    assert!(!decide(exact, &trace(2)));
    let re = "policies: [{name: s, type: string_attribute, string_attribute: {key: http.route, values: ['^/api/.*'], enabled_regex_matching: true}}]";
    assert!(decide(re, &t));
    // Resource attributes count too.
    let svc = "policies: [{name: s, type: string_attribute, string_attribute: {key: service.name, values: [svc]}}]";
    assert!(decide(svc, &trace(1)));
    // Inverted: a match vetoes even an always_sample; no match samples.
    let inv = "policies: [{name: a, type: always_sample}, {name: s, type: string_attribute, string_attribute: {key: http.route, values: [/api/checkout], invert_match: true}}]";
    assert!(!decide(inv, &t));
    assert!(decide(inv, &trace(2)));
    let inv_alone = "policies: [{name: s, type: string_attribute, string_attribute: {key: http.route, values: [/health], invert_match: true}}]";
    assert!(decide(inv_alone, &t));
}

#[test]
fn numeric_and_boolean_attributes() {
    let t = with_attr(trace(1), "http.status_code", Value::Int(503));
    let num = "policies: [{name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599}}]";
    assert!(decide(num, &t));
    assert!(!decide(num, &with_attr(trace(1), "http.status_code", Value::Int(200))));
    let inv = "policies: [{name: n, type: numeric_attribute, numeric_attribute: {key: http.status_code, min_value: 500, max_value: 599, invert_match: true}}]";
    assert!(!decide(inv, &t));
    let b = with_attr(trace(1), "debug", Value::Bool(true));
    let bool_y = "policies: [{name: b, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]";
    assert!(decide(bool_y, &b));
    assert!(!decide(bool_y, &with_attr(trace(1), "debug", Value::Bool(false))));
}

#[test]
fn span_count_bounds_inclusive() {
    let y = "policies: [{name: c, type: span_count, span_count: {min_spans: 2, max_spans: 3}}]";
    assert!(!decide(y, &trace(1)));
    assert!(decide(y, &trace(2)));
    assert!(decide(y, &trace(3)));
    assert!(!decide(y, &trace(4)));
    assert!(decide("policies: [{name: c, type: span_count, span_count: {min_spans: 2}}]", &trace(40)));
}

#[test]
fn trace_state_and_flags() {
    let mut t = trace(2);
    t[1].trace_state = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7".into();
    let y = "policies: [{name: t, type: trace_state, trace_state: {key: rojo, values: [00f067aa0ba902b7]}}]";
    assert!(decide(y, &t));
    assert!(!decide(y, &trace(2)));
    let f = "policies: [{name: f, type: trace_flags}]";
    assert!(!decide(f, &trace(1)));
    t[0].flags = 1;
    assert!(decide(f, &t));
}

#[test]
fn and_requires_every_sub_policy() {
    let y = r#"
policies:
  - name: slow-errors
    type: and
    and:
      and_sub_policy:
        - {name: slow, type: latency, latency: {threshold_ms: 500}}
        - {name: err, type: status_code, status_code: {status_codes: [ERROR]}}
"#;
    let mut t = vec![span(1, 1, 0, 900)];
    assert!(!decide(y, &t));
    t[0].status_code = StatusCode::ERROR;
    assert!(decide(y, &t));
}

#[test]
fn drop_overrides_every_sample_vote() {
    let y = r#"
policies:
  - {name: all, type: always_sample}
  - name: no-health
    type: drop
    drop:
      drop_sub_policy:
        - {name: health, type: string_attribute, string_attribute: {key: http.route, values: [/healthz]}}
"#;
    assert!(!decide(y, &with_attr(trace(1), "http.route", Value::Str("/healthz".into()))));
    assert!(decide(y, &with_attr(trace(1), "http.route", Value::Str("/cart".into()))));
}

#[test]
fn not_inverts() {
    let y = "policies: [{name: n, type: not, not: {not_sub_policy: {name: e, type: status_code, status_code: {status_codes: [ERROR]}}}}]";
    assert!(decide(y, &trace(1)));
    let mut t = trace(1);
    t[0].status_code = StatusCode::ERROR;
    assert!(!decide(y, &t));
}

#[test]
fn composite_allocates_rate_in_policy_order() {
    let y = r#"
policies:
  - name: c
    type: composite
    composite:
      max_total_spans_per_second: 10
      policy_order: [errors, everything]
      composite_sub_policy:
        - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
        - {name: everything, type: always_sample}
      rate_allocation:
        - {policy: errors, percent: 60}
        - {policy: everything, percent: 40}
"#;
    let mut s = sampler(y);
    let mut err = trace(3);
    err[0].status_code = StatusCode::ERROR;
    assert!(s.decide(&err, NOW).sampled, "errors: 3 of 6");
    assert!(s.decide(&err, NOW).sampled, "errors: 6 of 6");
    // The errors share is spent; the error trace falls through to `everything` (4 spans/s).
    assert!(s.decide(&err, NOW).sampled, "everything: 3 of 4");
    assert!(!s.decide(&trace(3), NOW).sampled, "everything: 6 > 4");
    assert!(s.decide(&trace(3), NOW + SEC).sampled, "next second");
}

#[test]
fn sample_on_first_match_stops_evaluating() {
    let y = "sample_on_first_match: true\npolicies: [{name: a, type: always_sample}, {name: r, type: rate_limiting, rate_limiting: {spans_per_second: 2}}]";
    let mut s = sampler(y);
    for _ in 0..5 {
        let v = s.decide(&trace(1), NOW);
        assert!(v.sampled);
        assert_eq!(v.votes.len(), 1, "rate limiter not consulted");
    }
}

#[test]
fn otel_collector_config_is_accepted_verbatim() {
    // The upstream README's example (`processors.tail_sampling`), trimmed of ottl_condition.
    let y = r#"
decision_wait: 10s
num_traces: 100
expected_new_traces_per_sec: 10
decision_cache:
  sampled_cache_size: 100000
policies:
  [
    { name: test-policy-1, type: always_sample },
    { name: test-policy-2, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000} },
    { name: test-policy-3, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100} },
    { name: test-policy-4, type: probabilistic, probabilistic: {sampling_percentage: 10} },
    { name: test-policy-5, type: status_code, status_code: {status_codes: [ERROR, UNSET]} },
    { name: test-policy-6, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]} },
    { name: test-policy-7, type: string_attribute, string_attribute: {key: key2, values: [value1, val*], enabled_regex_matching: true, cache_max_size: 10} },
    { name: test-policy-8, type: rate_limiting, rate_limiting: {spans_per_second: 35} },
    { name: test-policy-9, type: string_attribute, string_attribute: {key: http.url, values: [\/health, \/metrics], enabled_regex_matching: true, invert_match: true} },
    { name: test-policy-10, type: span_count, span_count: {min_spans: 2, max_spans: 20} },
    { name: test-policy-11, type: trace_state, trace_state: { key: key3, values: [value1, value2] } },
    { name: test-policy-12, type: bytes_limiting, bytes_limiting: {bytes_per_second: 10240, burst_capacity: 20480} },
    { name: test-policy-13, type: boolean_attribute, boolean_attribute: {key: key4, value: true} },
    {
      name: and-policy-1,
      type: and,
      and: { and_sub_policy: [
        { name: test-and-policy-1, type: numeric_attribute, numeric_attribute: { key: key1, min_value: 50, max_value: 100 } },
        { name: test-and-policy-2, type: string_attribute, string_attribute: { key: key2, values: [ value1, value2 ] } },
      ] }
    },
    {
      name: composite-policy-1,
      type: composite,
      composite:
        {
          max_total_spans_per_second: 1000,
          policy_order: [test-composite-policy-1, test-composite-policy-2, test-composite-policy-3],
          composite_sub_policy:
            [
              { name: test-composite-policy-1, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100} },
              { name: test-composite-policy-2, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]} },
              { name: test-composite-policy-3, type: always_sample }
            ],
          rate_allocation:
            [
              { policy: test-composite-policy-1, percent: 50 },
              { policy: test-composite-policy-2, percent: 25 }
            ]
        }
    },
    {
      name: drop-policy-1,
      type: drop,
      drop: { drop_sub_policy: [
        { name: test-drop-policy-1, type: string_attribute, string_attribute: {key: url.path, values: [\/health, \/metrics], enabled_regex_matching: true} }
      ] }
    },
  ]
"#;
    let cfg: TailSamplingConfig = serde_yaml::from_str(y).expect("upstream example parses");
    assert_eq!(cfg.decision_wait, GoDuration(10 * SEC));
    assert_eq!(cfg.decision_cache.non_sampled_cache_size, 50_000);
    let mut s = TailSampler::new(&cfg).expect("compiles");
    assert_eq!(s.names().len(), 16);
    assert!(s.decide(&trace(3), NOW).sampled);
    // Round trip through YAML.
    let again: TailSamplingConfig = serde_yaml::from_str(&serde_yaml::to_string(&cfg).expect("ser")).expect("de");
    assert_eq!(again, cfg);
}

#[test]
fn invalid_configs_are_rejected_with_the_policy_name() {
    let cases = [
        ("policies: []", "empty"),
        ("policies: [{name: l, type: latency}]", "needs a `latency:` block"),
        ("policies: [{name: s, type: status_code, status_code: {status_codes: [BAD]}}]", "unknown status code"),
        ("policies: [{name: p, type: probabilistic, probabilistic: {sampling_percentage: 150}}]", "between 0 and 100"),
        (
            "policies: [{name: s, type: string_attribute, string_attribute: {key: k, values: ['('], enabled_regex_matching: true}}]",
            "bad regex",
        ),
        ("policies: [{name: a, type: always_sample}, {name: a, type: always_sample}]", "duplicate"),
        (
            "policies: [{name: x, type: and, and: {and_sub_policy: [{name: y, type: and, and: {and_sub_policy: []}}]}}]",
            "nested",
        ),
    ];
    for (y, want) in cases {
        let cfg: TailSamplingConfig = serde_yaml::from_str(y).expect(y);
        let e = TailSampler::new(&cfg).err().unwrap_or_else(|| panic!("{y} accepted"));
        assert!(e.to_string().contains(want), "{y}: {e}");
    }
    assert!(serde_yaml::from_str::<TailSamplingConfig>("policies: [{name: a, type: always_sample, typo: 1}]").is_err());
    assert!(serde_yaml::from_str::<TailSamplingConfig>("decision_wait: soon\npolicies: []").is_err());
}
