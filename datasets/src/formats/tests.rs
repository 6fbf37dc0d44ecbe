use std::path::PathBuf;

use super::*;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/trace-data").join(rel)
}

fn spans(rs: &[pt::ResourceSpans]) -> usize {
    rs.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
}

#[test]
fn pod_names_lose_two_suffixes() {
    assert_eq!(nezha::service_of_pod("ts-gateway-service-6f6cfc45b-d9pnv"), "ts-gateway-service");
    assert_eq!(nezha::service_of_pod("frontend-579b9bff58-t2dbm"), "frontend");
    assert_eq!(nezha::service_of_pod("redis-0"), "redis-0");
    assert_eq!(nezha::service_of_pod("plain"), "plain");
}

#[test]
fn detects_and_reads_every_shipped_format() {
    let otlp = read_file(&data("jaeger-otlp-hotrod-oteldemo/n_plus_one_full_serial.json"), None).expect("otlp");
    assert_eq!(spans(&otlp), 40);
    let v3 = read_file(&data("jaeger-otlp-hotrod-oteldemo/apiv3_getTrace_hotrod.json"), None).expect("api_v3");
    assert_eq!(spans(&v3), 40);
    let es = read_file(&data("jaeger-es-hotrod/jaeger-span-2023-01-24.json"), None).expect("es");
    assert_eq!(spans(&es), 379);
    let errors = es
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .count();
    assert_eq!(errors, 18, "error=true tags become ERROR status");
    let csv = read_file(&data("nezha-ob-tt-csv/construct_data/2022-08-23/trace/17_00_trace.csv"), None).expect("csv");
    assert_eq!(spans(&csv), 22_969);
}

#[test]
fn reads_jaeger_api_and_zipkin_json() {
    let jaeger = r#"{"data":[{"traceID":"4376effce3c2d72d","spans":[{"traceID":"4376effce3c2d72d","spanID":"01",
        "operationName":"GET","references":[],"startTime":10,"duration":5,"processID":"p1",
        "tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"n","type":"int64","value":3}],
        "logs":[{"timestamp":12,"fields":[{"key":"event","type":"string","value":"hi"}]}]}],
        "processes":{"p1":{"serviceName":"api","tags":[]}}}]}"#;
    let rs = read_str(jaeger, None).expect("jaeger");
    let s = &rs[0].scope_spans[0].spans[0];
    assert_eq!((s.kind, s.start_time_unix_nano, s.end_time_unix_nano), (2, 10_000, 15_000));
    assert_eq!(s.events[0].name, "hi");
    assert_eq!(s.trace_id.len(), 16);
    let zipkin = r#"[{"traceId":"a","id":"b","parentId":"c","name":"get","kind":"CLIENT","timestamp":1,"duration":2,
        "localEndpoint":{"serviceName":"web"},"remoteEndpoint":{"serviceName":"db"},"tags":{"error":"timeout"}}]"#;
    let rs = read_str(zipkin, None).expect("zipkin");
    let s = &rs[0].scope_spans[0].spans[0];
    assert_eq!(s.kind, 3);
    assert_eq!(s.status.as_ref().map(|s| s.code), Some(2));
    assert!(read_str("[1,2]", None).is_err());
    assert!(read_str("{not json", None).is_err());
}

#[test]
fn shift_to_now_puts_the_latest_span_end_at_now_and_keeps_relative_timing() {
    let mut rs = read_file(&data("jaeger-es-hotrod/jaeger-span-2023-01-24.json"), None).expect("es");
    let times = |rs: &[pt::ResourceSpans]| -> Vec<(u64, u64, Vec<u64>)> {
        rs.iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| {
                (s.start_time_unix_nano, s.end_time_unix_nano, s.events.iter().map(|e| e.time_unix_nano).collect())
            })
            .collect()
    };
    let before = times(&rs);
    let latest_before = before.iter().map(|(s, e, _)| *s.max(e)).max().expect("spans");
    let earliest_before = before.iter().map(|(s, _, _)| *s).min().expect("spans");
    let now = 1_900_000_000_000_000_000u64;
    let delta = shift_to_end_at(&mut rs, now);
    assert_eq!(delta, i128::from(now) - i128::from(latest_before));
    let after = times(&rs);
    assert_eq!(after.iter().map(|(s, e, _)| *s.max(e)).max(), Some(now), "the latest span ends now");
    let span_of_data = latest_before - earliest_before;
    assert_eq!(after.iter().map(|(s, _, _)| *s).min(), Some(now - span_of_data), "nothing lies in the future");
    for ((s0, e0, ev0), (s1, e1, ev1)) in before.iter().zip(&after) {
        assert_eq!((e1 - s1, i128::from(*s1) - i128::from(*s0)), (e0 - s0, delta), "durations and offsets kept");
        let moved: Vec<u64> = ev0.iter().map(|t| u64::try_from(i128::from(*t) + delta).expect("in range")).collect();
        assert_eq!(ev1, &moved, "event times move with their span");
    }
    // Data already in the future moves back, and an empty dataset is left alone.
    let delta_back = shift_to_end_at(&mut rs, now - 1_000);
    assert_eq!(delta_back, -1_000);
    assert_eq!(shift_to_end_at(&mut [], now), 0);
}
