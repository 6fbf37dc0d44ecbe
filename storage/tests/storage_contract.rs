//! The storage contract: one suite every [`TraceStore`] backend must pass. It runs against the embedded store
//! always, and against ScyllaDB (a fresh keyspace per run, dropped afterwards) with
//! `SKEIN_TEST_SCYLLA=host:port cargo test -p skein-storage --test storage_contract -- --ignored`.

use std::sync::Arc;

use skein_model::{Event, KeyValue, Link, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value, service_resource};
use skein_storage::embedded::{EmbeddedConfig, EmbeddedStore};
use skein_storage::{
    DependencyLink, Dictionaries, Operation, StoreLayout, TraceQuery, TraceStore, TraceSummary, WriteBatch,
    prepare_batch,
};

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

fn batch(dicts: &Dictionaries, traces: &[Vec<Span>], layout: StoreLayout) -> WriteBatch {
    let inputs = traces.iter().map(|t| {
        let important = t.iter().any(|s| s.status_code == StatusCode::ERROR);
        (t.as_slice(), skein_model::dependencies::edges(t, &Default::default()), important)
    });
    prepare_batch(inputs, dicts, layout).expect("prepare")
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
    store.write(batch(&dicts, &traces[..1], store.layout()).into()).await.expect("write");
    // A later batch reuses dictionary entries written by the first one.
    store.write(batch(&dicts, &traces[1..], store.layout()).into()).await.expect("write");

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
    store.write(batch(&dicts, &[vec![t[0].clone()]], store.layout()).into()).await.expect("write first chunk");
    store.write(batch(&dicts, std::slice::from_ref(&t), store.layout()).into()).await.expect("write late chunk");
    assert_eq!(store.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
    let mut q5 = query("frontend");
    q5.start_min_unix_nanos = T0 + 9 * HOUR;
    assert_eq!(store.find_traces(q5).await.expect("find").traces.len(), 1, "one trace, not one per chunk");

    // A batch of many traces (one pack in the embedded store): each comes back whole and alone.
    let many: Vec<Vec<Span>> =
        (0..40u8).map(|i| trace(run, 100 + i, T0 + 10 * HOUR + u64::from(i) * 1_000_000)).collect();
    store.write(batch(&dicts, &many, store.layout()).into()).await.expect("write many");
    for t in &many {
        assert_eq!(&store.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
    }
}

/// Jaeger's search semantics (its storage integration suite, `fixtures/queries.json`): a trace matches when one
/// span of the service starts inside the window and meets every criterion; tags may match any place of that span
/// (span, resource, scope, event or link attributes). The expected answers come from plain iteration over the
/// spans, never from the index.
async fn jaeger_semantics(store: Arc<dyn TraceStore>, run: u8) {
    const SEC: u64 = 1_000_000_000;
    let base = T0 + 20 * HOUR;
    let dicts = Dictionaries::new(store.partition_secs());
    let span = |trace: u8, id: u8, service: &str, start: u64| {
        let mut tid = [trace; 16];
        tid[0] = run;
        let mut s = Span::minimal(TraceId(tid), SpanId([id; 8]), &format!("op{id}"), service_resource(service));
        s.start_unix_nanos = start;
        s.end_unix_nanos = start + 2 * SEC;
        if id > 1 {
            s.parent_span_id = vec![1; 8];
        }
        s
    };
    // 1: straddles the window start: its first "api" span starts 5 s before, a later one 30 s inside.
    let straddling = vec![span(1, 1, "api", base - 5 * SEC), span(1, 2, "api", base + 30 * SEC)];
    // 2: "api" starts only before the window; its "db" span starts inside.
    let before = vec![span(2, 1, "api", base - 20 * SEC), span(2, 2, "db", base + SEC)];
    // 3: one span carries a span tag, a resource tag, a scope tag, an event tag and a link tag.
    let mut tagged = span(3, 1, "api", base + 60 * SEC);
    tagged.attributes.push(KeyValue::new("http.route", Value::Str("/pay".into())));
    tagged.resource = Arc::new(skein_model::Resource {
        attributes: vec![
            KeyValue::new("service.name", Value::Str("api".into())),
            KeyValue::new("host.name", Value::Str("node-7".into())),
        ],
        ..Default::default()
    });
    tagged.scope = Arc::new(Scope {
        name: "io.opentelemetry.http".into(),
        attributes: vec![KeyValue::new("library.tier", Value::Str("edge".into()))],
        ..Default::default()
    });
    tagged.events.push(Event {
        time_unix_nanos: base + 61 * SEC,
        name: "retry".into(),
        attributes: vec![KeyValue::new("retry.count", Value::Int(2))],
        ..Default::default()
    });
    tagged.links.push(Link {
        trace_id: vec![9; 16],
        span_id: vec![9; 8],
        attributes: vec![KeyValue::new("link.reason", Value::Str("batch".into()))],
        ..Default::default()
    });
    // 4: the same tags spread over two spans of the service: no single span has them all.
    let mut split_a = span(4, 1, "api", base + 90 * SEC);
    split_a.attributes.push(KeyValue::new("http.route", Value::Str("/pay".into())));
    let mut split_b = span(4, 2, "api", base + 91 * SEC);
    split_b.attributes.push(KeyValue::new("library.tier", Value::Str("edge".into())));
    // 5: one service's spans 40 s apart (wider than one index entry covers).
    let long = vec![span(5, 1, "api", base + 200 * SEC), span(5, 2, "api", base + 240 * SEC)];
    let traces = [straddling, before, vec![tagged], vec![split_a, split_b], long];
    store.write(batch(&dicts, &traces, store.layout()).into()).await.expect("write");

    let expected = |q: &TraceQuery| -> Vec<u8> {
        traces
            .iter()
            .filter(|t| {
                t.iter().any(|s| {
                    let mut tags_found = vec![false; q.tags.len()];
                    let attrs = s
                        .attributes
                        .iter()
                        .chain(&s.resource.attributes)
                        .chain(&s.scope.attributes)
                        .chain(s.events.iter().flat_map(|e| &e.attributes))
                        .chain(s.links.iter().flat_map(|l| &l.attributes));
                    for kv in attrs {
                        for (i, (k, v)) in q.tags.iter().enumerate() {
                            tags_found[i] |= kv.key == *k && kv.value.to_tag_string() == *v;
                        }
                    }
                    s.service_name() == q.service
                        && s.start_unix_nanos >= q.start_min_unix_nanos
                        && s.start_unix_nanos <= q.start_max_unix_nanos
                        && tags_found.iter().all(|f| *f)
                })
            })
            .map(|t| t[0].trace_id.0[1])
            .collect()
    };
    let window = |service: &str, from: u64, to: u64, tags: &[(&str, &str)]| TraceQuery {
        service: service.into(),
        tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        start_min_unix_nanos: from,
        start_max_unix_nanos: to,
        limit: 100,
        ..TraceQuery::default()
    };
    let all_tags = [
        ("http.route", "/pay"),
        ("host.name", "node-7"),
        ("library.tier", "edge"),
        ("retry.count", "2"),
        ("link.reason", "batch"),
    ];
    let cases = [
        ("straddling the window start", window("api", base, base + 3600 * SEC, &[])),
        ("only the other service inside", window("api", base, base + 10 * SEC, &[])),
        ("db inside", window("db", base, base + 10 * SEC, &[])),
        ("five places of one span", window("api", base, base + 3600 * SEC, &all_tags)),
        ("link tag", window("api", base, base + 3600 * SEC, &[("link.reason", "batch")])),
        ("scope tag", window("api", base, base + 3600 * SEC, &[("library.tier", "edge")])),
        ("tags on different spans", window("api", base + 85 * SEC, base + 95 * SEC, &all_tags[..3])),
        ("the later span of a long service run", window("api", base + 230 * SEC, base + 250 * SEC, &[])),
        ("between a long run's spans", window("api", base + 210 * SEC, base + 230 * SEC, &[])),
    ];
    for (name, q) in cases {
        let want = expected(&q);
        let full = store.find_traces(q.clone()).await.expect("find").traces;
        let mut got = ids(&full);
        got.sort_unstable();
        assert_eq!(got, want, "{name}");
        // The summary search finds the same traces in the same order, each summarized as its full trace is.
        let summaries = store.find_trace_summaries(q).await.expect("summaries").summaries;
        let of_full: Vec<TraceSummary> = full.iter().filter_map(TraceSummary::of).collect();
        assert_eq!(summaries, of_full, "{name}: summaries");
    }
    // The cases are not vacuous: some find traces, some find none.
    assert_eq!(expected(&window("api", base, base + 3600 * SEC, &[])).len(), 4);
    assert!(expected(&window("api", base + 210 * SEC, base + 230 * SEC, &[])).is_empty());
}

#[tokio::test]
async fn embedded_backend_meets_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn TraceStore> = Arc::new(EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open"));
    contract(store.clone(), 1).await;
    jaeger_semantics(store, 1).await;
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
    jaeger_semantics(store.clone(), 7).await;
    store.session().query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ()).await.expect("drop keyspace");
}
