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
