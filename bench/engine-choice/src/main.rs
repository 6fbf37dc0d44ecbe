//! redb vs fjall on Skein's storage pattern, with real data.
//!
//! Workload: every trace of the Nezha CSVs (../shared/trace-data), encoded as Skein trace blocks with their index
//! entries by `skein_storage::prepare_chunk`, repeated `--copies` times with distinct trace IDs.
//! Writes go in batches of 512 chunks per durable (fsync) transaction, as the writer does; then 2,000 random
//! trace-by-ID prefix reads and a full index scan of the busiest service. Prints a table and writes JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::TableDefinition;
use skein_datasets::formats;
use skein_model::otlp::{Limits, convert};
use skein_model::{Span, TraceId};
use skein_storage::{PreparedChunk, prepare_chunk};

const TRACES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("traces");
const INDEX: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("trace_index");
const BATCH: usize = 512;

struct Row {
    trace_key: Vec<u8>,
    block: Vec<u8>,
    index: Vec<(Vec<u8>, Vec<u8>)>,
}

fn rows(chunks: &[PreparedChunk], copies: u32) -> Vec<Row> {
    let mut out = Vec::new();
    let mut seq = 0u64;
    for copy in 0..copies {
        for c in chunks {
            let mut tid = c.trace_id.0;
            tid[0] ^= copy as u8;
            tid[1] ^= (copy >> 8) as u8;
            seq += 1;
            let mut trace_key = tid.to_vec();
            trace_key.extend_from_slice(&seq.to_be_bytes());
            let index = c
                .index
                .iter()
                .map(|e| {
                    let mut k = (e.service.len() as u16).to_be_bytes().to_vec();
                    k.extend_from_slice(e.service.as_bytes());
                    k.extend_from_slice(&(!e.start_unix_nanos).to_be_bytes());
                    k.extend_from_slice(&trace_key);
                    (k, e.encode_value())
                })
                .collect();
            out.push(Row { trace_key, block: c.block.clone(), index });
        }
    }
    out
}

/// Bytes allocated on disk (blocks, not apparent size: fjall preallocates its journal sparsely).
fn dir_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().map(|m| (m.is_dir(), m.blocks() * 512)).unwrap_or((false, 0));
        total += if m.0 { dir_bytes(&e.path()) } else { m.1 };
    }
    total
}

struct Result {
    engine: &'static str,
    write_s: f64,
    bytes: u64,
    read_us_avg: f64,
    read_us_p99: f64,
    scan_ms: f64,
    scanned: usize,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p) as usize]
}

fn probe_keys(rows: &[Row]) -> Vec<Vec<u8>> {
    (0..2000).map(|i| rows[(i * 7919) % rows.len()].trace_key[..16].to_vec()).collect()
}

fn bench_redb(rows: &[Row], dir: &Path, busiest: &[u8]) -> Result {
    let path = dir.join("bench.redb");
    let db = redb::Database::create(&path).expect("redb create");
    let t = Instant::now();
    for batch in rows.chunks(BATCH) {
        let mut txn = db.begin_write().expect("txn");
        txn.set_durability(redb::Durability::Immediate);
        {
            let mut traces = txn.open_table(TRACES).expect("traces");
            let mut index = txn.open_table(INDEX).expect("index");
            for r in batch {
                traces.insert(r.trace_key.as_slice(), r.block.as_slice()).expect("insert");
                for (k, v) in &r.index {
                    index.insert(k.as_slice(), v.as_slice()).expect("insert");
                }
            }
        }
        txn.commit().expect("commit");
    }
    let write_s = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    let txn = db.begin_read().expect("read");
    let traces = txn.open_table(TRACES).expect("traces");
    for key in probe_keys(rows) {
        let t = Instant::now();
        let mut hi = key.clone();
        hi.extend_from_slice(&[0xff; 8]);
        let n: usize = traces.range(key.as_slice()..=hi.as_slice()).expect("range").map(|r| r.expect("row").1.value().len()).sum();
        assert!(n > 0);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let index = txn.open_table(INDEX).expect("index");
    let t = Instant::now();
    let mut hi = busiest.to_vec();
    hi.extend_from_slice(&[0xff; 40]);
    let scanned = index.range(busiest..hi.as_slice()).expect("range").count();
    let scan_ms = t.elapsed().as_secs_f64() * 1e3;
    drop((traces, index, txn, db));
    let avg = lat.iter().sum::<f64>() / lat.len() as f64;
    Result { engine: "redb 2.6", write_s, bytes: dir_bytes(dir), read_us_avg: avg, read_us_p99: percentile(&mut lat, 0.99), scan_ms, scanned }
}

fn bench_fjall(rows: &[Row], dir: &Path, busiest: &[u8]) -> Result {
    let db = fjall::Database::builder(dir.join("fjall")).open().expect("fjall open");
    let traces = db.keyspace("traces", fjall::KeyspaceCreateOptions::default).expect("keyspace");
    let index = db.keyspace("trace_index", fjall::KeyspaceCreateOptions::default).expect("keyspace");
    let t = Instant::now();
    for batch in rows.chunks(BATCH) {
        let mut b = db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for r in batch {
            b.insert(&traces, r.trace_key.as_slice(), r.block.as_slice());
            for (k, v) in &r.index {
                b.insert(&index, k.as_slice(), v.as_slice());
            }
        }
        b.commit().expect("commit");
    }
    // Move everything from the journal into (lz4-compressed) tables, as a shutdown or a full memtable does, so the
    // size below is what fjall keeps long-term; the flush time counts as write time.
    traces.rotate_memtable_and_wait().expect("flush");
    index.rotate_memtable_and_wait().expect("flush");
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
    let write_s = t.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for key in probe_keys(rows) {
        let t = Instant::now();
        let n: usize = traces.prefix(key.as_slice()).map(|g| g.into_inner().map(|(_, v)| v.len()).unwrap_or(0)).sum();
        assert!(n > 0);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    let scanned = index.prefix(busiest).count();
    let scan_ms = t.elapsed().as_secs_f64() * 1e3;
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
    let bytes = dir_bytes(dir);
    let avg = lat.iter().sum::<f64>() / lat.len() as f64;
    Result { engine: "fjall 3.1", write_s, bytes, read_us_avg: avg, read_us_p99: percentile(&mut lat, 0.99), scan_ms, scanned }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let copies: u32 = arg("--copies").and_then(|c| c.parse().ok()).unwrap_or(4);
    let out = arg("--out").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("engine-choice.json"));
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/trace-data/nezha-ob-tt-csv");
    let mut files = Vec::new();
    let mut stack = vec![data];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("nezha dir").flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else if p.extension().is_some_and(|x| x == "csv") { files.push(p) }
        }
    }
    let mut by_trace: BTreeMap<TraceId, Vec<Span>> = BTreeMap::new();
    for f in &files {
        for s in convert(formats::read_file(f, None).expect("read"), &Limits::default()).spans {
            by_trace.entry(s.trace_id).or_default().push(s);
        }
    }
    let chunks: Vec<PreparedChunk> =
        by_trace.values().map(|spans| prepare_chunk(spans, &HashMap::new()).expect("prepare")).collect();
    let spans_per_copy: usize = chunks.iter().map(|c| c.span_count).sum();
    let rows = rows(&chunks, copies);
    let busiest = {
        let mut counts: HashMap<&[u8], usize> = HashMap::new();
        for r in &rows {
            for (k, _) in &r.index {
                let n = 2 + u16::from_be_bytes([k[0], k[1]]) as usize;
                *counts.entry(&k[..n]).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k.to_vec()).expect("rows")
    };
    let spans = spans_per_copy * copies as usize;
    println!("workload: {} trace chunks, {spans} spans, {} index rows", rows.len(), rows.iter().map(|r| r.index.len()).sum::<usize>());
    let mut results = Vec::new();
    for engine in ["redb", "fjall"] {
        let dir = tempfile::tempdir_in(".").expect("tempdir");
        let r = if engine == "redb" { bench_redb(&rows, dir.path(), &busiest) } else { bench_fjall(&rows, dir.path(), &busiest) };
        results.push(r);
    }
    println!("{:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}", "engine", "spans/s", "bytes/span", "get µs avg", "get µs p99", "scan ms", "rows scanned");
    let mut json = Vec::new();
    for r in &results {
        let sps = spans as f64 / r.write_s;
        let bps = r.bytes as f64 / spans as f64;
        println!("{:<10} {:>12.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1} {:>14}", r.engine, sps, bps, r.read_us_avg, r.read_us_p99, r.scan_ms, r.scanned);
        json.push(serde_json::json!({"engine": r.engine, "write_spans_per_s": sps, "disk_bytes": r.bytes,
            "bytes_per_span": bps, "get_trace_us_avg": r.read_us_avg, "get_trace_us_p99": r.read_us_p99,
            "index_scan_ms": r.scan_ms, "index_rows_scanned": r.scanned}));
    }
    let report = serde_json::json!({"spans": spans, "chunks": rows.len(), "batch_chunks": BATCH, "results": json});
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")).expect("write report");
    println!("report: {}", out.display());
}
