//! The embedded backend: time-partitioned trace storage on [fjall](https://docs.rs/fjall), an LSM-tree engine,
//! for one machine.
//!
//! Layout: one fjall database in `<data_dir>/fjall`; each time partition of `partition_secs` (default one hour)
//! owns five keyspaces named `p<partition_start_secs>_<table>`. A chunk lives in the partition of its earliest
//! span start. Retention (issue #3) deletes a partition's keyspaces whole. Every [`TraceStore::write`] is one
//! atomic fjall write batch across all touched keyspaces, fsync'd (`PersistMode::SyncAll`) before it returns, so
//! a crash loses no acknowledged write. fjall was chosen over redb by `bench/engine-choice`: 4x the write
//! throughput with fsync'd batches and half the disk bytes on real trace blocks.
//!
//! Keyspaces of a partition (keys are byte strings; `len16` is a big-endian u16 length prefix):
//! - `traces`: `trace_id[16] ‖ chunk_seq u64be` → trace block
//! - `index`: `len16 service ‖ !start_nanos u64be ‖ trace_id[16] ‖ chunk_seq u64be` → [`IndexEntry`] value
//!   (start inverted so a forward scan is newest first)
//! - `services`: `service` → empty; `ops`: `len16 service ‖ kind i32be ‖ name` → empty
//! - `deps`: `bucket_start_secs u64be ‖ len16 parent ‖ parent ‖ child` → `calls u64le ‖ errors u64le`

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{
    DependencyLink, IndexEntry, Operation, StoreError, StoreResult, TraceQuery, TraceStore, WriteBatch, merge_chunks,
    sum_edges,
};
use crate::codec;
use crate::dependencies::DependencyEdge;
use crate::model::{Span, SpanKind, TraceId};

/// Default partition length, seconds.
pub const DEFAULT_PARTITION_SECS: u64 = 3600;

const TABLES: [&str; 5] = ["traces", "index", "services", "ops", "deps"];

/// Embedded backend settings.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Data directory; created if missing.
    pub data_dir: PathBuf,
    /// Partition length, seconds.
    pub partition_secs: u64,
}

impl EmbeddedConfig {
    /// Settings with the default partition length.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), partition_secs: DEFAULT_PARTITION_SECS }
    }
}

fn engine(e: fjall::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// The keyspaces of one time partition.
#[derive(Clone)]
struct Partition {
    traces: Keyspace,
    index: Keyspace,
    services: Keyspace,
    ops: Keyspace,
    deps: Keyspace,
}

struct Inner {
    db: Database,
    partition_secs: u64,
    /// Open partitions by start second, ascending.
    partitions: RwLock<BTreeMap<u64, Partition>>,
    /// Serializes writers: dependency counters are read-modify-write.
    write_lock: Mutex<()>,
    chunk_seq: AtomicU64,
}

/// The embedded [`TraceStore`]. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store and every existing partition.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created; [`StoreError::Engine`] when the database cannot be
    /// opened (for example, it is locked by another process) or recovered.
    pub fn open(config: &EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = Database::builder(config.data_dir.join("fjall")).open().map_err(engine)?;
        let mut partitions = BTreeMap::new();
        for name in db.list_keyspace_names() {
            let name: &str = name.as_ref();
            let Some(start) = name.strip_prefix('p').and_then(|n| n.strip_suffix("_traces")?.parse().ok()) else {
                continue;
            };
            partitions.insert(start, open_partition(&db, start)?);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                partition_secs: config.partition_secs.max(1),
                partitions: RwLock::new(partitions),
                write_lock: Mutex::new(()),
                chunk_seq: AtomicU64::new(now),
            }),
        })
    }

    /// Flushes every memtable into on-disk tables and syncs, so the journal can be dropped and a restart has
    /// nothing to replay. Called on graceful shutdown; writes are already durable without it.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when a flush fails.
    pub async fn flush(&self) -> StoreResult<()> {
        self.blocking(|inner| {
            let _writer = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            for (_, p) in inner.snapshot() {
                for ks in [&p.traces, &p.index, &p.services, &p.ops, &p.deps] {
                    ks.rotate_memtable_and_wait().map_err(engine)?;
                }
            }
            inner.db.persist(PersistMode::SyncAll).map_err(engine)
        })
        .await
    }

    /// Start seconds of the open time partitions, ascending.
    pub fn partitions(&self) -> Vec<u64> {
        self.inner.snapshot().into_iter().map(|(start, _)| start).collect()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn open_partition(db: &Database, start: u64) -> StoreResult<Partition> {
    let ks = |table: &str| db.keyspace(&format!("p{start}_{table}"), KeyspaceCreateOptions::default).map_err(engine);
    // Create `traces` last: its presence marks a complete partition when the store is reopened.
    let (index, services, ops, deps) = (ks(TABLES[1])?, ks(TABLES[2])?, ks(TABLES[3])?, ks(TABLES[4])?);
    Ok(Partition { traces: ks(TABLES[0])?, index, services, ops, deps })
}

fn len16(buf: &mut Vec<u8>, s: &str) {
    // Names are bounded by the attribute limits; longer ones are cut at a UTF-8 boundary for the key.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u16).to_be_bytes());
    buf.extend_from_slice(&s.as_bytes()[..end]);
}

fn service_prefix(service: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + 2);
    len16(&mut k, service);
    k
}

impl Inner {
    fn snapshot(&self) -> Vec<(u64, Partition)> {
        let guard = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        guard.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn partition_start(&self, start_unix_nanos: u64) -> u64 {
        start_unix_nanos / 1_000_000_000 / self.partition_secs * self.partition_secs
    }

    fn partition(&self, start: u64) -> StoreResult<Partition> {
        if let Some(p) = self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&start) {
            return Ok(p.clone());
        }
        let mut guard = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = guard.get(&start) {
            return Ok(p.clone());
        }
        let p = open_partition(&self.db, start)?;
        guard.insert(start, p.clone());
        Ok(p)
    }

    fn write(&self, batch: WriteBatch) -> StoreResult<()> {
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
        // Dependency counters: summed within the batch first, then added to what is stored.
        let mut deps: HashMap<(u64, Vec<u8>), (u64, u64)> = HashMap::new();
        for c in &batch.chunks {
            let start = self.partition_start(c.start_unix_nanos);
            let p = self.partition(start)?;
            let seq = self.chunk_seq.fetch_add(1, Ordering::Relaxed);
            let mut tkey = Vec::with_capacity(24);
            tkey.extend_from_slice(&c.trace_id.0);
            tkey.extend_from_slice(&seq.to_be_bytes());
            b.insert(&p.traces, tkey.as_slice(), c.block.as_slice());
            for e in &c.index {
                let mut k = service_prefix(&e.service);
                k.extend_from_slice(&(!e.start_unix_nanos).to_be_bytes());
                k.extend_from_slice(&tkey);
                b.insert(&p.index, k, e.encode_value());
            }
            for (service, kind, name) in &c.operations {
                b.insert(&p.services, service.as_bytes(), b"");
                let mut k = service_prefix(service);
                k.extend_from_slice(&kind.0.to_be_bytes());
                k.extend_from_slice(name.as_bytes());
                b.insert(&p.ops, k, b"");
            }
            for e in &c.edges {
                let mut k = e.bucket_start_secs.to_be_bytes().to_vec();
                len16(&mut k, &e.parent);
                k.extend_from_slice(e.child.as_bytes());
                let v = deps.entry((start, k)).or_default();
                v.0 += e.calls;
                v.1 += e.errors;
            }
        }
        for ((start, k), (calls, errors)) in deps {
            let p = self.partition(start)?;
            let (old_calls, old_errors) = match p.deps.get(&k).map_err(engine)? {
                Some(v) => decode_counts(&v),
                None => (0, 0),
            };
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&(old_calls + calls).to_le_bytes());
            v.extend_from_slice(&(old_errors + errors).to_le_bytes());
            b.insert(&p.deps, k, v);
        }
        b.commit().map_err(engine)
    }

    fn chunks_of(p: &Partition, trace_id: TraceId) -> StoreResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for guard in p.traces.prefix(trace_id.0) {
            let (_, v) = guard.into_inner().map_err(engine)?;
            out.push(v.to_vec());
        }
        Ok(out)
    }

    fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        let mut chunks = Vec::new();
        for (_, p) in self.snapshot() {
            for block in Self::chunks_of(&p, trace_id)? {
                chunks.push(codec::decode(&block)?);
            }
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        Ok(Some(merge_chunks(chunks)))
    }

    fn find_traces(&self, q: &TraceQuery) -> StoreResult<Vec<Vec<Span>>> {
        if q.limit == 0 || q.start_min_unix_nanos > q.start_max_unix_nanos {
            return Ok(Vec::new());
        }
        // Candidates from every partition that can hold entries in the window (an entry's start is at or after
        // its partition's start), newest first overall.
        let max_partition_start = q.start_max_unix_nanos / 1_000_000_000;
        let prefix = service_prefix(&q.service);
        let mut lo = prefix.clone();
        lo.extend_from_slice(&(!q.start_max_unix_nanos).to_be_bytes());
        let mut hi = prefix.clone();
        hi.extend_from_slice(&(!q.start_min_unix_nanos).to_be_bytes());
        hi.extend_from_slice(&[0xff; 24]);
        let mut candidates: Vec<(u64, TraceId, Vec<u8>, Partition)> = Vec::new();
        for (pstart, p) in self.snapshot().into_iter().rev() {
            if pstart > max_partition_start {
                continue;
            }
            for guard in p.index.range(lo.as_slice()..=hi.as_slice()) {
                let (k, v) = guard.into_inner().map_err(engine)?;
                let rest = &k[prefix.len()..];
                if rest.len() != 8 + 24 {
                    return Err(StoreError::Codec(codec::CodecError::Corrupt("index key length")));
                }
                let start = !u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
                let mut tid = [0u8; 16];
                tid.copy_from_slice(&rest[8..24]);
                let entry = IndexEntry::decode_value(q.service.clone(), TraceId(tid), start, &v)?;
                if entry.may_match(q) {
                    candidates.push((start, TraceId(tid), rest[8..].to_vec(), p.clone()));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let verify = q.needs_verification();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (_, trace_id, chunk_key, p) in candidates {
            if out.len() >= q.limit {
                break;
            }
            if seen.contains(&trace_id) {
                continue;
            }
            if verify {
                let Some(block) = p.traces.get(&chunk_key).map_err(engine)? else { continue };
                if !q.matches_spans(&codec::decode(&block)?) {
                    continue;
                }
            }
            seen.insert(trace_id);
            if let Some(trace) = self.get_trace(trace_id)? {
                out.push(trace);
            }
        }
        Ok(out)
    }

    fn services(&self) -> StoreResult<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for (_, p) in self.snapshot() {
            for guard in p.services.iter() {
                let k = guard.key().map_err(engine)?;
                out.insert(String::from_utf8_lossy(&k).into_owned());
            }
        }
        Ok(out.into_iter().collect())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        let prefix = service_prefix(service);
        let mut out = std::collections::BTreeSet::new();
        for (_, p) in self.snapshot() {
            for guard in p.ops.prefix(&prefix) {
                let k = guard.key().map_err(engine)?;
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else { continue };
                if rest.len() < 4 {
                    continue;
                }
                let op_kind = SpanKind(i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
                if kind.is_some_and(|want| want != op_kind) {
                    continue;
                }
                out.insert(Operation { name: String::from_utf8_lossy(&rest[4..]).into_owned(), kind: op_kind });
            }
        }
        Ok(out.into_iter().collect())
    }

    fn dependencies(&self, end_unix_nanos: u64, lookback_nanos: u64) -> StoreResult<Vec<DependencyLink>> {
        let end_secs = end_unix_nanos / 1_000_000_000;
        let start_secs = end_unix_nanos.saturating_sub(lookback_nanos) / 1_000_000_000;
        // Buckets are identified by their start; include the bucket containing the window start.
        let first_bucket = start_secs / crate::dependencies::BUCKET_SECS * crate::dependencies::BUCKET_SECS;
        let lo = first_bucket.to_be_bytes();
        let hi = (end_secs + 1).to_be_bytes();
        let mut edges = Vec::new();
        for (_, p) in self.snapshot() {
            for guard in p.deps.range(lo..hi) {
                let (k, v) = guard.into_inner().map_err(engine)?;
                if k.len() < 10 {
                    continue;
                }
                let plen = usize::from(u16::from_be_bytes([k[8], k[9]]));
                let Some(parent) = k.get(10..10 + plen) else { continue };
                let child = &k[10 + plen..];
                let (calls, errors) = decode_counts(&v);
                edges.push(DependencyEdge {
                    bucket_start_secs: u64::from_be_bytes(k[..8].try_into().unwrap_or_default()),
                    parent: String::from_utf8_lossy(parent).into_owned(),
                    child: String::from_utf8_lossy(child).into_owned(),
                    calls,
                    errors,
                });
            }
        }
        Ok(sum_edges(edges))
    }
}

fn decode_counts(v: &[u8]) -> (u64, u64) {
    let calls = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
    let errors = v.get(8..16).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
    (calls, errors)
}

#[async_trait::async_trait]
impl TraceStore for EmbeddedStore {
    async fn write(&self, batch: WriteBatch) -> StoreResult<()> {
        self.blocking(move |inner| inner.write(batch)).await
    }

    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        self.blocking(move |inner| inner.get_trace(trace_id)).await
    }

    async fn find_traces(&self, query: TraceQuery) -> StoreResult<Vec<Vec<Span>>> {
        self.blocking(move |inner| inner.find_traces(&query)).await
    }

    async fn services(&self) -> StoreResult<Vec<String>> {
        self.blocking(|inner| inner.services()).await
    }

    async fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        let service = service.to_string();
        self.blocking(move |inner| inner.operations(&service, kind)).await
    }

    async fn dependencies(&self, end_unix_nanos: u64, lookback_nanos: u64) -> StoreResult<Vec<DependencyLink>> {
        self.blocking(move |inner| inner.dependencies(end_unix_nanos, lookback_nanos)).await
    }
}

#[cfg(test)]
mod tests;
