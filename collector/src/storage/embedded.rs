//! The embedded backend: time-partitioned trace storage on [redb](https://docs.rs/redb), for one machine.
//!
//! Layout: `<data_dir>/partitions/<partition_start_secs>.redb`, one ACID redb database per time partition of
//! `partition_secs` (default one hour); a chunk lives in the partition of its earliest span start. Retention
//! (issue #3) deletes whole partition files. Every [`TraceStore::write`] is one redb write transaction per touched
//! partition, committed with fsync before returning, so a crash loses no acknowledged write.
//!
//! Tables of a partition (keys are byte strings; `len16` is a big-endian u16 length prefix):
//! - `traces`: `trace_id[16] ‖ chunk_seq u64be` → trace block
//! - `trace_index`: `len16 service ‖ !start_nanos u64be ‖ trace_id[16] ‖ chunk_seq u64be` → [`IndexEntry`] value
//!   (start inverted so a forward scan is newest first)
//! - `services`: `service` → `()`; `operations`: `len16 service ‖ kind i32be ‖ name` → `()`
//! - `dependencies`: `bucket_start_secs u64be ‖ len16 parent ‖ parent ‖ child` → `calls u64le ‖ errors u64le`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{
    DependencyLink, IndexEntry, Operation, StoreError, StoreResult, TraceQuery, TraceStore, WriteBatch, merge_chunks,
    sum_edges,
};
use crate::codec;
use crate::dependencies::DependencyEdge;
use crate::model::{Span, SpanKind, TraceId};

const TRACES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("traces");
const TRACE_INDEX: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("trace_index");
const SERVICES: TableDefinition<'_, &str, ()> = TableDefinition::new("services");
const OPERATIONS: TableDefinition<'_, &[u8], ()> = TableDefinition::new("operations");
const DEPENDENCIES: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("dependencies");

/// Default partition length, seconds.
pub const DEFAULT_PARTITION_SECS: u64 = 3600;

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

fn engine<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Engine(e.into().to_string())
}

struct Inner {
    dir: PathBuf,
    partition_secs: u64,
    /// Open partitions by start second, ascending.
    partitions: RwLock<BTreeMap<u64, Arc<Database>>>,
    chunk_seq: AtomicU64,
}

/// The embedded [`TraceStore`]. Cheap to clone; all clones share the open partitions.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store, opening every existing partition.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created or read; [`StoreError::Engine`] when a partition
    /// file cannot be opened (for example, it is locked by another process).
    pub fn open(config: &EmbeddedConfig) -> StoreResult<Self> {
        let dir = config.data_dir.join("partitions");
        std::fs::create_dir_all(&dir)?;
        let mut partitions = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(start) = partition_start_of(&path) else { continue };
            partitions.insert(start, Arc::new(open_partition(&path)?));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                partition_secs: config.partition_secs.max(1),
                partitions: RwLock::new(partitions),
                chunk_seq: AtomicU64::new(now),
            }),
        })
    }

    /// Sum of the sizes of all partition files, bytes.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be read.
    pub fn disk_bytes(&self) -> StoreResult<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.inner.dir)? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn partition_start_of(path: &Path) -> Option<u64> {
    if path.extension()? != "redb" {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn open_partition(path: &Path) -> StoreResult<Database> {
    let db = Database::create(path).map_err(engine)?;
    let txn = db.begin_write().map_err(engine)?;
    {
        txn.open_table(TRACES).map_err(engine)?;
        txn.open_table(TRACE_INDEX).map_err(engine)?;
        txn.open_table(SERVICES).map_err(engine)?;
        txn.open_table(OPERATIONS).map_err(engine)?;
        txn.open_table(DEPENDENCIES).map_err(engine)?;
    }
    txn.commit().map_err(engine)?;
    Ok(db)
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
    fn snapshot(&self) -> Vec<(u64, Arc<Database>)> {
        match self.partitions.read() {
            Ok(p) => p.iter().map(|(k, v)| (*k, v.clone())).collect(),
            Err(poisoned) => poisoned.into_inner().iter().map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    fn partition_for(&self, start_unix_nanos: u64) -> StoreResult<Arc<Database>> {
        let start = start_unix_nanos / 1_000_000_000 / self.partition_secs * self.partition_secs;
        let mut guard = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = guard.get(&start) {
            return Ok(db.clone());
        }
        let db = Arc::new(open_partition(&self.dir.join(format!("{start}.redb")))?);
        guard.insert(start, db.clone());
        Ok(db)
    }

    fn write(&self, batch: WriteBatch) -> StoreResult<()> {
        let mut by_partition: BTreeMap<u64, Vec<&super::PreparedChunk>> = BTreeMap::new();
        for c in &batch.chunks {
            let start = c.start_unix_nanos / 1_000_000_000 / self.partition_secs * self.partition_secs;
            by_partition.entry(start).or_default().push(c);
        }
        for (_, chunks) in by_partition {
            let db = self.partition_for(chunks[0].start_unix_nanos)?;
            let mut txn = db.begin_write().map_err(engine)?;
            txn.set_durability(Durability::Immediate);
            {
                let mut traces = txn.open_table(TRACES).map_err(engine)?;
                let mut index = txn.open_table(TRACE_INDEX).map_err(engine)?;
                let mut services = txn.open_table(SERVICES).map_err(engine)?;
                let mut operations = txn.open_table(OPERATIONS).map_err(engine)?;
                let mut deps = txn.open_table(DEPENDENCIES).map_err(engine)?;
                for c in chunks {
                    let seq = self.chunk_seq.fetch_add(1, Ordering::Relaxed);
                    let mut tkey = Vec::with_capacity(24);
                    tkey.extend_from_slice(&c.trace_id.0);
                    tkey.extend_from_slice(&seq.to_be_bytes());
                    traces.insert(tkey.as_slice(), c.block.as_slice()).map_err(engine)?;
                    for e in &c.index {
                        let mut k = service_prefix(&e.service);
                        k.extend_from_slice(&(!e.start_unix_nanos).to_be_bytes());
                        k.extend_from_slice(&tkey);
                        index.insert(k.as_slice(), e.encode_value().as_slice()).map_err(engine)?;
                    }
                    for (service, kind, name) in &c.operations {
                        services.insert(service.as_str(), ()).map_err(engine)?;
                        let mut k = service_prefix(service);
                        k.extend_from_slice(&kind.0.to_be_bytes());
                        k.extend_from_slice(name.as_bytes());
                        operations.insert(k.as_slice(), ()).map_err(engine)?;
                    }
                    for e in &c.edges {
                        let mut k = e.bucket_start_secs.to_be_bytes().to_vec();
                        len16(&mut k, &e.parent);
                        k.extend_from_slice(e.child.as_bytes());
                        let (calls, errors) = match deps.get(k.as_slice()).map_err(engine)? {
                            Some(v) => decode_counts(v.value()),
                            None => (0, 0),
                        };
                        let mut v = Vec::with_capacity(16);
                        v.extend_from_slice(&(calls + e.calls).to_le_bytes());
                        v.extend_from_slice(&(errors + e.errors).to_le_bytes());
                        deps.insert(k.as_slice(), v.as_slice()).map_err(engine)?;
                    }
                }
            }
            txn.commit().map_err(engine)?;
        }
        Ok(())
    }

    fn chunks_of(&self, db: &Database, trace_id: TraceId) -> StoreResult<Vec<Vec<u8>>> {
        let txn = db.begin_read().map_err(engine)?;
        let traces = txn.open_table(TRACES).map_err(engine)?;
        let mut lo = trace_id.0.to_vec();
        lo.extend_from_slice(&[0; 8]);
        let mut hi = trace_id.0.to_vec();
        hi.extend_from_slice(&[0xff; 8]);
        let mut out = Vec::new();
        for row in traces.range(lo.as_slice()..=hi.as_slice()).map_err(engine)? {
            let (_, v) = row.map_err(engine)?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        let mut chunks = Vec::new();
        for (_, db) in self.snapshot() {
            for block in self.chunks_of(&db, trace_id)? {
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
        let mut candidates: Vec<(u64, TraceId, Vec<u8>, Arc<Database>)> = Vec::new();
        for (pstart, db) in self.snapshot().into_iter().rev() {
            if pstart > max_partition_start {
                continue;
            }
            let txn = db.begin_read().map_err(engine)?;
            let index = txn.open_table(TRACE_INDEX).map_err(engine)?;
            for row in index.range(lo.as_slice()..=hi.as_slice()).map_err(engine)? {
                let (k, v) = row.map_err(engine)?;
                let k = k.value();
                let rest = &k[prefix.len()..];
                if rest.len() != 8 + 24 {
                    return Err(StoreError::Codec(codec::CodecError::Corrupt("index key length")));
                }
                let start = !u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
                let mut tid = [0u8; 16];
                tid.copy_from_slice(&rest[8..24]);
                let entry = IndexEntry::decode_value(q.service.clone(), TraceId(tid), start, v.value())?;
                if entry.may_match(q) {
                    candidates.push((start, TraceId(tid), rest[8..].to_vec(), db.clone()));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let verify = q.needs_verification();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (_, trace_id, chunk_key, db) in candidates {
            if out.len() >= q.limit {
                break;
            }
            if seen.contains(&trace_id) {
                continue;
            }
            if verify {
                let txn = db.begin_read().map_err(engine)?;
                let traces = txn.open_table(TRACES).map_err(engine)?;
                let Some(block) = traces.get(chunk_key.as_slice()).map_err(engine)? else { continue };
                if !q.matches_spans(&codec::decode(block.value())?) {
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
        for (_, db) in self.snapshot() {
            let txn = db.begin_read().map_err(engine)?;
            let t = txn.open_table(SERVICES).map_err(engine)?;
            for row in t.iter().map_err(engine)? {
                out.insert(row.map_err(engine)?.0.value().to_string());
            }
        }
        Ok(out.into_iter().collect())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        let prefix = service_prefix(service);
        let mut out = std::collections::BTreeSet::new();
        for (_, db) in self.snapshot() {
            let txn = db.begin_read().map_err(engine)?;
            let t = txn.open_table(OPERATIONS).map_err(engine)?;
            for row in t.range(prefix.as_slice()..).map_err(engine)? {
                let (k, _) = row.map_err(engine)?;
                let k = k.value();
                let Some(rest) = k.strip_prefix(prefix.as_slice()) else { break };
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
        for (_, db) in self.snapshot() {
            let txn = db.begin_read().map_err(engine)?;
            let t = txn.open_table(DEPENDENCIES).map_err(engine)?;
            for row in t.range(&lo[..]..&hi[..]).map_err(engine)? {
                let (k, v) = row.map_err(engine)?;
                let k = k.value();
                if k.len() < 10 {
                    continue;
                }
                let plen = usize::from(u16::from_be_bytes([k[8], k[9]]));
                let Some(parent) = k.get(10..10 + plen) else { continue };
                let child = &k[10 + plen..];
                let (calls, errors) = decode_counts(v.value());
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
