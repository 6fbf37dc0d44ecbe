//! The storage contract: one suite every [`TraceStore`] backend must pass. It runs against the embedded store
//! always, and against ScyllaDB (a fresh keyspace per run, dropped afterwards) with
//! `SKEIN_TEST_SCYLLA=host:port cargo test -p skein-storage --test storage_contract -- --ignored`.

use std::sync::Arc;

use skein_model::{KeyValue, Span, SpanId, SpanKind, StatusCode, TraceId, Value, service_resource};
use skein_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use skein_storage::{DependencyLink, Dictionaries, Operation, TraceQuery, TraceStore, WriteBatch, prepare_chunk};

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000_000_000;
const HOUR: u64 = 3_600_000_000_000;

fn trace(run: u8, id: u8, start: u64) -> Vec<Span> {
    let mut tid = [id; 16];
    tid[0] = run;
    let t = TraceId(tid);
    let mut root = Span::minimal(t, SpanId([1; 8]), "GET /dispatch", service_resource("frontend"));
    root.kind = SpanKind::SERVER;
    root.start_unix_nanos = start;
    root.end_unix_nanos = start + 50_000_000;
    root.attributes.push(KeyValue::new("http.status_code", Value::Int(200)));
    root.attributes.push(KeyValue::new("http.route", Value::Str("/dispatch".into())));
    let mut child = Span::minimal(t, SpanId([2; 8]), "SQL SELECT", service_resource("mysql"));
    child.kind = SpanKind::CLIENT;
    child.parent_span_id = vec![1; 8];
    child.start_unix_nanos = start + 1_000_000;
    child.end_unix_nanos = start + 31_000_000;
    child.status_code = StatusCode::ERROR;
    child.attributes.push(KeyValue::new("db.system", Value::Str("mysql".into())));
    vec![root, child]
}

fn batch(dicts: &Dictionaries, traces: &[Vec<Span>]) -> WriteBatch {
    WriteBatch {
        chunks: traces
            .iter()
            .map(|t| {
                let important = t.iter().any(|s| s.status_code == StatusCode::ERROR);
                prepare_chunk(t, skein_model::dependencies::edges(t, &Default::default()), Some(dicts), important)
                    .expect("prepare")
            })
            .collect(),
    }
}

fn query(service: &str) -> TraceQuery {
    TraceQuery { service: service.into(), start_max_unix_nanos: u64::MAX, limit: 100, ..TraceQuery::default() }
}

fn ids(found: &[Vec<Span>]) -> Vec<u8> {
    found.iter().map(|t| t[0].trace_id.0[1]).collect()
}

/// The contract. `run` distinguishes trace IDs of separate runs against a shared database.
async fn contract(store: Arc<dyn TraceStore>, run: u8) {
    let dicts = Dictionaries::new(store.partition_secs());
    // Three traces, two hours apart, so that they land in three time partitions / buckets.
    let traces: Vec<Vec<Span>> = (1..=3).map(|i| trace(run, i, T0 + u64::from(i) * 2 * HOUR)).collect();
    store.write(batch(&dicts, &traces[..1]).into()).await.expect("write");
    // A later batch reuses dictionary entries written by the first one.
    store.write(batch(&dicts, &traces[1..]).into()).await.expect("write");

    let got = store.get_trace(traces[1][0].trace_id).await.expect("get").expect("found");
    assert_eq!(got, traces[1], "every field round-trips through storage");
    assert!(store.get_trace(TraceId([0xee; 16])).await.expect("get").is_none(), "unknown trace");

    let found = store.find_traces(query("frontend")).await.expect("find");
    assert!(found.corrupt.is_empty());
    assert_eq!(ids(&found.traces), vec![3, 2, 1], "newest first");

    let mut q = query("mysql");
    q.tags = vec![("error".into(), "true".into())];
    q.duration_min_nanos = Some(30_000_000);
    q.operation = Some("SQL SELECT".into());
    assert_eq!(store.find_traces(q.clone()).await.expect("find").traces.len(), 3, "tag + duration + operation");
    q.duration_min_nanos = Some(30_000_001);
    assert!(store.find_traces(q.clone()).await.expect("find").traces.is_empty(), "duration excludes");
    q.duration_min_nanos = None;
    q.limit = 2;
    assert_eq!(ids(&store.find_traces(q.clone()).await.expect("find").traces), vec![3, 2], "limit keeps newest");
    q.tags = vec![("http.status_code".into(), "200".into())];
    assert!(store.find_traces(q).await.expect("find").traces.is_empty(), "tag belongs to another service");
    let mut tagged = query("frontend");
    tagged.tags = vec![("http.status_code".into(), "200".into()), ("span.kind".into(), "server".into())];
    tagged.duration_max_nanos = Some(50_000_000);
    assert_eq!(store.find_traces(tagged).await.expect("find").traces.len(), 3, "int tag as string, kind tag");

    let mut windowed = query("frontend");
    windowed.start_min_unix_nanos = T0 + 4 * HOUR;
    windowed.start_max_unix_nanos = T0 + 6 * HOUR;
    assert_eq!(ids(&store.find_traces(windowed).await.expect("find").traces), vec![3, 2], "time window");

    let services = store.services().await.expect("services");
    assert!(services.contains(&"frontend".to_string()) && services.contains(&"mysql".to_string()));
    let ops = store.operations("mysql", None).await.expect("ops");
    assert_eq!(ops, vec![Operation { name: "SQL SELECT".into(), kind: SpanKind::CLIENT }]);
    assert!(store.operations("mysql", Some(SpanKind::SERVER)).await.expect("ops").is_empty());
    assert_eq!(store.operations("frontend", Some(SpanKind::SERVER)).await.expect("ops").len(), 1);

    let deps = store.dependencies(T0 + 8 * HOUR, 8 * HOUR).await.expect("deps");
    assert_eq!(
        deps,
        vec![DependencyLink { parent: "frontend".into(), child: "mysql".into(), call_count: 3, error_count: 3 }]
    );
    let narrow = store.dependencies(T0 + 4 * HOUR + 60_000_000_000, 120_000_000_000).await.expect("deps");
    assert_eq!(narrow.first().map(|l| l.call_count), Some(1), "one bucket");

    // Late chunks merge with what is stored; exact duplicates collapse on read.
    let t = trace(run, 5, T0 + 9 * HOUR);
    store.write(batch(&dicts, &[vec![t[0].clone()]]).into()).await.expect("write first chunk");
    store.write(batch(&dicts, std::slice::from_ref(&t)).into()).await.expect("write late chunk");
    assert_eq!(store.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
    let mut q5 = query("frontend");
    q5.start_min_unix_nanos = T0 + 9 * HOUR;
    assert_eq!(store.find_traces(q5).await.expect("find").traces.len(), 1, "one trace, not one per chunk");

    // A self-contained block (no shared dictionary) is readable too.
    let t6 = trace(run, 6, T0 + 10 * HOUR);
    let c =
        prepare_chunk(&t6, skein_model::dependencies::edges(&t6, &Default::default()), None, false).expect("prepare");
    store.write(WriteBatch { chunks: vec![c] }.into()).await.expect("write");
    assert_eq!(store.get_trace(t6[0].trace_id).await.expect("get").expect("found"), t6);
}

#[tokio::test]
async fn embedded_backend_meets_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open");
    contract(Arc::new(store), 1).await;
}

/// Runs the contract against ScyllaDB at `SKEIN_TEST_SCYLLA=host:port`, in a fresh keyspace that is dropped
/// afterwards. Schema creation is exercised twice to prove it idempotent.
#[tokio::test]
#[ignore = "needs SKEIN_TEST_SCYLLA=host:port (a ScyllaDB node)"]
async fn scylla_backend_meets_the_contract() {
    use skein_storage::scylla::{SCHEMA_VERSION, ScyllaConfig, ScyllaStore, ensure_schema};
    let node = std::env::var("SKEIN_TEST_SCYLLA").expect("SKEIN_TEST_SCYLLA=host:port of a ScyllaDB node");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let keyspace = format!("skein_contract_{}", nanos % 1_000_000_000);
    let mut config = ScyllaConfig::new(vec![node], &keyspace);
    // A single test node cannot serve LOCAL_QUORUM for RF 1 any differently; ONE keeps the run independent of it.
    config.consistency = skein_storage::scylla::parse_consistency("ONE").expect("consistency");
    let store = ScyllaStore::connect(config.clone()).await.expect("connect to SKEIN_TEST_SCYLLA");
    assert_eq!(ensure_schema(store.session(), &config.schema).await.expect("schema again"), SCHEMA_VERSION);
    let store = Arc::new(store);
    contract(store.clone(), 7).await;
    store.session().query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await.expect("drop keyspace");
}
