use std::collections::HashMap;

use super::*;
use crate::model::{KeyValue, SpanId, StatusCode, Value, service_resource};
use crate::storage::prepare_chunk;

const T0: u64 = 1_700_000_000_000_000_000;

fn trace(id: u8, start: u64) -> Vec<Span> {
    let t = TraceId([id; 16]);
    let mut root = Span::minimal(t, SpanId([1; 8]), "GET /dispatch", service_resource("frontend"));
    root.kind = SpanKind::SERVER;
    root.start_unix_nanos = start;
    root.end_unix_nanos = start + 50_000_000;
    root.attributes.push(KeyValue::new("http.status_code", Value::Int(200)));
    let mut child = Span::minimal(t, SpanId([2; 8]), "SQL SELECT", service_resource("mysql"));
    child.kind = SpanKind::CLIENT;
    child.parent_span_id = vec![1; 8];
    child.start_unix_nanos = start + 1_000_000;
    child.end_unix_nanos = start + 31_000_000;
    child.status_code = StatusCode::ERROR;
    vec![root, child]
}

fn batch(traces: &[Vec<Span>]) -> WriteBatch {
    WriteBatch { chunks: traces.iter().map(|t| prepare_chunk(t, &HashMap::new()).expect("prepare")).collect() }
}

fn query(service: &str) -> TraceQuery {
    TraceQuery { service: service.into(), start_max_unix_nanos: u64::MAX, limit: 100, ..TraceQuery::default() }
}

#[tokio::test]
async fn writes_reads_searches_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig::new(dir.path());
    let store = EmbeddedStore::open(&cfg).expect("open");
    // Three traces, two hours apart, so they land in three partitions.
    let traces: Vec<Vec<Span>> = (1..=3).map(|i| trace(i, T0 + u64::from(i) * 7_200_000_000_000)).collect();
    store.write(batch(&traces)).await.expect("write");

    let got = store.get_trace(TraceId([2; 16])).await.expect("get").expect("found");
    assert_eq!(got, traces[1]);
    assert!(store.get_trace(TraceId([9; 16])).await.expect("get").is_none());

    let found = store.find_traces(query("frontend")).await.expect("find");
    let ids: Vec<u8> = found.iter().map(|t| t[0].trace_id.0[0]).collect();
    assert_eq!(ids, vec![3, 2, 1], "newest first");

    let mut q = query("mysql");
    q.tags = vec![("error".into(), "true".into())];
    q.duration_min_nanos = Some(30_000_000);
    q.operation = Some("SQL SELECT".into());
    assert_eq!(store.find_traces(q.clone()).await.expect("find").len(), 3);
    q.duration_min_nanos = Some(30_000_001);
    assert!(store.find_traces(q.clone()).await.expect("find").is_empty());
    q.duration_min_nanos = None;
    q.limit = 2;
    assert_eq!(store.find_traces(q.clone()).await.expect("find").len(), 2);
    q.tags = vec![("http.status_code".into(), "200".into())];
    assert!(store.find_traces(q).await.expect("find").is_empty(), "tag belongs to another service");

    let mut windowed = query("frontend");
    windowed.start_min_unix_nanos = T0 + 7_200_000_000_000;
    windowed.start_max_unix_nanos = T0 + 2 * 7_200_000_000_000;
    assert_eq!(store.find_traces(windowed).await.expect("find").len(), 2);

    assert_eq!(store.services().await.expect("services"), vec!["frontend", "mysql"]);
    let ops = store.operations("mysql", None).await.expect("ops");
    assert_eq!(ops, vec![Operation { name: "SQL SELECT".into(), kind: SpanKind::CLIENT }]);
    assert!(store.operations("mysql", Some(SpanKind::SERVER)).await.expect("ops").is_empty());

    let deps = store.dependencies(T0 + 4 * 7_200_000_000_000, 5 * 7_200_000_000_000).await.expect("deps");
    assert_eq!(
        deps,
        vec![DependencyLink { parent: "frontend".into(), child: "mysql".into(), call_count: 3, error_count: 3 }]
    );
    let narrow = store.dependencies(T0 + 7_200_000_000_000 + 60_000_000_000, 120_000_000_000).await.expect("deps");
    assert_eq!(narrow[0].call_count, 1);
    drop(store);

    let reopened = EmbeddedStore::open(&cfg).expect("reopen");
    assert_eq!(reopened.get_trace(TraceId([3; 16])).await.expect("get").expect("found"), traces[2]);
    assert_eq!(reopened.partitions().len(), 3, "one partition per hour of trace start");
}

#[tokio::test]
async fn late_chunks_merge_and_exact_duplicates_collapse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open");
    let t = trace(5, T0);
    store.write(batch(&[vec![t[0].clone()]])).await.expect("write first chunk");
    // The late chunk repeats the root (a re-export) and adds the child.
    store.write(batch(std::slice::from_ref(&t))).await.expect("write late chunk");
    assert_eq!(store.get_trace(TraceId([5; 16])).await.expect("get").expect("found"), t);
    assert_eq!(store.find_traces(query("frontend")).await.expect("find").len(), 1);
}
