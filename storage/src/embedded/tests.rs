//! Embedded-specific behaviour; the backend-independent contract is in `storage/tests/storage_contract.rs`.

use std::sync::atomic::AtomicU64;

use super::*;
use crate::{Dictionaries, StoreLayout, merge_chunks, prepare_batch, prepare_chunk};
use skein_model::{KeyValue, SpanId, StatusCode, Value, service_resource};

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn trace(id: u8, start: u64, error: bool) -> Vec<Span> {
    let t = TraceId([id; 16]);
    let mut root = Span::minimal(t, SpanId([1; 8]), "GET /dispatch", service_resource("frontend"));
    root.kind = SpanKind::SERVER;
    root.start_unix_nanos = start;
    root.end_unix_nanos = start + 50_000_000;
    root.attributes.push(KeyValue::new("http.route", Value::Str("/dispatch".into())));
    if error {
        root.status_code = StatusCode::ERROR;
    }
    vec![root]
}

fn batch(dicts: &Dictionaries, traces: &[Vec<Span>]) -> WriteBatch {
    let inputs = traces.iter().map(|t| {
        (t.as_slice(), skein_model::dependencies::edges(t, &Default::default()), t[0].status_code == StatusCode::ERROR)
    });
    prepare_batch(inputs, dicts, StoreLayout::Packed).expect("prepare")
}

/// An empty store in a temporary directory (kept while the returned guard lives) and the writer's dictionaries.
fn fresh_store() -> (tempfile::TempDir, EmbeddedStore, Dictionaries) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("open");
    let dicts = Dictionaries::new(store.partition_secs());
    (dir, store, dicts)
}

fn query(service: &str) -> TraceQuery {
    TraceQuery { service: service.into(), start_max_unix_nanos: u64::MAX, limit: 100, ..TraceQuery::default() }
}

#[tokio::test]
async fn survives_reopen_with_partitions_and_dictionaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig::new(dir.path());
    let store = EmbeddedStore::open(&cfg).expect("open");
    let dicts = Dictionaries::new(store.partition_secs());
    let traces: Vec<Vec<Span>> = (1..=3).map(|i| trace(i, T0 + u64::from(i) * 7200 * SEC, i == 2)).collect();
    store.write(batch(&dicts, &traces).into()).await.expect("write");
    drop(store);

    let reopened = EmbeddedStore::open(&cfg).expect("reopen");
    for t in &traces {
        assert_eq!(&reopened.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
    }
    let parts = reopened.partitions();
    assert_eq!(parts.len(), 3, "one partition per hour of trace start and tier: {parts:?}");
    assert_eq!(parts.iter().filter(|p| p.important).count(), 1, "the error trace is in the important tier");
}

/// Retention with a 10 s partition, 60 s retention, 300 s for important traces and an injected clock.
#[tokio::test]
async fn retention_drops_expired_partitions_per_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig {
        partition_secs: 10,
        retention: Duration::from_secs(60),
        retention_important: Duration::from_secs(300),
        ..EmbeddedConfig::new(dir.path())
    };
    let now = Arc::new(AtomicU64::new(T0 + 5 * SEC));
    let clock_now = now.clone();
    let store = EmbeddedStore::open_with_clock(&cfg, Arc::new(move || clock_now.load(Ordering::SeqCst))).expect("open");
    let dicts = Dictionaries::new(store.partition_secs());
    let ordinary = trace(1, T0, false);
    let important = trace(2, T0 + SEC, true);
    let later = trace(3, T0 + 100 * SEC, false);
    store.write(batch(&dicts, &[ordinary.clone(), important.clone()]).into()).await.expect("write");
    now.store(T0 + 100 * SEC, Ordering::SeqCst);
    store.write(batch(&dicts, std::slice::from_ref(&later)).into()).await.expect("write");
    let mut registry = prometheus_client::registry::Registry::with_prefix("skein");
    let metrics = StorageMetrics::register(&mut registry);
    export_storage_gauges(&store, &metrics);
    let text = skein_testkit::render(&registry);
    assert!(text.contains("skein_storage_partitions{tier=\"standard\"} 2"), "{text}");
    assert!(text.contains("skein_storage_partitions{tier=\"important\"} 1"), "{text}");
    assert!(store.disk_bytes().expect("disk") > 0);

    // The first partition covers [T0, T0 + 10 s): it expires 60 s after its end.
    now.store(T0 + 69 * SEC, Ordering::SeqCst);
    assert!(store.expire().await.expect("expire").is_empty());
    // Past 60 s: the ordinary partition goes, the important one and the later one stay.
    now.store(T0 + 70 * SEC, Ordering::SeqCst);
    let expired = store.expire().await.expect("expire");
    assert_eq!(expired, vec![PartitionKey { start_secs: T0 / SEC, important: false }]);
    assert!(store.get_trace(ordinary[0].trace_id).await.expect("get").is_none());
    assert_eq!(store.get_trace(important[0].trace_id).await.expect("get").expect("kept"), important);
    assert_eq!(store.find_traces(query("frontend")).await.expect("find").traces.len(), 2);
    // 300 s after the important partition's end, and 60 s after the later one's write: everything is gone.
    now.store(T0 + 310 * SEC, Ordering::SeqCst);
    assert_eq!(store.expire().await.expect("expire").len(), 2);
    assert!(store.partitions().is_empty());
    assert!(store.find_traces(query("frontend")).await.expect("find").traces.is_empty());
    drop(store);

    // Deleted partitions stay deleted across a restart.
    let reopened = EmbeddedStore::open_with_clock(&cfg, Arc::new(move || T0 + 400 * SEC)).expect("reopen");
    assert!(reopened.partitions().is_empty());
}

#[tokio::test]
async fn old_data_lives_one_retention_period_from_its_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig { retention: Duration::from_secs(60), ..EmbeddedConfig::new(dir.path()) };
    let now = Arc::new(AtomicU64::new(T0 + 86_400 * SEC));
    let clock_now = now.clone();
    let store = EmbeddedStore::open_with_clock(&cfg, Arc::new(move || clock_now.load(Ordering::SeqCst))).expect("open");
    let dicts = Dictionaries::new(store.partition_secs());
    // A replayed trace from a day ago is not deleted on arrival (ScyllaDB's TTL counts from the write as well).
    store.write(batch(&dicts, &[trace(1, T0, false)]).into()).await.expect("write");
    assert!(store.expire().await.expect("expire").is_empty());
    now.store(T0 + 86_400 * SEC + 61 * SEC, Ordering::SeqCst);
    assert_eq!(store.expire().await.expect("expire").len(), 1);
}

#[tokio::test]
async fn a_corrupt_block_fails_its_trace_only() {
    let (_dir, store, dicts) = fresh_store();
    let good = trace(1, T0, false);
    let bad = trace(2, T0 + SEC, false);
    // Two batches, two packs: the second one is damaged, as a disk fault would.
    store.write(batch(&dicts, std::slice::from_ref(&good)).into()).await.expect("write");
    store.write(batch(&dicts, std::slice::from_ref(&bad)).into()).await.expect("write");
    {
        let (_, p) = store.inner.snapshot().into_iter().next().expect("partition");
        let (key, block) = p.packs.last_key_value().expect("pack").into_inner().expect("read");
        // The header (and with it the trace table) survives; the body is cut short.
        p.packs.insert(key, &block[..block.len() - 4]).expect("corrupt");
    }
    assert!(matches!(store.get_trace(bad[0].trace_id).await, Err(StoreError::Codec(_))));
    assert_eq!(store.get_trace(good[0].trace_id).await.expect("get").expect("found"), good);
    let found = store.find_traces(query("frontend")).await.expect("search still answers");
    assert_eq!(found.traces, vec![good]);
    assert_eq!(found.corrupt.len(), 1);
    assert_eq!(found.corrupt[0].0, bad[0].trace_id);
}

/// Bytes of fjall's journal files as `du` counts them (allocated blocks: fjall preallocates journals sparsely).
fn journal_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.join("fjall"))
        .expect("read data dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .map(|e| e.metadata().map_or(0, |m| m.blocks() * 512))
        .sum()
}

#[tokio::test]
async fn a_flushed_close_empties_the_journal_and_an_unflushed_one_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig::new(dir.path());
    let store = EmbeddedStore::open(&cfg).expect("open");
    let dicts = Dictionaries::new(store.partition_secs());
    let first = trace(1, T0, false);
    store.write(batch(&dicts, std::slice::from_ref(&first)).into()).await.expect("write");
    assert!(journal_bytes(dir.path()) > 0, "a running store journals its writes");
    store.flush().await.expect("flush");
    drop(store);
    assert_eq!(journal_bytes(dir.path()), 0, "a flushed, closed store keeps no journal");

    let store = EmbeddedStore::open(&cfg).expect("reopen without a journal");
    assert_eq!(store.get_trace(first[0].trace_id).await.expect("get"), Some(first.clone()));
    // A write after the flush (or no flush at all: a crash) keeps the journal, and recovery replays it.
    store.flush().await.expect("flush");
    let second = trace(2, T0 + SEC, false);
    store.write(batch(&Dictionaries::new(3600), std::slice::from_ref(&second)).into()).await.expect("write");
    drop(store);
    assert!(journal_bytes(dir.path()) > 0, "unflushed writes keep their journal");
    let store = EmbeddedStore::open(&cfg).expect("reopen with a journal");
    assert_eq!(store.get_trace(first[0].trace_id).await.expect("get"), Some(first));
    assert_eq!(store.get_trace(second[0].trace_id).await.expect("get"), Some(second.clone()));
    // And once more through an emptied journal: the later write must not hide behind older sequence numbers.
    store.flush().await.expect("flush");
    drop(store);
    let store = EmbeddedStore::open(&cfg).expect("reopen");
    let third = trace(3, T0 + 2 * SEC, false);
    store.write(batch(&Dictionaries::new(3600), std::slice::from_ref(&third)).into()).await.expect("write");
    drop(store);
    let store = EmbeddedStore::open(&cfg).expect("reopen");
    for t in [&second, &third] {
        assert_eq!(store.get_trace(t[0].trace_id).await.expect("get").as_ref(), Some(t));
    }
}

#[tokio::test]
async fn partitions_of_the_older_layout_are_rewritten_into_packs_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = EmbeddedConfig::new(dir.path());
    let store = EmbeddedStore::open(&cfg).expect("open");
    let (old, older) = (trace(3, T0, false), trace(4, T0 + SEC, true));
    let mut late = trace(3, T0 + 2 * SEC, false);
    late[0].span_id = SpanId([2; 8]);
    // Stored as earlier versions did, one block per chunk in `traces`: under `seq` keys with a marker listing them,
    // and (older still) under `trace_id ‖ seq` keys with an empty marker; index rows in `index`.
    for (t, important) in [(&old, false), (&older, true)] {
        let key = PartitionKey { start_secs: store.inner.partition_start(T0), important };
        let ks = |table: &str| {
            store.inner.db.keyspace(&format!("{}_{table}", key.prefix()), KeyspaceCreateOptions::default).expect("ks")
        };
        let (traces, index) = (ks("traces"), ks("index"));
        // The small tables had keyspaces of their own: an operation and a dependency counter.
        let mut op = service_prefix(&format!("svc-{important}"));
        op.extend_from_slice(&SpanKind::SERVER.0.to_be_bytes());
        op.extend_from_slice(b"GET /old");
        ks("ops").insert(op, b"").expect("op");
        ks("services").insert(format!("svc-{important}"), b"").expect("service");
        let mut dep = (T0 / SEC).to_be_bytes().to_vec();
        len16(&mut dep, &format!("svc-{important}"));
        dep.extend_from_slice(b"db");
        let mut counts = 5u64.to_le_bytes().to_vec();
        counts.extend_from_slice(&1u64.to_le_bytes());
        ks("deps").insert(dep, counts).expect("dep");
        let c = prepare_chunk(t, Vec::new(), None, important, StoreLayout::PerTrace).expect("prepare");
        let mut legacy_key = t[0].trace_id.0.to_vec();
        legacy_key.extend_from_slice(&7u64.to_be_bytes());
        traces.insert(&legacy_key, c.block.as_slice()).expect("block");
        traces.insert(t[0].trace_id.0, b"").expect("marker");
        index.insert(b"\0\x08frontend", b"").expect("index row");
        if !important {
            let c = prepare_chunk(&late, Vec::new(), None, false, StoreLayout::PerTrace).expect("prepare");
            traces.insert(9u64.to_be_bytes(), c.block.as_slice()).expect("block");
            let mut marker = vec![1];
            marker.extend_from_slice(&9u64.to_be_bytes());
            traces.insert(t[0].trace_id.0, marker).expect("marker");
        }
    }
    drop(store);

    let store = EmbeddedStore::open(&cfg).expect("reopen and rewrite");
    let names: Vec<String> = store.inner.db.list_keyspace_names().iter().map(|n| n.to_string()).collect();
    assert!(
        names.iter().all(|n| n == "meta" || KEYSPACES.iter().any(|k| n.ends_with(&format!("_{k}")))),
        "old keyspaces deleted: {names:?}"
    );
    let services = store.services().await.expect("services");
    assert!(services.contains(&"svc-true".to_string()) && services.contains(&"svc-false".to_string()));
    let ops = store.operations("svc-false", None).await.expect("operations");
    assert_eq!(ops.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), vec!["GET /old"]);
    let deps = store.dependencies(T0 + 3_600 * SEC, 7_200 * SEC).await.expect("dependencies");
    for important in [false, true] {
        let link = deps.iter().find(|d| d.parent == format!("svc-{important}")).expect("the moved counter");
        assert_eq!((link.child.as_str(), link.call_count), ("db", 5));
    }
    let both = merge_chunks(vec![old.clone(), late.clone()]);
    assert_eq!(both.len(), 2);
    assert_eq!(store.get_trace(old[0].trace_id).await.expect("get").expect("found"), both);
    assert_eq!(store.get_trace(older[0].trace_id).await.expect("get").expect("found"), older);
    let found = store.find_traces(query("frontend")).await.expect("find").traces;
    // Newest entry first: the late chunk's (T0 + 2 s), then the older trace's (T0 + 1 s).
    assert_eq!(found, vec![both.clone(), older.clone()]);
    assert_eq!(store.partitions().len(), 2);
    drop(store);
    // Nothing is left to rewrite at the next open, and nothing is doubled.
    let store = EmbeddedStore::open(&cfg).expect("reopen");
    assert_eq!(store.get_trace(old[0].trace_id).await.expect("get").expect("found"), both);
    assert_eq!(store.find_traces(query("frontend")).await.expect("find").traces.len(), 2);
}

#[tokio::test]
async fn trace_by_id_finds_each_trace_of_many_packs_and_no_other() {
    let (_dir, store, dicts) = fresh_store();
    let traces: Vec<Vec<Span>> = (0..200u8).map(|i| trace(i, T0 + u64::from(i) * 1_000_000, false)).collect();
    for part in traces.chunks(37) {
        store.write(batch(&dicts, part).into()).await.expect("write");
    }
    for t in &traces {
        assert_eq!(&store.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
    }
    assert!(store.get_trace(TraceId([0xee; 16])).await.expect("get").is_none());
    // The search walks the packs' index pages newest first.
    let found = store.find_traces(TraceQuery { limit: 50, ..query("frontend") }).await.expect("find").traces;
    let want: Vec<TraceId> = traces.iter().rev().take(50).map(|t| t[0].trace_id).collect();
    assert_eq!(found.iter().map(|t| t[0].trace_id).collect::<Vec<_>>(), want);
}

#[tokio::test]
async fn a_batch_of_many_spans_becomes_packs_of_at_most_max_pack_spans() {
    let (_dir, store, dicts) = fresh_store();
    // Traces of 700 spans each, out of start order, and one trace larger than a pack on its own.
    let wide = |id: u8, start: u64, n: usize| -> Vec<Span> {
        (0..n)
            .map(|i| {
                let mut s = trace(id, start + i as u64, false).swap_remove(0);
                s.span_id = SpanId((i as u64 + 1).to_be_bytes());
                s.parent_span_id = if i == 0 { Vec::new() } else { 1u64.to_be_bytes().to_vec() };
                s
            })
            .collect()
    };
    // Written oldest first; packs list them newest first.
    let mut traces: Vec<Vec<Span>> = (0..20u8).map(|i| wide(i, T0 + u64::from(i) * SEC, 700)).collect();
    traces.push(wide(99, T0 + 30 * SEC, crate::MAX_PACK_SPANS + 1));
    let wb = batch(&dicts, &traces);
    let spans_of = |pack: &crate::PreparedPack| pack.chunks.iter().map(|&c| wb.chunks[c].span_count).sum::<usize>();
    assert!(wb.packs.len() > 20 * 700 / crate::MAX_PACK_SPANS, "{} packs", wb.packs.len());
    for pack in &wb.packs {
        assert!(spans_of(pack) <= crate::MAX_PACK_SPANS || pack.chunks.len() == 1, "{} spans", spans_of(pack));
        let starts: Vec<u64> = pack.chunks.iter().map(|&c| wb.chunks[c].start_unix_nanos).collect();
        assert!(starts.is_sorted_by(|a, b| a >= b), "a pack's traces are newest first: {starts:?}");
    }
    assert_eq!(wb.packs.iter().map(|p| p.chunks.len()).sum::<usize>(), traces.len());
    store.write(wb.into()).await.expect("write");
    for t in &traces {
        let got = store.get_trace(t[0].trace_id).await.expect("get").expect("found");
        assert_eq!(got.len(), t.len());
    }
}

#[tokio::test]
async fn a_query_decodes_a_pack_once_and_stays_within_its_cache_bound() {
    let (_dir, store, dicts) = fresh_store();
    let traces: Vec<Vec<Span>> = (0..40u8).map(|i| trace(i, T0 + u64::from(i) * 1_000_000, false)).collect();
    store.write(batch(&dicts, &traces).into()).await.expect("write");
    let (key, p) = store.inner.snapshot().into_iter().next().expect("partition");
    let seq = store.inner.filters(key, &p).expect("filters").packs[0].0;
    let spans: usize = traces.iter().map(Vec::len).sum();
    // Room for the whole pack decoded: the pack is opened once, and each trace asked is built once, alone.
    let mut packs = PackCache::new(usize::MAX);
    let ids = Inner::pack_ids(&mut packs, key, &p, seq).expect("ids");
    for (place, id) in ids.iter().enumerate() {
        let want = traces.iter().find(|t| t[0].trace_id == *id).expect("a written trace");
        assert_eq!(store.inner.pack_trace(&mut packs, key, &p, seq, place).expect("trace").as_ref(), want);
        let pack = &packs.packs[&(key, seq)];
        assert_eq!(pack.traces.len(), place + 1, "only the traces asked for are built");
        assert!(pack.open.is_some() && pack.block.is_none(), "opened once, its block released");
        let again = store.inner.pack_trace(&mut packs, key, &p, seq, place).expect("trace again");
        assert!(Arc::ptr_eq(&again, &packs.packs[&(key, seq)].traces[&place]), "a trace asked again is not rebuilt");
    }
    assert_eq!(packs.bytes, packs.packs.values().map(CachedPack::bytes).sum::<usize>());
    let whole = packs.bytes;
    assert!(whole >= spans * DECODED_SPAN_BYTES);
    // A bound below one decoded pack: every answer is still right, what is held is what is counted, and other
    // packs are dropped to make room for the one in use.
    let mut packs = PackCache::new(whole / 2);
    for (place, id) in ids.iter().enumerate().rev() {
        let want = traces.iter().find(|t| t[0].trace_id == *id).expect("a written trace");
        assert_eq!(store.inner.pack_trace(&mut packs, key, &p, seq, place).expect("trace").as_ref(), want);
        assert_eq!(packs.bytes, packs.packs.values().map(CachedPack::bytes).sum::<usize>());
    }
    let mut packs = PackCache::new(1);
    Inner::pack_ids(&mut packs, key, &p, seq).expect("ids");
    store.write(batch(&dicts, &[trace(99, T0, false)]).into()).await.expect("write");
    let other = store.inner.filters(key, &p).expect("filters").packs[1].0;
    Inner::pack_ids(&mut packs, key, &p, other).expect("ids");
    assert_eq!(packs.packs.keys().collect::<Vec<_>>(), vec![&(key, other)], "over the bound, older packs go");
    assert!(Inner::pack_ids(&mut packs, key, &p, seq + 1000).is_err(), "a missing pack is an error");
}

#[tokio::test]
async fn process_tags_are_searched_through_the_process_table() {
    let (_dir, store, dicts) = fresh_store();
    // Pods of one deployment: resources with many attributes, which the entries reference.
    let pod = |name: &str| {
        let mut r = (*service_resource("frontend")).clone();
        r.attributes.push(KeyValue::new("k8s.pod.name", Value::Str(name.into())));
        r.attributes.extend((0..10).map(|i| KeyValue::new(format!("label.{i}"), Value::Str("x".into()))));
        Arc::new(r)
    };
    let (a, b) = (pod("frontend-a"), pod("frontend-b"));
    let traces: Vec<Vec<Span>> = (0..6u8)
        .map(|i| {
            let mut t = trace(10 + i, T0 + u64::from(i) * SEC, false);
            t[0].resource = if i % 2 == 0 { a.clone() } else { b.clone() };
            t
        })
        .collect();
    // Two batches: the second references processes whose rows the first wrote.
    store.write(batch(&dicts, &traces[..3]).into()).await.expect("write");
    store.write(batch(&dicts, &traces[3..]).into()).await.expect("write");
    let (_, p) = store.inner.snapshot().into_iter().next().expect("partition");
    assert_eq!(p.rows(Table::Processes, &[]).count(), 2, "one row per process");
    let search = |pod: &str| {
        let q = TraceQuery { tags: vec![("k8s.pod.name".into(), pod.into())], ..query("frontend") };
        let store = store.clone();
        async move {
            let mut ids: Vec<u8> =
                store.find_traces(q).await.expect("find").traces.iter().map(|t| t[0].trace_id.0[0]).collect();
            ids.sort_unstable();
            ids
        }
    };
    let want = |even: bool| -> Vec<u8> { (0..6u8).filter(|i| (i % 2 == 0) == even).map(|i| 10 + i).collect() };
    assert_eq!(search("frontend-a").await, want(true));
    assert_eq!(search("frontend-b").await, want(false));
    assert!(search("frontend-c").await.is_empty());
}

#[test]
fn a_pack_a_group_covers_is_tested_only_for_the_traces_its_group_may_hold() {
    // Pack filters that hold everything, so only the group filter can rule a pack out.
    let everything = index::TraceFilter::from_bytes(vec![0xff; 64]);
    let ids: Vec<TraceId> = (1..=3u8).map(|i| TraceId([i; 16])).collect();
    let group = index::TraceFilter::build(std::iter::once(ids[0]));
    let covered = 2..=3u64;
    let f = PartitionFilters {
        packs: (1..=5).map(|seq| (seq, everything.clone())).collect(),
        groups: vec![(*covered.start(), *covered.end(), group)],
    };
    let probes: Vec<index::TraceProbe> = ids.iter().map(|&id| index::TraceProbe::new(id)).collect();
    let want: Vec<(usize, u64)> = (1..=5u64)
        .flat_map(|seq| (0..ids.len()).map(move |k| (k, seq)))
        .filter(|&(k, seq)| !covered.contains(&seq) || ids[k] == ids[0])
        .collect();
    assert_eq!(f.candidates(&probes, &[true, true, true]), want);
    let without_first = f.candidates(&probes, &[false, true, true]);
    assert_eq!(without_first, want.iter().copied().filter(|&(k, _)| k != 0).collect::<Vec<_>>());
}

#[tokio::test]
async fn group_filters_seal_every_group_packs_and_every_trace_is_still_found() {
    let (dir, store, dicts) = fresh_store();
    let id = |n: u32| {
        let mut b = [7u8; 16];
        b[..4].copy_from_slice(&n.to_be_bytes());
        TraceId(b)
    };
    // One pack per write: a sealed group and three packs of the next, still open, group.
    let mut written = Vec::new();
    for w in 0..GROUP_PACKS as u32 + 3 {
        let traces: Vec<Vec<Span>> = (0..3)
            .map(|i| {
                let n = w * 3 + i;
                let mut t = trace(1, T0 + u64::from(n) * 1_000_000, false);
                t.iter_mut().for_each(|s| s.trace_id = id(n));
                t
            })
            .collect();
        store.write(batch(&dicts, &traces).into()).await.expect("write");
        written.extend(traces);
    }
    let check = |store: EmbeddedStore, written: Vec<Vec<Span>>| async move {
        let (key, p) = store.inner.snapshot().into_iter().next().expect("partition");
        let f = store.inner.filters(key, &p).expect("filters");
        assert_eq!(f.packs.len(), GROUP_PACKS + 3);
        assert_eq!(f.groups.len(), 1, "one sealed group");
        assert_eq!((f.groups[0].0, f.groups[0].1), (f.packs[0].0, f.packs[GROUP_PACKS - 1].0));
        for t in &written {
            assert_eq!(&store.get_trace(t[0].trace_id).await.expect("get").expect("found"), t);
        }
        // Traces never written: the group filter rules out its 64 packs for nearly all of them, so far fewer pack
        // filters are even asked (and say yes in vain) than without it.
        let absent: Vec<index::TraceProbe> = (1_000_000..1_002_000).map(|n| index::TraceProbe::new(id(n))).collect();
        let grouped = f.candidates(&absent, &vec![true; absent.len()]).len();
        let ungrouped = PartitionFilters { packs: f.packs.clone(), groups: Vec::new() };
        let every = ungrouped.candidates(&absent, &vec![true; absent.len()]).len();
        assert!(grouped * 4 < every, "false positives with groups {grouped}, without {every}");
    };
    check(store, written.clone()).await;
    // Reopened: the group filter is read from its row; the open group's packs keep their own filters.
    check(EmbeddedStore::open(&EmbeddedConfig::new(dir.path())).expect("reopen"), written).await;
}

#[tokio::test]
async fn summaries_read_from_row_outlines_equal_the_summaries_of_the_full_traces() {
    let (_dir, store, dicts) = fresh_store();
    // Traces of three services whose spans arrive in three batches (so each trace is chunked across packs), with
    // errors, roots whose parent is absent, zero or malformed, and one span written twice.
    let services = ["frontend", "cart", "db"];
    let traces: Vec<Vec<Span>> = (0..30u8)
        .map(|t| {
            let start = T0 + u64::from(t) * SEC;
            (0..6u8)
                .map(|i| {
                    let service = services[usize::from(i) % services.len()];
                    let mut s = Span::minimal(
                        TraceId([t + 1; 16]),
                        SpanId([i + 1; 8]),
                        &format!("op-{i}"),
                        service_resource(service),
                    );
                    // The last span starts first (skewed), so a root is never simply the earliest span.
                    s.start_unix_nanos = if i == 5 { start - 500 } else { start + u64::from(i) * 1_000 };
                    s.end_unix_nanos = s.start_unix_nanos + u64::from(t % 7 + 1) * 1_000_000;
                    s.parent_span_id = match (i, t % 3) {
                        (0, 0) => Vec::new(),
                        (0, 1) => vec![0; 8],
                        (0, _) => vec![9; 4],
                        _ => vec![i; 8],
                    };
                    if (t + i) % 5 == 0 {
                        s.status_code = StatusCode::ERROR;
                    }
                    s
                })
                .collect()
        })
        .collect();
    for part in 0..3 {
        let chunks: Vec<Vec<Span>> = traces.iter().map(|t| t.iter().skip(part).step_by(3).cloned().collect()).collect();
        store.write(batch(&dicts, &chunks).into()).await.expect("write");
    }
    store.write(batch(&dicts, &[vec![traces[4][1].clone()]]).into()).await.expect("write a duplicate");
    let packs: usize =
        store.inner.snapshot().into_iter().map(|(k, p)| store.inner.filters(k, &p).expect("filters").packs.len()).sum();
    assert!(packs >= 4, "each trace is chunked across packs: {packs} packs");
    for service in services {
        let full = store.find_traces(query(service)).await.expect("find").traces;
        assert_eq!(full.len(), traces.len(), "{service}");
        let want: Vec<TraceSummary> = full.iter().filter_map(TraceSummary::of).collect();
        let got = store.find_trace_summaries(query(service)).await.expect("summaries").summaries;
        assert_eq!(got, want, "{service}");
        // Computed from the input: every trace whole, its errors counted once.
        for s in &got {
            let spans = &traces[usize::from(s.trace_id.0[0]) - 1];
            assert_eq!(s.span_count, spans.len() as u64);
            assert_eq!(s.error_span_count, spans.iter().filter(|x| x.is_error()).count() as u64);
        }
    }
}

#[test]
fn merging_chunks_keeps_the_first_of_each_exact_duplicate_in_span_order() {
    // Spans sharing starts and span IDs across three chunks: exact duplicates, and near ones (another kind or end)
    // that must stay.
    let t = TraceId([7; 16]);
    let span = |id: u8, start: u64, kind: i32, end: u64, name: &str| {
        let mut s = Span::minimal(t, SpanId([id; 8]), name, service_resource("svc"));
        (s.start_unix_nanos, s.end_unix_nanos, s.kind) = (start, end, SpanKind(kind));
        s
    };
    let chunks = vec![
        vec![span(3, 30, 1, 40, "a"), span(1, 10, 1, 20, "b"), span(2, 10, 1, 20, "c")],
        vec![span(1, 10, 1, 20, "dup of b"), span(1, 10, 2, 20, "other kind"), span(3, 30, 1, 41, "other end")],
        vec![span(2, 10, 1, 20, "dup of c"), span(0, 50, 1, 60, "d"), span(3, 30, 1, 40, "dup of a")],
    ];
    // The reference: first occurrences by exact key in chunk order, then a stable sort by start and span ID.
    let mut seen = std::collections::HashSet::new();
    let mut want: Vec<Span> = chunks.concat().into_iter().filter(|s| seen.insert(s.dedup_key())).collect();
    want.sort_by_key(|s| (s.start_unix_nanos, s.span_id));
    let written = chunks.iter().map(Vec::len).sum::<usize>();
    assert!(want.len() < written, "the input holds exact duplicates");
    let refs: Vec<Span> = merge_chunk_refs(chunks.iter().map(Vec::as_slice)).into_iter().cloned().collect();
    let merged = merge_chunks(chunks);
    assert_eq!(merged, want);
    assert_eq!(refs, want);
}
