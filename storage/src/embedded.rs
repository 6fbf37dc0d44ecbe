//! The embedded backend: time-partitioned trace storage on [fjall](https://docs.rs/fjall), an LSM-tree engine,
//! for one machine.
//!
//! Layout: one fjall database in `<data_dir>/fjall`; each time partition of `partition_secs` (default one hour)
//! and retention tier owns three keyspaces named `p<partition_start_secs>_<table>` (standard tier) or
//! `i<partition_start_secs>_<table>` (important tier: traces with an error or a slow span, kept for
//! `retention_important`). A chunk lives in the partition of its earliest span start and its tier. Every
//! [`TraceStore::write`] is one atomic fjall write batch across all touched keyspaces, fsync'd
//! (`PersistMode::SyncAll`) before it returns, so a crash loses no acknowledged write.
//!
//! Retention: [`EmbeddedStore::expire`] deletes a partition's keyspaces whole once both its time range and its
//! last write are older than the tier's retention. Counting from the last write as well matches ScyllaDB's TTL
//! (which counts from the write): replaying an old dataset keeps it for one retention period instead of
//! deleting it on arrival. [`run_retention`] calls it on a schedule and exports disk bytes and partition counts. fjall was chosen over redb by `bench/engine-choice`: 4x the write
//! throughput with fsync'd batches and half the disk bytes on real trace blocks.
//!
//! Keyspaces of a partition (keys are byte strings; `len16` is a big-endian u16 length prefix). A write batch is
//! packed ([`crate::StoreLayout::Packed`]): its chunks' spans are one pack (codec version 3) per partition and
//! tier, newest trace first, so small traces share a zstd frame and a header instead of paying each their own.
//! A search opens a pack once ([`OpenPack`], kept in a per-query `PackCache`). It confirms a candidate by
//! building only the candidate's spans whose service, name and times can match (then checks their tags), and
//! fetches its matches together, in one pass over the trace filters: full traces for the classic API, row
//! outlines ([`SpanOutline`]) for summaries, so a summary search builds no span.
//! - `packs`: `pack_seq u64be` → pack (a pack sequence number is unique in the database)
//! - `pages`: `len16 service ‖ !newest_start_nanos u64be ‖ pack_seq u64be ‖ page u16be` → packed index page
//!   (index entries of one service in one pack, starts within [`crate::PAGE_SPAN_NANOS`] of the newest; newest
//!   inverted so a forward scan is newest first; entries reference their trace by its place in the pack, their
//!   operations by name hash in the operation table, and keep starts and durations rounded outwards)
//! - `tables`: the small tables, each under a leading tag byte (`Table`), sharing one keyspace because each
//!   keyspace costs files of its own at rest:
//!   - trace filters: `pack_seq u64be` → [`index::TraceFilter`] over the pack's trace IDs.
//!   - group filters: `first_pack_seq u64be ‖ last_pack_seq u64be` → [`index::TraceFilter`] over the trace IDs of
//!     the partition's `GROUP_PACKS` (64) packs in that range, written with the pack that completes the group.
//!     Trace by ID tests a partition's group filters, then the pack filters of the groups that may hold the trace
//!     and of the packs no group covers yet (all kept in memory, bounded by [`FILTER_CACHE_BYTES`]), reads the
//!     packs that may hold it, checks their trace tables and builds only the trace's rows; no row per trace is
//!     stored.
//!   - operations: `len16 service ‖ kind i32be ‖ name` → empty (the service list is their key prefixes)
//!   - dependency counters: `bucket_start_secs u64be ‖ len16 parent ‖ parent ‖ child` → `calls u64le ‖ errors
//!     u64le`
//!   - shared dictionaries: `dict_id u64be ‖ entry u32be` → serialized entry
//!   - processes: `len16 service ‖ hash u64be` → process-level tags of one process (see
//!     [`crate::StoreLayout::Packed`])
//!
//! Partitions written before packs (one block per chunk in `traces`, index rows in `index`) are rewritten into
//! packs, and small tables kept in keyspaces of their own (`ops`, `deps`, …) are moved into `tables`, when the
//! store opens ([`EmbeddedStore::open`] logs each), then their old keyspaces are deleted. A crash
//! during the rewrite leaves chunks that are rewritten again at the next open; reads drop the duplicate spans.
//!
//! A database-wide `meta` keyspace maps each partition's name prefix to its last write time (ns, u64be) and the
//! latest index entry start it holds (ns, u64be; a search skips partitions whose entries all start too early).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use fjall::config::{BlockSizePolicy, CompressionPolicy, FilterPolicy, RestartIntervalPolicy};
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::index;
use super::{
    DependencyLink, FoundSummaries, FoundTraces, IndexEntry, Operation, StoreError, StoreResult, TraceQuery,
    TraceStore, TraceSummary, WriteBatch, merge_chunk_refs, record_outcome, sum_edges,
};
use crate::metrics::{StorageMetrics, TierLabels};
use skein_codec::{CodecError, DictLookup, Dictionary, OpenPack, SpanOutline, Template};
use skein_model::dependencies::DependencyEdge;
use skein_model::{Span, SpanKind, TraceId};

/// Default partition length, seconds.
pub const DEFAULT_PARTITION_SECS: u64 = 3600;
/// Default retention of ordinary traces (72 h).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(72 * 3600);
/// Default retention of important traces (336 h = 14 days).
pub const DEFAULT_RETENTION_IMPORTANT: Duration = Duration::from_secs(336 * 3600);
/// Total journal size past which fjall flushes the memtables holding the oldest journal (its minimum, 64 MiB).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Shared dictionaries kept decoded in memory by readers.
const DICT_CACHE_ENTRIES: usize = 256;

/// Keyspaces of a partition, `<prefix>_<name>`.
const KEYSPACES: [&str; 3] = ["packs", "pages", "tables"];
/// Keyspaces that earlier layouts gave the tables now in `tables` (`services` is now read from the operations);
/// their rows are moved when the store opens.
const SEPARATE_TABLES: [(&str, Option<Table>); 6] = [
    ("filters", Some(Table::Filters)),
    ("services", None),
    ("ops", Some(Table::Ops)),
    ("deps", Some(Table::Deps)),
    ("dict", Some(Table::Dict)),
    ("processes", Some(Table::Processes)),
];

/// The small tables of a partition, kept in its one `tables` keyspace under a leading tag byte: a keyspace costs
/// files and directories of its own (about 20 KB at rest), which a partition of a few traces notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    /// `pack_seq u64be` → [`index::TraceFilter`] over the pack's trace IDs.
    Filters = b'f' as isize,
    /// `first_pack_seq u64be ‖ last_pack_seq u64be` → [`index::TraceFilter`] over the trace IDs of every pack
    /// of the partition in that range ([`GROUP_PACKS`]).
    Groups = b'g' as isize,
    /// `len16 service ‖ kind i32be ‖ name` → empty.
    Ops = b'o' as isize,
    /// `bucket_start_secs u64be ‖ len16 parent ‖ parent ‖ child` → `calls u64le ‖ errors u64le`.
    Deps = b'd' as isize,
    /// `dict_id u64be ‖ entry u32be` → serialized shared-dictionary entry.
    Dict = b'c' as isize,
    /// `len16 service ‖ hash u64be` → process-level tags of one process.
    Processes = b'p' as isize,
}

impl Table {
    /// The `tables` key of `rest` in this table.
    fn key(self, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(rest.len() + 1);
        k.push(self as u8);
        k.extend_from_slice(rest);
        k
    }
}
/// Bytes of trace filters kept in memory across partitions; past it, partitions' filters are dropped and read
/// again from disk when needed.
pub const FILTER_CACHE_BYTES: usize = 256 << 20;
/// Packs of a partition whose trace IDs one group filter holds: a trace-by-ID lookup (and a search fetching its
/// matches) tests a partition's group filters, then the pack filters of the groups that may hold the trace and of
/// the packs no group covers yet, instead of every pack filter (10M spans in an hour are thousands of packs).
const GROUP_PACKS: usize = 64;
/// A group is sealed early once it holds this many trace IDs (the writer keeps an open group's IDs in memory).
const MAX_GROUP_TRACES: usize = 65_536;
/// Bits per trace ID of a group filter (about one false positive in 200: a false positive costs the group's
/// pack-filter tests, not a pack read).
const GROUP_BITS_PER_ID: usize = 12;
/// Partitions with an open group at once (writes go to the current hour and tier; late chunks to older ones);
/// past it, the group opened first is dropped and its packs stay covered by their own filters only.
const MAX_OPEN_GROUPS: usize = 8;
/// Chunks per write while a partition of the older layout is rewritten into packs.
const MIGRATION_BATCH_CHUNKS: usize = 512;
/// Process-table and operation-table rows a writer remembers having written (each is written once per partition,
/// not once per batch: a key written again is one more version for every scan of the table to step over until
/// compaction); past this the memory is cleared and rows are written again.
const MAX_REMEMBERED_ROWS: usize = 65_536;

/// A source of "now", ns since the Unix epoch; injected so retention can be tested without waiting.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    })
}

/// Embedded backend settings.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Data directory; created if missing.
    pub data_dir: PathBuf,
    /// Partition length, seconds.
    pub partition_secs: u64,
    /// How long ordinary traces are kept.
    pub retention: Duration,
    /// How long important traces (an error or a slow span) are kept.
    pub retention_important: Duration,
}

impl EmbeddedConfig {
    /// Settings with the default partition length and retention.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            partition_secs: DEFAULT_PARTITION_SECS,
            retention: DEFAULT_RETENTION,
            retention_important: DEFAULT_RETENTION_IMPORTANT,
        }
    }
}

/// A partition's identity: start second and tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Start of the partition's time range, seconds since the Unix epoch.
    pub start_secs: u64,
    /// True for the important tier.
    pub important: bool,
}

impl PartitionKey {
    fn prefix(self) -> String {
        format!("{}{}", if self.important { 'i' } else { 'p' }, self.start_secs)
    }

    /// The partition of a keyspace named `<prefix><suffix>`.
    fn parse(name: &str, suffix: &str) -> Option<Self> {
        let rest = name.strip_suffix(suffix)?;
        let important = match rest.as_bytes().first()? {
            b'p' => false,
            b'i' => true,
            _ => return None,
        };
        Some(Self { start_secs: rest[1..].parse().ok()?, important })
    }
}

fn engine(e: fjall::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// The keyspaces of one time partition.
#[derive(Clone)]
struct Partition {
    packs: Keyspace,
    pages: Keyspace,
    /// The small tables ([`Table`]).
    tables: Keyspace,
    /// Last write, ns since the Unix epoch (mirrored in the `meta` keyspace).
    last_write: Arc<AtomicU64>,
    /// Latest index entry start, ns since the Unix epoch (mirrored in the `meta` keyspace; `u64::MAX` when
    /// unknown, for partitions written before it was recorded). Entries may start after the partition's end: a
    /// chunk lives in the partition of its earliest span.
    max_entry_start: Arc<AtomicU64>,
}

impl Partition {
    fn keyspaces(&self) -> [&Keyspace; 3] {
        [&self.packs, &self.pages, &self.tables]
    }

    /// The rows of `table` whose keys start with `prefix`, as `(key without the tag, value)`.
    fn rows(&self, table: Table, prefix: &[u8]) -> impl Iterator<Item = StoreResult<(Vec<u8>, fjall::Slice)>> {
        self.tables.prefix(table.key(prefix)).map(|guard| {
            let (k, v) = guard.into_inner().map_err(engine)?;
            Ok((k[1..].to_vec(), v))
        })
    }
}

struct Inner {
    db: Database,
    meta: Keyspace,
    partition_secs: u64,
    retention_nanos: u64,
    retention_important_nanos: u64,
    clock: Clock,
    /// Open partitions, ascending by start then tier.
    partitions: RwLock<BTreeMap<PartitionKey, Partition>>,
    /// Serializes writers: dependency counters are read-modify-write.
    write_lock: Mutex<()>,
    chunk_seq: AtomicU64,
    dict_cache: Mutex<HashMap<u64, Dictionary>>,
    /// Process-table and operation-table rows already written, by partition, table and a 64-bit hash of the key
    /// (bounded by [`MAX_REMEMBERED_ROWS`]; cleared when a partition expires).
    rows_written: Mutex<std::collections::HashSet<(PartitionKey, u8, u64)>>,
    filters: Mutex<FilterCache>,
    /// Each partition's group of packs not yet sealed into a group filter (written under the write lock).
    open_groups: Mutex<HashMap<PartitionKey, OpenGroup>>,
    /// Declared last: fields drop in order, so the database is closed before the sweep looks at its journal.
    journal: JournalSweep,
}

/// Empties fjall's journal files when the store closes after a flush that no write followed.
///
/// fjall seals and deletes a journal only once it has grown past 64 MB, so the active journal (every write since,
/// tables included) stays on disk through a clean shutdown and restart. After [`EmbeddedStore::flush`] every
/// journaled write is in a table (each item is at or below its keyspace's persisted sequence number, which
/// recovery skips), and fjall writes keyspace metadata to tables directly, so the journal holds nothing recovery
/// would use. The files are truncated, not deleted: fjall recovers its sequence counter from the tables only when
/// it finds an existing journal (without one it would restart the counter at zero and later writes would hide
/// behind older ones). Without a completed flush (a crash, or a write after the flush) the journal is kept and
/// replayed as usual.
struct JournalSweep {
    dir: PathBuf,
    clean: std::sync::atomic::AtomicBool,
}

impl Drop for JournalSweep {
    fn drop(&mut self) {
        if !self.clean.load(Ordering::Acquire) {
            tracing::info!("embedded store closed with writes after its last flush; the journal will be replayed");
            return;
        }
        tracing::info!("embedded store closed after a flush; emptying its journal");
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "jnl") {
                continue;
            }
            let emptied = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| {
                f.set_len(0)?;
                f.sync_all()
            });
            if let Err(err) = emptied {
                tracing::warn!(path = %path.display(), error = %err, "could not empty a flushed journal");
            }
        }
    }
}

/// The embedded [`TraceStore`]. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store and every existing partition, rewriting partitions of the older one-block-per-
    /// chunk layout into packs first.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created; [`StoreError::Engine`] when the database cannot be
    /// opened (for example, it is locked by another process) or recovered.
    pub fn open(config: &EmbeddedConfig) -> StoreResult<Self> {
        Self::open_with_clock(config, system_clock())
    }

    /// As [`EmbeddedStore::open`], with an injected clock for retention decisions.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with_clock(config: &EmbeddedConfig, clock: Clock) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let path = config.data_dir.join("fjall");
        // The smallest total journal fjall allows: past it, fjall flushes the memtables that hold old journals.
        let db = Database::builder(&path).max_journaling_size(MAX_JOURNAL_BYTES).open().map_err(engine)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).map_err(engine)?;
        let mut partitions = BTreeMap::new();
        let names: std::collections::HashSet<String> = db.list_keyspace_names().iter().map(|n| n.to_string()).collect();
        let legacy: Vec<PartitionKey> = names.iter().filter_map(|n| PartitionKey::parse(n, "_traces")).collect();
        for name in &names {
            let Some(key) = PartitionKey::parse(name, "_packs") else { continue };
            let stored = meta.get(key.prefix()).map_err(engine)?;
            let last_write = stored.as_deref().map_or(0, decode_u64);
            let max_entry_start = stored.as_deref().and_then(|v| v.get(8..)).map_or(u64::MAX, decode_u64);
            partitions.insert(key, open_partition(&db, key, last_write, max_entry_start)?);
        }
        let now = clock();
        let store = Self {
            inner: Arc::new(Inner {
                db,
                meta,
                partition_secs: config.partition_secs.max(1),
                retention_nanos: config.retention.as_nanos().min(u128::from(u64::MAX)) as u64,
                retention_important_nanos: config.retention_important.as_nanos().min(u128::from(u64::MAX)) as u64,
                clock,
                partitions: RwLock::new(partitions),
                write_lock: Mutex::new(()),
                chunk_seq: AtomicU64::new(now),
                dict_cache: Mutex::new(HashMap::new()),
                rows_written: Mutex::new(std::collections::HashSet::new()),
                filters: Mutex::new(FilterCache::default()),
                open_groups: Mutex::new(HashMap::new()),
                journal: JournalSweep { dir: path, clean: std::sync::atomic::AtomicBool::new(false) },
            }),
        };
        for key in store.inner.snapshot().into_iter().map(|(k, _)| k).chain(legacy.iter().copied()) {
            store.inner.consolidate(key, &names)?;
        }
        for key in legacy {
            store.inner.migrate(key)?;
        }
        Ok(store)
    }

    /// Deletes every partition whose time range and last write are both older than its tier's retention.
    /// Returns the partitions deleted.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when a keyspace cannot be deleted.
    pub async fn expire(&self) -> StoreResult<Vec<PartitionKey>> {
        self.blocking(|inner| inner.expire()).await
    }

    /// Bytes the database occupies on disk (tables and journal), as fjall counts them: a journal's length, though
    /// fjall preallocates it sparsely and `du` counts only the blocks written.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the sizes cannot be read.
    pub fn disk_bytes(&self) -> StoreResult<u64> {
        self.inner.db.disk_space().map_err(engine)
    }

    /// Flushes every memtable into on-disk tables and syncs, so a restart has nothing to replay; when the store
    /// then closes (its last clone dropped) with no write since, the journal files are deleted and the data
    /// directory at rest holds tables only. Called on graceful shutdown; writes are already durable without it.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when a flush fails.
    pub async fn flush(&self) -> StoreResult<()> {
        self.blocking(|inner| {
            let _writer = inner.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            for (_, p) in inner.snapshot() {
                for ks in p.keyspaces() {
                    ks.rotate_memtable_and_wait().map_err(engine)?;
                }
            }
            inner.meta.rotate_memtable_and_wait().map_err(engine)?;
            inner.db.persist(PersistMode::SyncAll).map_err(engine)?;
            inner.journal.clean.store(true, Ordering::Release);
            Ok(())
        })
        .await
    }

    /// The open partitions, ascending by start second then tier.
    pub fn partitions(&self) -> Vec<PartitionKey> {
        self.inner.snapshot().into_iter().map(|(key, _)| key).collect()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner)).await.map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn open_partition(db: &Database, key: PartitionKey, last_write: u64, max_entry_start: u64) -> StoreResult<Partition> {
    let prefix = key.prefix();
    // Tuned per table for bytes at rest (fjall's defaults suit point reads of large values):
    // - LZ4 on every level of every table (fjall's default starts at level 2, which an hour's partition rarely
    //   reaches); trace blocks are zstd frames already, but a one-span trace's block is stored raw and shares its
    //   header bytes with its neighbours;
    // - bloom filters only where point reads happen (`packs`; `tables`, for the dependency counters'
    //   read-modify-write); pages are range-scanned, and a filter costs about 10 bits per key;
    // - index pages in 32 KiB blocks with a restart point every 32 keys: more keys share their prefix.
    let ks = |table: &'static str| {
        db.keyspace(&format!("{prefix}_{table}"), move || {
            let mut o = KeyspaceCreateOptions::default()
                .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4));
            if table == "pages" {
                o = o
                    .filter_policy(FilterPolicy::disabled())
                    .data_block_size_policy(BlockSizePolicy::all(32 * 1024))
                    .data_block_restart_interval_policy(RestartIntervalPolicy::all(32));
            }
            o
        })
        .map_err(engine)
    };
    // Create `packs` last: its presence marks a complete partition when the store is reopened.
    let (pages, tables) = (ks(KEYSPACES[1])?, ks(KEYSPACES[2])?);
    Ok(Partition {
        packs: ks(KEYSPACES[0])?,
        pages,
        tables,
        last_write: Arc::new(AtomicU64::new(last_write)),
        max_entry_start: Arc::new(AtomicU64::new(max_entry_start)),
    })
}

/// Bytes one query keeps of the packs it read, opened and decoded traces from (blocks, opened packs'
/// [`OpenPack::heap_bytes`], and decoded spans at [`DECODED_SPAN_BYTES`] each); past it, the other packs are
/// dropped and read again when needed.
const QUERY_PACK_CACHE_BYTES: usize = 64 << 20;
/// What one decoded span is counted as in [`QUERY_PACK_CACHE_BYTES`], bytes.
const DECODED_SPAN_BYTES: usize = 512;

/// Packs one query has read, by partition and sequence number, with the full traces built from them: a pack is
/// opened (decompressed and parsed) once however many of its traces the query confirms or fetches, each full
/// trace fetched is built once, and no other trace of the pack is built (a confirmation builds only the spans
/// that can match, a summary only row outlines; neither is kept). Bounded by [`QUERY_PACK_CACHE_BYTES`].
struct PackCache {
    packs: HashMap<(PartitionKey, u64), CachedPack>,
    bytes: usize,
    limit_bytes: usize,
    /// Packs opened, counting a pack opened again after it was dropped.
    opened: usize,
}

impl PackCache {
    fn new(limit_bytes: usize) -> Self {
        PackCache { packs: HashMap::new(), bytes: 0, limit_bytes, opened: 0 }
    }

    /// Recounts what is held after the pack `keep` grew; over the bound, every other pack is dropped (so the
    /// cache holds at most its bound, or one pack that is larger on its own).
    fn settle(&mut self, keep: (PartitionKey, u64)) {
        self.bytes = self.packs.values().map(CachedPack::bytes).sum();
        if self.bytes > self.limit_bytes {
            self.packs.retain(|k, _| *k == keep);
            self.bytes = self.packs.values().map(CachedPack::bytes).sum();
        }
    }
}

impl CachedPack {
    /// What the pack counts for in its [`PackCache`]: its block until opened, then the opened pack, and the
    /// decoded spans.
    fn bytes(&self) -> usize {
        self.block.as_ref().map_or(0, |b| b.len())
            + self.open.as_ref().map_or(0, OpenPack::heap_bytes)
            + self.traces.values().map(|t| t.len() * DECODED_SPAN_BYTES).sum::<usize>()
    }
}

/// A pack's trace table, its block (until the pack is opened), the opened pack, and the traces built so far
/// (with attributes), by place in the pack.
struct CachedPack {
    block: Option<fjall::Slice>,
    ids: Arc<[TraceId]>,
    open: Option<OpenPack>,
    traces: HashMap<usize, Arc<Vec<Span>>>,
}

/// One chunk of a trace as built from its pack, shared with the [`PackCache`] that holds it.
type Chunk = Arc<Vec<Span>>;

/// All spans of a trace from its chunks, merged and sorted ([`merge_chunk_refs`]); `None` without spans.
fn full_trace(chunks: &[Chunk]) -> Option<Vec<Span>> {
    let spans = merge_chunk_refs(chunks.iter().map(|c| c.as_slice()));
    (!spans.is_empty()).then(|| spans.into_iter().cloned().collect())
}

/// The summary of trace `trace_id` from the outlines of its chunks ([`OpenPack::outline`]): no span is built.
fn outline_summary(trace_id: TraceId, chunks: &[Vec<SpanOutline>]) -> Option<TraceSummary> {
    TraceSummary::of_heads(trace_id, merge_chunk_refs(chunks.iter().map(Vec::as_slice)))
}

/// How a search reads one trace (or chunk) out of a pack: `(store, cache, partition key, partition, pack seq,
/// place in the pack)`.
trait ReadChunk<C>: Fn(&Inner, &mut PackCache, PartitionKey, &Partition, u64, usize) -> StoreResult<C> {}
impl<C, F: Fn(&Inner, &mut PackCache, PartitionKey, &Partition, u64, usize) -> StoreResult<C>> ReadChunk<C> for F {}

/// Candidates left out of a search because their blocks failed to decode, with the reason.
type CorruptBlocks = Vec<(TraceId, String)>;

/// For each of `tags`, the processes of the service (`service_prefix`) in the partition's table that hold it.
fn matching_processes(
    p: &Partition,
    service_prefix: &[u8],
    tags: &[(String, String)],
) -> StoreResult<Vec<std::collections::HashSet<u64>>> {
    let mut out = vec![std::collections::HashSet::new(); tags.len()];
    for row in p.rows(Table::Processes, service_prefix) {
        let (k, v) = row?;
        let Some(hash) = k.get(service_prefix.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
            return Err(StoreError::Codec(CodecError::Corrupt("process table key length")));
        };
        let pairs = index::decode_process_pairs(&v)?;
        for (i, (key, value)) in tags.iter().enumerate() {
            if pairs.iter().any(|(k, v)| k == key && v == value) {
                out[i].insert(hash);
            }
        }
    }
    Ok(out)
}

/// The service's (`service_prefix`) operation names in the partition's `ops` table, by [`index::name_hash`]: what
/// packed index pages name operations by.
fn service_operations(p: &Partition, service_prefix: &[u8]) -> StoreResult<HashMap<u64, String>> {
    let mut out = HashMap::new();
    for row in p.rows(Table::Ops, service_prefix) {
        let (k, _) = row?;
        let Some(name) = k.get(service_prefix.len() + 4..) else {
            return Err(StoreError::Codec(CodecError::Corrupt("operation table key length")));
        };
        let name = String::from_utf8_lossy(name);
        out.entry(index::name_hash(&name)).or_insert_with(|| name.into_owned());
    }
    Ok(out)
}

/// Trace filters of partitions, by partition. Bounded by [`FILTER_CACHE_BYTES`]; a partition's filters are
/// loaded whole from its tables when first needed.
#[derive(Default)]
struct FilterCache {
    parts: HashMap<PartitionKey, Arc<PartitionFilters>>,
    bytes: usize,
}

/// The trace filters of one partition.
#[derive(Clone, Default)]
struct PartitionFilters {
    /// `(pack_seq, filter)`, ascending by sequence number.
    packs: Vec<(u64, index::TraceFilter)>,
    /// `(first_pack_seq, last_pack_seq, filter)` over the partition's packs in that range, ascending, disjoint.
    groups: Vec<(u64, u64, index::TraceFilter)>,
}

impl PartitionFilters {
    /// Bytes held (filter bits and a fixed cost per filter).
    fn bytes(&self) -> usize {
        self.packs.iter().map(|(_, f)| f.len_bytes() + 32).sum::<usize>()
            + self.groups.iter().map(|(_, _, f)| f.len_bytes() + 40).sum::<usize>()
    }

    /// The packs that may hold each trace, as `(index into probes, pack_seq)` in pack order, for the probes whose
    /// `wanted` is true: a pack a group covers is tested only for the traces its group filter may hold.
    fn candidates(&self, probes: &[index::TraceProbe], wanted: &[bool]) -> Vec<(usize, u64)> {
        let every: Vec<usize> = (0..probes.len()).filter(|&k| wanted[k]).collect();
        let in_group: Vec<Vec<usize>> = self
            .groups
            .iter()
            .map(|(_, _, g)| every.iter().copied().filter(|&k| g.may_hold(probes[k])).collect())
            .collect();
        let mut out = Vec::new();
        let mut g = 0;
        for (seq, filter) in &self.packs {
            while g < self.groups.len() && self.groups[g].1 < *seq {
                g += 1;
            }
            let asked = match self.groups.get(g) {
                Some(&(first, _, _)) if first <= *seq => &in_group[g],
                _ => &every,
            };
            out.extend(asked.iter().filter(|&&k| filter.may_hold(probes[k])).map(|&k| (k, *seq)));
        }
        out
    }
}

/// A partition's packs written since its last group filter: their trace IDs, until [`GROUP_PACKS`] packs (or
/// [`MAX_GROUP_TRACES`] IDs) are sealed into one.
struct OpenGroup {
    first_seq: u64,
    packs: usize,
    ids: Vec<TraceId>,
}

fn decode_u64(v: &[u8]) -> u64 {
    v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// Resolves shared dictionaries of the blocks of one partition.
struct PartitionDicts<'a> {
    inner: &'a Inner,
    partition: &'a Partition,
}

impl DictLookup for PartitionDicts<'_> {
    fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Dictionary, CodecError> {
        let mut cache = self.inner.dict_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = cache.get(&dict_id).filter(|d| d.len() >= min_len) {
            return Ok(d.clone());
        }
        let mut raw = Vec::new();
        for row in self.partition.rows(Table::Dict, &dict_id.to_be_bytes()) {
            let (k, v) = row.map_err(|_| CodecError::MissingDictionary(dict_id))?;
            let seq = k.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
            if seq != Some(raw.len() as u32) {
                return Err(CodecError::Corrupt("shared dictionary has a gap"));
            }
            raw.push(v);
        }
        if raw.len() < min_len {
            return Err(CodecError::MissingDictionary(dict_id));
        }
        let entries: Dictionary = skein_codec::decode_dictionary(raw.iter().map(|v| &v[..]))?.into();
        if cache.len() >= DICT_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(dict_id, entries.clone());
        Ok(entries)
    }
}

/// A 64-bit SipHash of a row key, for remembering which rows were written (a collision, at 2^-64 per pair of
/// rows, would leave one row unwritten).
fn key_hash(k: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
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
    fn snapshot(&self) -> Vec<(PartitionKey, Partition)> {
        let guard = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        guard.iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn partition_start(&self, start_unix_nanos: u64) -> u64 {
        crate::partition_start_secs(start_unix_nanos, self.partition_secs)
    }

    fn partition(&self, key: PartitionKey) -> StoreResult<Partition> {
        if let Some(p) = self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(p.clone());
        }
        let mut guard = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = guard.get(&key) {
            return Ok(p.clone());
        }
        let p = open_partition(&self.db, key, 0, 0)?;
        guard.insert(key, p.clone());
        Ok(p)
    }

    fn expire(&self) -> StoreResult<Vec<PartitionKey>> {
        let now = (self.clock)();
        let expired: Vec<(PartitionKey, Partition)> = self
            .snapshot()
            .into_iter()
            .filter(|(key, p)| {
                let retention = if key.important { self.retention_important_nanos } else { self.retention_nanos };
                let end = key.start_secs.saturating_add(self.partition_secs).saturating_mul(1_000_000_000);
                let newest = end.max(p.last_write.load(Ordering::Relaxed));
                newest.saturating_add(retention) <= now
            })
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        // Hold the write lock so no write lands in a partition while it is being deleted.
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(expired.len());
        for (key, p) in expired {
            self.partitions.write().unwrap_or_else(|p| p.into_inner()).remove(&key);
            // `packs` first: a partition without it is not reopened, even if a crash interrupts the rest.
            for ks in p.keyspaces() {
                self.db.delete_keyspace(ks.clone()).map_err(engine)?;
            }
            self.meta.remove(key.prefix()).map_err(engine)?;
            self.rows_written.lock().unwrap_or_else(|p| p.into_inner()).retain(|(k, _, _)| *k != key);
            let mut filters = self.filters.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(list) = filters.parts.remove(&key) {
                filters.bytes -= list.bytes();
            }
            drop(filters);
            self.open_groups.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            tracing::info!(partition = %key.prefix(), "retention: partition deleted");
            out.push(key);
        }
        Ok(out)
    }

    fn write(&self, batch: &WriteBatch) -> StoreResult<()> {
        if batch.packs.is_empty() != batch.chunks.is_empty()
            || batch.packs.iter().map(|p| p.chunks.len()).sum::<usize>() != batch.chunks.len()
        {
            return Err(StoreError::Engine(
                "the embedded store takes packed batches (prepare_batch with StoreLayout::Packed)".into(),
            ));
        }
        let _writer = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.journal.clean.store(false, Ordering::Release);
        let now = (self.clock)();
        let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
        // Dependency counters: summed within the batch first, then added to what is stored.
        let mut deps: HashMap<(PartitionKey, Vec<u8>), (u64, u64)> = HashMap::new();
        // Touched partitions with the latest index entry start of this batch in each.
        let mut touched: HashMap<PartitionKey, (Partition, u64)> = HashMap::new();
        // Process-table and operation-table rows this batch writes (each once), remembered once it is committed.
        let mut new_rows: std::collections::HashSet<(PartitionKey, u8, u64)> = std::collections::HashSet::new();
        // Held with the write lock, which every writer and retention already take: no contention.
        let mut remembered = self.rows_written.lock().unwrap_or_else(|p| p.into_inner());
        let mut first_time = |row: (PartitionKey, u8, u64)| !remembered.contains(&row) && new_rows.insert(row);
        let mut new_filters: Vec<(PartitionKey, u64, &[u8])> = Vec::with_capacity(batch.packs.len());
        // Group filters sealed by this batch: (partition, first pack, last pack, filter bytes).
        let mut new_groups: Vec<(PartitionKey, u64, u64, Vec<u8>)> = Vec::new();
        let mut open_groups = self.open_groups.lock().unwrap_or_else(|p| p.into_inner());
        for pack in &batch.packs {
            let start =
                PartitionKey { start_secs: self.partition_start(pack.start_unix_nanos), important: pack.important };
            let p = self.partition(start)?;
            if let Some(d) = &pack.dict {
                for (i, entry) in d.entries.iter().enumerate() {
                    let mut k = d.dict_id.to_be_bytes().to_vec();
                    k.extend_from_slice(&(d.first + i as u32).to_be_bytes());
                    b.insert(&p.tables, Table::Dict.key(&k), &entry[..]);
                }
            }
            let seq = self.chunk_seq.fetch_add(1, Ordering::Relaxed);
            b.insert(&p.packs, seq.to_be_bytes(), pack.block.as_slice());
            b.insert(&p.tables, Table::Filters.key(&seq.to_be_bytes()), pack.trace_filter.as_slice());
            new_filters.push((start, seq, &pack.trace_filter));
            // An open group that a failed commit leaves with IDs of packs never stored only gains false positives.
            if !open_groups.contains_key(&start) && open_groups.len() >= MAX_OPEN_GROUPS {
                let stalest = open_groups.iter().min_by_key(|(_, g)| g.first_seq).map(|(k, _)| *k);
                stalest.and_then(|k| open_groups.remove(&k));
            }
            let group =
                open_groups.entry(start).or_insert_with(|| OpenGroup { first_seq: seq, packs: 0, ids: Vec::new() });
            group.packs += 1;
            group.ids.extend(pack.chunks.iter().filter_map(|&i| batch.chunks.get(i)).map(|c| c.trace_id));
            if group.packs >= GROUP_PACKS || group.ids.len() >= MAX_GROUP_TRACES {
                let mut ids = std::mem::take(&mut group.ids);
                let first = group.first_seq;
                open_groups.remove(&start);
                ids.sort_unstable();
                ids.dedup();
                let bits = index::TraceFilter::build_with(ids.into_iter(), GROUP_BITS_PER_ID).into_bytes();
                let mut k = first.to_be_bytes().to_vec();
                k.extend_from_slice(&seq.to_be_bytes());
                b.insert(&p.tables, Table::Groups.key(&k), bits.as_slice());
                new_groups.push((start, first, seq, bits));
            }
            let mut latest = 0;
            for (i, (service, newest, page)) in pack.pages.iter().enumerate() {
                let mut k = service_prefix(service);
                k.extend_from_slice(&(!newest).to_be_bytes());
                k.extend_from_slice(&seq.to_be_bytes());
                k.extend_from_slice(&u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes());
                b.insert(&p.pages, k, page.as_slice());
                latest = latest.max(*newest);
            }
            let t = touched.entry(start).or_insert_with(|| (p.clone(), 0));
            t.1 = t.1.max(latest);
            for c in pack.chunks.iter().filter_map(|&i| batch.chunks.get(i)) {
                for proc in &c.processes {
                    if !first_time((start, Table::Processes as u8, proc.hash)) {
                        continue;
                    }
                    let mut k = service_prefix(&proc.service);
                    k.extend_from_slice(&proc.hash.to_be_bytes());
                    b.insert(&p.tables, Table::Processes.key(&k), index::encode_process_pairs(&proc.pairs));
                }
                for (service, kind, name) in &c.operations {
                    let mut k = service_prefix(service);
                    k.extend_from_slice(&kind.0.to_be_bytes());
                    k.extend_from_slice(name.as_bytes());
                    if first_time((start, Table::Ops as u8, key_hash(&k))) {
                        b.insert(&p.tables, Table::Ops.key(&k), b"");
                    }
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
        }
        for (key, (p, latest)) in &touched {
            let mut v = now.to_be_bytes().to_vec();
            v.extend_from_slice(&p.max_entry_start.load(Ordering::Relaxed).max(*latest).to_be_bytes());
            b.insert(&self.meta, key.prefix(), v);
        }
        for ((start, k), (calls, errors)) in deps {
            let p = self.partition(start)?;
            let k = Table::Deps.key(&k);
            let (old_calls, old_errors) = match p.tables.get(&k).map_err(engine)? {
                Some(v) => decode_counts(&v),
                None => (0, 0),
            };
            let mut v = Vec::with_capacity(16);
            v.extend_from_slice(&(old_calls + calls).to_le_bytes());
            v.extend_from_slice(&(old_errors + errors).to_le_bytes());
            b.insert(&p.tables, k, v);
        }
        b.commit().map_err(engine)?;
        if remembered.len() + new_rows.len() > MAX_REMEMBERED_ROWS {
            remembered.clear();
        }
        remembered.extend(new_rows);
        drop(remembered);
        // Filters of partitions already in memory grow with the batch (a partition loaded after the commit has
        // them already: sequence numbers only grow, so the list's last entry tells).
        drop(open_groups);
        let mut cache = self.filters.lock().unwrap_or_else(|p| p.into_inner());
        let FilterCache { parts, bytes: total } = &mut *cache;
        for (key, seq, bytes) in new_filters {
            if let Some(list) = parts.get_mut(&key)
                && list.packs.last().is_none_or(|(last, _)| *last < seq)
            {
                Arc::make_mut(list).packs.push((seq, index::TraceFilter::from_bytes(bytes.to_vec())));
                *total += bytes.len() + 32;
            }
        }
        for (key, first, last, bits) in new_groups {
            if let Some(list) = parts.get_mut(&key)
                && list.groups.last().is_none_or(|(_, end, _)| *end < first)
            {
                *total += bits.len() + 40;
                Arc::make_mut(list).groups.push((first, last, index::TraceFilter::from_bytes(bits)));
            }
        }
        drop(cache);
        for (p, latest) in touched.values() {
            p.last_write.fetch_max(now, Ordering::Relaxed);
            p.max_entry_start.fetch_max(*latest, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The trace filters of a partition's packs and groups, loaded from its tables on first use.
    fn filters(&self, key: PartitionKey, p: &Partition) -> StoreResult<Arc<PartitionFilters>> {
        let mut cache = self.filters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = cache.parts.get(&key) {
            return Ok(list.clone());
        }
        // Loaded under the lock, so a write that commits meanwhile finds the list and appends to it.
        let mut list = PartitionFilters::default();
        let corrupt = |what| StoreError::Codec(CodecError::Corrupt(what));
        for row in p.rows(Table::Filters, &[]) {
            let (k, v) = row?;
            let seq = <[u8; 8]>::try_from(k.as_slice()).map_err(|_| corrupt("trace filter key length"))?;
            list.packs.push((u64::from_be_bytes(seq), index::TraceFilter::from_bytes(v.to_vec())));
        }
        for row in p.rows(Table::Groups, &[]) {
            let (k, v) = row?;
            let range = <[u8; 16]>::try_from(k.as_slice()).map_err(|_| corrupt("group filter key length"))?;
            let (first, last) = (decode_u64(&range[..8]), decode_u64(&range[8..]));
            list.groups.push((first, last, index::TraceFilter::from_bytes(v.to_vec())));
        }
        let list = Arc::new(list);
        let size = list.bytes();
        while cache.bytes + size > FILTER_CACHE_BYTES {
            let Some(&evict) = cache.parts.keys().next() else { break };
            if let Some(old) = cache.parts.remove(&evict) {
                cache.bytes -= old.bytes();
            }
        }
        if size <= FILTER_CACHE_BYTES {
            cache.bytes += size;
            cache.parts.insert(key, list.clone());
        }
        Ok(list)
    }

    /// A pack's trace table, its block read once per query into `packs`.
    fn pack_ids(packs: &mut PackCache, key: PartitionKey, p: &Partition, seq: u64) -> StoreResult<Arc<[TraceId]>> {
        if let Some(pack) = packs.packs.get(&(key, seq)) {
            return Ok(pack.ids.clone());
        }
        let block = p.packs.get(seq.to_be_bytes()).map_err(engine)?;
        let block = block.ok_or(CodecError::Corrupt("a pack named by the index or a filter is missing"))?;
        let ids: Arc<[TraceId]> = skein_codec::v3::trace_ids(&block)?.into();
        packs.packs.insert(
            (key, seq),
            CachedPack { block: Some(block), ids: ids.clone(), open: None, traces: HashMap::new() },
        );
        packs.settle((key, seq));
        Ok(ids)
    }

    /// The pack `seq` of the cache, opened (decompressed and parsed) once per query. Call [`PackCache::settle`]
    /// once done with it: opening changes what it holds.
    fn open_pack<'c>(
        &self,
        packs: &'c mut PackCache,
        key: PartitionKey,
        p: &Partition,
        seq: u64,
    ) -> StoreResult<&'c mut CachedPack> {
        Self::pack_ids(packs, key, p, seq)?;
        let pack = packs.packs.get_mut(&(key, seq)).ok_or(CodecError::Corrupt("pack cache"))?;
        if pack.open.is_none() {
            let block = pack.block.as_ref().ok_or(CodecError::Corrupt("pack cache"))?;
            pack.open = Some(OpenPack::open(block, &PartitionDicts { inner: self, partition: p })?);
            pack.block = None;
            packs.opened += 1;
        }
        Ok(pack)
    }

    /// The spans (with attributes) of the trace at `place` in a pack's trace table, built once per query from the
    /// pack, which is opened once per query.
    fn pack_trace(
        &self,
        packs: &mut PackCache,
        key: PartitionKey,
        p: &Partition,
        seq: u64,
        place: usize,
    ) -> StoreResult<Chunk> {
        let pack = self.open_pack(packs, key, p, seq)?;
        let spans = match pack.traces.get(&place) {
            Some(spans) => spans.clone(),
            None => {
                let open = pack.open.as_mut().ok_or(CodecError::Corrupt("pack cache"))?;
                let spans = Arc::new(open.trace(place, true)?);
                pack.traces.insert(place, spans.clone());
                spans
            }
        };
        packs.settle((key, seq));
        Ok(spans)
    }

    /// The outline of every span of the trace at `place` in a pack's trace table ([`OpenPack::outline`]): what a
    /// summary reads, without building spans. Not kept: a search reads each place once.
    fn pack_outline(
        &self,
        packs: &mut PackCache,
        key: PartitionKey,
        p: &Partition,
        seq: u64,
        place: usize,
    ) -> StoreResult<Vec<SpanOutline>> {
        let pack = self.open_pack(packs, key, p, seq)?;
        let outline = pack.open.as_mut().ok_or(CodecError::Corrupt("pack cache"))?.outline(place);
        packs.settle((key, seq));
        Ok(outline?)
    }

    /// Whether the trace at `place` of a pack matches `q` ([`TraceQuery::matches_spans`]). Only the spans whose
    /// service, name and times can match ([`TraceQuery::matches_outline`]) are built, to check their tags; a trace
    /// the query already built is checked as it is.
    fn pack_matches(
        &self,
        packs: &mut PackCache,
        (key, p, seq, place): (PartitionKey, &Partition, u64, usize),
        q: &TraceQuery,
    ) -> StoreResult<bool> {
        let pack = self.open_pack(packs, key, p, seq)?;
        let matched = match pack.traces.get(&place) {
            Some(spans) => Ok(q.matches_spans(spans)),
            None => {
                let keep = |t: &Template, start, end| q.matches_outline(t.resource.service_name(), &t.name, start, end);
                let open = pack.open.as_mut().ok_or(CodecError::Corrupt("pack cache"))?;
                open.spans_where(place, true, &keep).map(|kept| q.matches_spans(&kept))
            }
        };
        packs.settle((key, seq));
        Ok(matched?)
    }

    /// The chunks of each of `ids`, each read by `read`, found in one pass over the trace filters of every
    /// partition (each filter's bits are read once for all of them). Packs opened are kept in `packs`. An entry
    /// is an error when a pack that may hold that trace failed to decode.
    ///
    /// # Errors
    /// [`StoreError`] when the engine fails.
    fn trace_chunks<C>(
        &self,
        ids: &[TraceId],
        packs: &mut PackCache,
        read: impl ReadChunk<C>,
    ) -> StoreResult<Vec<StoreResult<Vec<C>>>> {
        let probes: Vec<index::TraceProbe> = ids.iter().map(|&id| index::TraceProbe::new(id)).collect();
        let mut out: Vec<StoreResult<Vec<C>>> = ids.iter().map(|_| Ok(Vec::new())).collect();
        for (key, p) in self.snapshot() {
            let wanted: Vec<bool> = out.iter().map(Result::is_ok).collect();
            for (k, seq) in self.filters(key, &p)?.candidates(&probes, &wanted) {
                let Ok(chunks) = &mut out[k] else { continue };
                let found = Self::pack_ids(packs, key, &p, seq).and_then(|in_pack| {
                    let places = (0..in_pack.len()).filter(|&i| in_pack[i] == ids[k]);
                    places.map(|place| read(self, packs, key, &p, seq, place)).collect::<StoreResult<Vec<C>>>()
                });
                match found {
                    Ok(found) => chunks.extend(found),
                    Err(e @ StoreError::Codec(_)) => out[k] = Err(e),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// All spans of a trace, merged and sorted. Packs read and traces decoded are kept in `packs`.
    fn get_trace(&self, trace_id: TraceId, packs: &mut PackCache) -> StoreResult<Option<Vec<Span>>> {
        let chunks = self.trace_chunks(&[trace_id], packs, Self::pack_trace)?.pop().unwrap_or(Ok(Vec::new()))?;
        Ok(full_trace(&chunks))
    }

    fn find_traces(&self, q: &TraceQuery) -> StoreResult<FoundTraces> {
        let (traces, corrupt) = self.search(q, Self::pack_trace, |_, chunks| full_trace(chunks))?;
        Ok(FoundTraces { traces, corrupt })
    }

    fn find_trace_summaries(&self, q: &TraceQuery) -> StoreResult<FoundSummaries> {
        let (summaries, corrupt) = self.search(q, Self::pack_outline, outline_summary)?;
        Ok(FoundSummaries { summaries, corrupt })
    }

    /// The search behind [`TraceStore::find_traces`]: index entries from the pages of every partition that can
    /// hold entries in the window, newest first overall, each confirmed against its chunk when the entry cannot
    /// prove the match, then fetched (each chunk `read`, then the trace's `result` made of them), until `q.limit`
    /// results. Returns the results and the candidates whose packs failed to decode.
    fn search<C, T>(
        &self,
        q: &TraceQuery,
        read: impl ReadChunk<C>,
        result: impl Fn(TraceId, &[C]) -> Option<T>,
    ) -> StoreResult<(Vec<T>, CorruptBlocks)> {
        let (mut found, mut corrupt) = (Vec::new(), Vec::new());
        if q.limit == 0 || q.start_min_unix_nanos > q.start_max_unix_nanos {
            return Ok((found, corrupt));
        }
        // Entries start in [scan_min, max]; a page's newest entry start is at most PAGE_SPAN_NANOS after its
        // other entries'. Partitions hold entries starting at or after their start, and at most at their latest
        // entry start.
        let scan_min = q.scan_start_min_unix_nanos();
        let newest_max = q.start_max_unix_nanos.saturating_add(crate::PAGE_SPAN_NANOS);
        let max_partition_start = q.start_max_unix_nanos / 1_000_000_000;
        let prefix = service_prefix(&q.service);
        let mut lo = prefix.clone();
        lo.extend_from_slice(&(!newest_max).to_be_bytes());
        let mut hi = prefix.clone();
        hi.extend_from_slice(&(!scan_min).to_be_bytes());
        hi.extend_from_slice(&[0xff; 10]);
        type Cursor = std::iter::Peekable<Box<dyn Iterator<Item = fjall::Guard>>>;
        let mut cursors: Vec<(Cursor, PartitionKey, Partition)> = Vec::new();
        for (key, p) in self.snapshot().into_iter().rev() {
            if key.start_secs > max_partition_start || p.max_entry_start.load(Ordering::Relaxed) < scan_min {
                continue;
            }
            let range: Box<dyn Iterator<Item = fjall::Guard>> = Box::new(p.pages.range(lo.clone()..=hi.clone()));
            cursors.push((range.peekable(), key, p));
        }
        // The next page of each cursor: (newest entry start, pack seq, page).
        type Page = (u64, u64, fjall::Slice);
        let next = |c: &mut Cursor| -> StoreResult<Option<Page>> {
            let Some(guard) = c.next() else { return Ok(None) };
            let (k, v) = guard.into_inner().map_err(engine)?;
            let rest = &k[prefix.len()..];
            if rest.len() != 8 + 8 + 2 {
                return Err(StoreError::Codec(CodecError::Corrupt("index page key length")));
            }
            let newest = !u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
            Ok(Some((newest, u64::from_be_bytes(rest[8..16].try_into().unwrap_or_default()), v)))
        };
        let mut heads: Vec<Option<Page>> = Vec::with_capacity(cursors.len());
        for (c, _, _) in &mut cursors {
            heads.push(next(c)?);
        }
        // Buffered entries, newest first (ties: lower cursor, pack, place in the pack): (start, tie, arena index).
        type Item = (u64, std::cmp::Reverse<(usize, u64, u32)>, usize);
        let mut heap: std::collections::BinaryHeap<Item> = std::collections::BinaryHeap::new();
        let mut arena: Vec<IndexEntry> = Vec::new();
        let mut packs = PackCache::new(QUERY_PACK_CACHE_BYTES);
        // What the search read, for its debug log: pages, entries in the window, candidates verified.
        let (mut pages_read, mut entries, mut verified) = (0usize, 0usize, 0usize);
        let began = std::time::Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut process_matches: Vec<Option<Vec<std::collections::HashSet<u64>>>> = vec![None; cursors.len()];
        let mut operation_names: Vec<Option<HashMap<u64, String>>> = vec![None; cursors.len()];
        // Confirmed matches not fetched yet, newest first: fetched together (one pass over the trace filters) once
        // they would fill the limit or the candidates run out.
        let mut pending: Vec<TraceId> = Vec::new();
        let mut exhausted = false;
        loop {
            if exhausted || found.len() + pending.len() >= q.limit {
                if pending.is_empty() || found.len() >= q.limit {
                    break;
                }
                let chunks = self.trace_chunks(&pending, &mut packs, &read)?;
                for (trace_id, chunks) in pending.drain(..).zip(chunks) {
                    record_outcome(&mut found, &mut corrupt, trace_id, chunks.map(|c| result(trace_id, &c)))?;
                }
                continue;
            }
            // Read the newest unread page while it may hold an entry newer than every buffered one.
            let newest_page = (0..heads.len()).filter_map(|i| heads[i].as_ref().map(|h| (h.0, i))).max();
            if let Some((newest, i)) = newest_page
                && heap.peek().is_none_or(|top| newest >= top.0)
            {
                let Some((_, seq, page)) = heads[i].take() else { continue };
                pages_read += 1;
                heads[i] = next(&mut cursors[i].0)?;
                let names = match &mut operation_names[i] {
                    Some(names) => names,
                    slot => slot.insert(service_operations(&cursors[i].2, &prefix)?),
                };
                for (ordinal, e) in
                    index::decode_packed_page(&q.service, newest, &page, names, &|e| e.within_bounds(q))?
                {
                    heap.push((e.start_unix_nanos, std::cmp::Reverse((i, seq, ordinal)), arena.len()));
                    arena.push(e);
                }
                continue;
            }
            let Some((_, std::cmp::Reverse((i, seq, ordinal)), at)) = heap.pop() else {
                exhausted = true;
                continue;
            };
            let (key, p) = (cursors[i].1, &cursors[i].2);
            let entry = &mut arena[at];
            // Tags of the entry's processes are in the partition's process table: which processes hold each
            // queried tag is read once per partition and query.
            if !entry.processes.is_empty() && !q.tags.is_empty() && process_matches[i].is_none() {
                process_matches[i] = Some(matching_processes(p, &prefix, &q.tags)?);
            }
            let matches = process_matches[i].as_deref().unwrap_or_default();
            if !entry.may_match_with(q, |tag, hash| matches.get(tag).is_some_and(|m| m.contains(&hash))) {
                continue;
            }
            let ids = match Self::pack_ids(&mut packs, key, p, seq) {
                Ok(ids) => ids,
                Err(e) => {
                    corrupt.push((TraceId([0; 16]), format!("pack {seq:016x}: {e}")));
                    continue;
                }
            };
            let Some(&trace_id) = ids.get(ordinal as usize) else {
                corrupt.push((TraceId([0; 16]), format!("pack {seq:016x}: an index entry names trace {ordinal}")));
                continue;
            };
            if seen.contains(&trace_id) {
                continue;
            }
            entry.trace_id = trace_id;
            entries += 1;
            if q.needs_verification(entry) {
                verified += 1;
                match self.pack_matches(&mut packs, (key, p, seq, ordinal as usize), q) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(StoreError::Codec(e)) => {
                        corrupt.push((trace_id, e.to_string()));
                        seen.insert(trace_id);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            seen.insert(trace_id);
            pending.push(trace_id);
        }
        tracing::debug!(
            service = %q.service, found = found.len(), pages_read, entries, verified, packs_opened = packs.opened,
            elapsed_us = began.elapsed().as_micros() as u64, "search"
        );
        Ok((found, corrupt))
    }

    /// Moves the rows of a partition's small tables that an earlier layout kept in keyspaces of their own
    /// ([`SEPARATE_TABLES`]; `names` lists the database's keyspaces) into its `tables` keyspace, then deletes
    /// those keyspaces. Idempotent: a crash before a delete copies the same rows again at the next open.
    fn consolidate(&self, key: PartitionKey, names: &std::collections::HashSet<String>) -> StoreResult<()> {
        let prefix = key.prefix();
        for (name, table) in SEPARATE_TABLES {
            let full = format!("{prefix}_{name}");
            if !names.contains(&full) {
                continue;
            }
            let p = self.partition(key)?;
            let old = self.db.keyspace(&full, KeyspaceCreateOptions::default).map_err(engine)?;
            if let Some(table) = table {
                let mut b = self.db.batch().durability(Some(PersistMode::SyncAll));
                for guard in old.iter() {
                    let (k, v) = guard.into_inner().map_err(engine)?;
                    b.insert(&p.tables, table.key(&k), v);
                }
                b.commit().map_err(engine)?;
            }
            self.db.delete_keyspace(old).map_err(engine)?;
            tracing::info!(partition = %prefix, table = name, "table moved into the partition's tables keyspace");
        }
        Ok(())
    }

    /// Rewrites a partition of the older layout (a block per chunk in `<prefix>_traces`, index rows in
    /// `<prefix>_index`) into packs, then deletes the old keyspaces. Dependency counters, services, operations,
    /// dictionaries and process rows stay where they are.
    fn migrate(&self, key: PartitionKey) -> StoreResult<()> {
        let prefix = key.prefix();
        let legacy = |table: &str| {
            self.db.keyspace(&format!("{prefix}_{table}"), KeyspaceCreateOptions::default).map_err(engine)
        };
        let (traces, index) = (legacy("traces")?, legacy("index")?);
        let p = self.partition(key)?;
        let dicts = crate::Dictionaries::new(self.partition_secs);
        let (mut chunks, mut moved, mut unreadable) = (Vec::new(), 0usize, 0usize);
        let mut flush = |chunks: &mut Vec<Vec<Span>>| -> StoreResult<()> {
            let inputs = chunks.iter().map(|c| (c.as_slice(), Vec::new(), key.important));
            self.write(&crate::prepare_batch(inputs, &dicts, crate::StoreLayout::Packed)?)?;
            moved += chunks.len();
            chunks.clear();
            Ok(())
        };
        for guard in traces.iter() {
            let (k, v) = guard.into_inner().map_err(engine)?;
            // Trace markers (16-byte keys) only listed chunks.
            if k.len() == 16 {
                continue;
            }
            match skein_codec::decode_with(&v, &PartitionDicts { inner: self, partition: &p }) {
                Ok(spans) if !spans.is_empty() => chunks.push(spans),
                Ok(_) => {}
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(partition = %prefix, error = %e, "an unreadable block of the older layout is dropped");
                }
            }
            if chunks.len() >= MIGRATION_BATCH_CHUNKS {
                flush(&mut chunks)?;
            }
        }
        if !chunks.is_empty() {
            flush(&mut chunks)?;
        }
        self.db.delete_keyspace(traces).map_err(engine)?;
        self.db.delete_keyspace(index).map_err(engine)?;
        tracing::info!(partition = %prefix, chunks = moved, unreadable, "partition rewritten into packs");
        Ok(())
    }

    fn services(&self) -> StoreResult<Vec<String>> {
        let mut out: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for (_, p) in self.snapshot() {
            // Every service has an operation: the names are the operations' key prefixes (`len16 service ‖ …`).
            for row in p.rows(Table::Ops, &[]) {
                let (k, _) = row?;
                let len = k.get(..2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                let Some(service) = k.get(2..2 + len) else {
                    return Err(StoreError::Codec(CodecError::Corrupt("operation table key length")));
                };
                if !out.contains(service) {
                    out.insert(service.to_vec());
                }
            }
        }
        Ok(out.into_iter().map(|s| String::from_utf8_lossy(&s).into_owned()).collect())
    }

    fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        let prefix = service_prefix(service);
        let mut out = std::collections::BTreeSet::new();
        for (_, p) in self.snapshot() {
            for row in p.rows(Table::Ops, &prefix) {
                let (k, _) = row?;
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
        let first_bucket = start_secs / skein_model::dependencies::BUCKET_SECS * skein_model::dependencies::BUCKET_SECS;
        let lo = first_bucket.to_be_bytes();
        let hi = (end_secs + 1).to_be_bytes();
        let mut edges = Vec::new();
        for (_, p) in self.snapshot() {
            for guard in p.tables.range(Table::Deps.key(&lo)..Table::Deps.key(&hi)) {
                let (k, v) = guard.into_inner().map_err(engine)?;
                let k = &k[1..];
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
    fn partition_secs(&self) -> u64 {
        self.inner.partition_secs
    }

    fn layout(&self) -> crate::StoreLayout {
        crate::StoreLayout::Packed
    }

    async fn write(&self, batch: Arc<WriteBatch>) -> StoreResult<()> {
        self.blocking(move |inner| inner.write(&batch)).await
    }

    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        self.blocking(move |inner| inner.get_trace(trace_id, &mut PackCache::new(QUERY_PACK_CACHE_BYTES))).await
    }

    async fn find_traces(&self, query: TraceQuery) -> StoreResult<FoundTraces> {
        self.blocking(move |inner| inner.find_traces(&query)).await
    }

    async fn find_trace_summaries(&self, query: TraceQuery) -> StoreResult<FoundSummaries> {
        self.blocking(move |inner| inner.find_trace_summaries(&query)).await
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

/// Deletes expired partitions every `interval` and exports `skein_storage_disk_bytes`,
/// `skein_storage_partitions{tier}` and `skein_storage_partitions_expired_total{tier}`, until `shutdown` fires.
pub async fn run_retention(
    store: EmbeddedStore,
    metrics: Arc<StorageMetrics>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        match store.expire().await {
            Ok(expired) => {
                for key in expired {
                    metrics.partitions_expired.get_or_create(&tier_label(key.important)).inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying at the next interval"),
        }
        export_storage_gauges(&store, &metrics);
    }
}

/// Sets the disk-bytes and partition-count gauges from the store.
pub fn export_storage_gauges(store: &EmbeddedStore, metrics: &StorageMetrics) {
    let parts = store.partitions();
    for important in [false, true] {
        let n = parts.iter().filter(|k| k.important == important).count();
        metrics.storage_partitions.get_or_create(&tier_label(important)).set(n as i64);
    }
    match store.disk_bytes() {
        Ok(bytes) => {
            metrics.storage_disk_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        Err(e) => tracing::warn!(error = %e, "could not read the store's disk usage"),
    }
}

fn tier_label(important: bool) -> TierLabels {
    TierLabels { tier: if important { "important" } else { "standard" }.to_string() }
}

#[cfg(test)]
mod tests;
