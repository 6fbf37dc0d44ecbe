//! The ScyllaDB backend (DESIGN §4): one `traces` row per trace chunk; one `trace_index` row per write batch,
//! service and hour bucket (a page of that batch's index entries); operations, service buckets, dependency edges
//! and dictionary entries amortised across chunks — about 0.1–0.2 CQL rows per span where Jaeger's Cassandra
//! schema writes 5 + N (REFERENCE §4).
//!
//! Writes use prepared statements (token-aware routing through the driver's default load-balancing policy, with
//! a preferred local datacenter when configured), the configured consistency (default `LOCAL_QUORUM`), a
//! per-row TTL by retention tier, bounded concurrency and retries with exponential backoff. Every statement is an
//! idempotent upsert: a retried chunk rewrites the same rows (its `chunk_id` is a hash of its block). Reads page.

pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::policies::load_balancing::DefaultPolicy;
use ::scylla::statement::Consistency;
use ::scylla::statement::prepared::PreparedStatement;
use futures::{StreamExt, TryStreamExt};

pub use schema::{Replication, SCHEMA_VERSION, SchemaConfig, ensure_schema, validate_keyspace};

use super::{
    DependencyLink, FoundTraces, IndexEntry, Operation, PageEntry, PageMerger, PreparedChunk, StoreError, StoreResult,
    TraceQuery, TraceStore, WriteBatch, decode_page, encode_page, merge_chunks, sum_edges,
};
use skein_codec::{CodecError, DictLookup, Dictionary};
use skein_model::dependencies::DependencyEdge;
use skein_model::{Span, SpanKind, TraceId};

/// Most index entries in one `trace_index` page row (a write batch's entries of one service and bucket are split
/// into pages of at most this many, about 40 KiB).
pub const MAX_PAGE_ENTRIES: usize = 256;
/// Index bucket length, seconds (one `trace_index` partition per service and hour).
pub const BUCKET_SECS: u64 = 3600;
const DAY_SECS: u64 = 86_400;
/// Bound on the in-process write cache of operations and service buckets already written.
const WRITE_CACHE_ENTRIES: usize = 100_000;
/// Dependency queries look back at most this many days.
const MAX_DEPENDENCY_DAYS: u64 = 400;

/// ScyllaDB backend settings.
#[derive(Clone, Debug)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace, replication, TTL and bucket size.
    pub schema: SchemaConfig,
    /// Datacenter to prefer (`LOCAL_*` consistencies are relative to it).
    pub local_dc: Option<String>,
    /// Username and password for `PasswordAuthenticator`.
    pub credentials: Option<(String, String)>,
    /// Consistency of reads and writes.
    pub consistency: Consistency,
    /// TTL of ordinary traces.
    pub retention: Duration,
    /// TTL of important traces (an error or a slow span).
    pub retention_important: Duration,
    /// Statements in flight per write batch.
    pub max_concurrency: usize,
    /// Attempts per statement before the write fails.
    pub max_attempts: u32,
    /// Create the keyspace and tables at connect time.
    pub create_schema: bool,
}

impl ScyllaConfig {
    /// Defaults for a keyspace on some nodes: `SimpleStrategy` RF 1, `LOCAL_QUORUM`, 72 h / 336 h.
    pub fn new(nodes: Vec<String>, keyspace: &str) -> Self {
        let retention = Duration::from_secs(72 * 3600);
        Self {
            nodes,
            schema: SchemaConfig {
                keyspace: keyspace.to_string(),
                replication: Replication::Simple { replication_factor: 1 },
                default_ttl_secs: retention.as_secs(),
                bucket_secs: BUCKET_SECS,
            },
            local_dc: None,
            credentials: None,
            consistency: Consistency::LocalQuorum,
            retention,
            retention_important: Duration::from_secs(336 * 3600),
            max_concurrency: 64,
            max_attempts: 5,
            create_schema: true,
        }
    }
}

/// Parses a consistency level name (`ONE`, `LOCAL_QUORUM`, …) into the driver's value.
///
/// # Errors
/// A message naming the accepted values ([`skein_config::scylla::Consistency`]).
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    use skein_config::scylla::Consistency as C;
    Ok(match s.parse::<C>()? {
        C::Any => Consistency::Any,
        C::One => Consistency::One,
        C::Two => Consistency::Two,
        C::Three => Consistency::Three,
        C::Quorum => Consistency::Quorum,
        C::All => Consistency::All,
        C::LocalQuorum => Consistency::LocalQuorum,
        C::EachQuorum => Consistency::EachQuorum,
        C::LocalOne => Consistency::LocalOne,
    })
}

/// One CQL row a write produces. [`plan_rows`] is the single place that decides them, so counting rows per span
/// (`skein-bench storage --scylla-plan`) counts exactly what [`ScyllaStore::write`] executes. Fields are the
/// columns of the table the variant names ([`schema::migrations`]); `ttl` is the row's TTL in seconds.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs, reason = "fields are the CQL columns documented in schema.rs")]
pub enum Row {
    /// A `dictionaries` row.
    Dictionary { dict_id: i64, seq: i32, value: Vec<u8>, ttl: i32 },
    /// A `traces` row.
    Trace { trace_id: Vec<u8>, chunk_id: i64, block: Vec<u8>, ttl: i32 },
    /// A `trace_index` row: one page of index entries ([`super::encode_page`]).
    Index { service: String, bucket: i64, page_end: i64, page_id: i64, page: Vec<u8>, ttl: i32 },
    /// A `service_buckets` row.
    ServiceBucket { service: String, bucket: i64, ttl: i32 },
    /// An `operations` row.
    Operation { service: String, span_kind: i32, operation: String, ttl: i32 },
    /// A `dependencies` row.
    Dependency {
        day: i64,
        bucket_start: i64,
        parent: String,
        child: String,
        batch_id: i64,
        calls: i64,
        errors: i64,
        ttl: i32,
    },
}

/// Rows already written by this process (operations and service buckets), so they are written once, as Jaeger's
/// write cache does. Bounded: cleared when full.
#[derive(Default)]
pub struct WriteCache {
    seen: HashSet<(String, i32, String)>,
}

impl WriteCache {
    fn first_time(&mut self, key: (String, i32, String)) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen.len() >= WRITE_CACHE_ENTRIES {
            self.seen.clear();
        }
        self.seen.insert(key)
    }
}

fn fnv64(parts: &[&[u8]]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

fn ttl_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Turns a write batch into CQL rows: dictionary rows first (they must land before the blocks using them), then
/// trace, index, service-bucket, operation and dependency rows.
pub fn plan_rows(
    batch: &WriteBatch,
    retention: Duration,
    retention_important: Duration,
    cache: &mut WriteCache,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let long = ttl_secs(retention_important);
    let short = ttl_secs(retention);
    for c in &batch.chunks {
        if let Some(d) = &c.dict {
            for (i, e) in d.entries.iter().enumerate() {
                rows.push(Row::Dictionary {
                    dict_id: d.dict_id as i64,
                    seq: (d.first as usize + i) as i32,
                    value: e.to_vec(),
                    ttl: long,
                });
            }
        }
    }
    let mut deps: BTreeMap<(u64, String, String), (u64, u64)> = BTreeMap::new();
    let mut batch_hash_parts: Vec<i64> = Vec::new();
    // Index entries grouped into pages: (service, bucket, ttl) → entries.
    let mut pages: BTreeMap<(String, i64, i32), Vec<PageEntry>> = BTreeMap::new();
    for c in &batch.chunks {
        let ttl = if c.important { long } else { short };
        let chunk_id = chunk_id(c);
        batch_hash_parts.push(chunk_id);
        rows.push(Row::Trace { trace_id: c.trace_id.0.to_vec(), chunk_id, block: c.block.clone(), ttl });
        for e in &c.index {
            let bucket = (e.start_unix_nanos / 1_000_000_000 / BUCKET_SECS) as i64;
            if cache.first_time((e.service.clone(), -1, bucket.to_string())) {
                rows.push(Row::ServiceBucket { service: e.service.clone(), bucket, ttl: long });
            }
            pages.entry((e.service.clone(), bucket, ttl)).or_default().push(PageEntry {
                start_unix_nanos: e.start_unix_nanos,
                trace_id: c.trace_id,
                chunk_id,
                value: e.encode_value(),
            });
        }
        for (service, kind, name) in &c.operations {
            if cache.first_time((service.clone(), kind.0, name.clone())) {
                rows.push(Row::Operation {
                    service: service.clone(),
                    span_kind: kind.0,
                    operation: name.clone(),
                    ttl: long,
                });
            }
        }
        for e in &c.edges {
            let v = deps.entry((e.bucket_start_secs, e.parent.clone(), e.child.clone())).or_default();
            v.0 += e.calls;
            v.1 += e.errors;
        }
    }
    for ((service, bucket, ttl), entries) in pages {
        for part in entries.chunks(MAX_PAGE_ENTRIES) {
            let page = encode_page(part);
            let page_end = part.iter().map(|e| e.start_unix_nanos).max().unwrap_or(0) as i64;
            // The page ID hashes the page, so a retried batch rewrites the same row.
            let page_id = fnv64(&[&page]);
            rows.push(Row::Index { service: service.clone(), bucket, page_end, page_id, page, ttl });
        }
    }
    let batch_id = fnv64(&[&batch_hash_parts.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>()]);
    for ((bucket_start, parent, child), (calls, errors)) in deps {
        rows.push(Row::Dependency {
            day: (bucket_start / DAY_SECS) as i64,
            bucket_start: bucket_start as i64,
            parent,
            child,
            batch_id,
            calls: calls as i64,
            errors: errors as i64,
            ttl: short,
        });
    }
    rows
}

/// The chunk's row key: a hash of its block, so a retried write upserts the same row.
pub fn chunk_id(c: &PreparedChunk) -> i64 {
    fnv64(&[&c.block])
}

struct Statements {
    insert_dict: PreparedStatement,
    insert_trace: PreparedStatement,
    insert_index: PreparedStatement,
    insert_bucket: PreparedStatement,
    insert_op: PreparedStatement,
    insert_dep: PreparedStatement,
    select_trace: PreparedStatement,
    select_dict: PreparedStatement,
    select_buckets: PreparedStatement,
    select_index: PreparedStatement,
    select_services: PreparedStatement,
    select_ops: PreparedStatement,
    select_deps: PreparedStatement,
}

/// The ScyllaDB [`TraceStore`].
pub struct ScyllaStore {
    session: Session,
    st: Statements,
    config: ScyllaConfig,
    cache: Mutex<WriteCache>,
    dicts: Mutex<HashMap<i64, Dictionary>>,
}

fn cql(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(format!("scylla: {e}"))
}

impl ScyllaStore {
    /// Connects, creates the schema when configured, and prepares every statement.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the cluster cannot be reached, the schema cannot be created or a statement does
    /// not prepare (for example, the keyspace does not exist and `create_schema` is off).
    pub async fn connect(config: ScyllaConfig) -> StoreResult<Self> {
        validate_keyspace(&config.schema.keyspace).map_err(StoreError::Engine)?;
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.local_dc {
            policy = policy.prefer_datacenter(dc.clone()).permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency)
            .load_balancing_policy(policy.build())
            .request_timeout(Some(Duration::from_secs(10)))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(Duration::from_secs(5))
            .default_execution_profile_handle(profile.into_handle());
        if let Some((user, password)) = &config.credentials {
            builder = builder.user(user.clone(), password.clone());
        }
        let session = builder.build().await.map_err(cql)?;
        if config.create_schema {
            ensure_schema(&session, &config.schema).await?;
        }
        let ks = config.schema.keyspace.clone();
        let prep = |q: String| {
            let session = &session;
            async move {
                let mut p = session.prepare(q).await.map_err(cql)?;
                p.set_is_idempotent(true);
                p.set_page_size(1000);
                Ok::<_, StoreError>(p)
            }
        };
        let st = Statements {
            insert_dict: prep(format!("INSERT INTO {ks}.dictionaries (dict_id, seq, value) VALUES (?, ?, ?) USING TTL ?")).await?,
            insert_trace: prep(format!("INSERT INTO {ks}.traces (trace_id, chunk_id, block) VALUES (?, ?, ?) USING TTL ?")).await?,
            insert_index: prep(format!(
                "INSERT INTO {ks}.trace_index (service, bucket, page_end, page_id, page) VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            insert_bucket: prep(format!("INSERT INTO {ks}.service_buckets (service, bucket) VALUES (?, ?) USING TTL ?")).await?,
            insert_op: prep(format!("INSERT INTO {ks}.operations (service, span_kind, operation) VALUES (?, ?, ?) USING TTL ?")).await?,
            insert_dep: prep(format!(
                "INSERT INTO {ks}.dependencies (day, bucket_start, parent, child, batch_id, calls, errors) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            select_trace: prep(format!("SELECT block FROM {ks}.traces WHERE trace_id = ?")).await?,
            select_dict: prep(format!("SELECT seq, value FROM {ks}.dictionaries WHERE dict_id = ?")).await?,
            select_buckets: prep(format!(
                "SELECT bucket FROM {ks}.service_buckets WHERE service = ? AND bucket >= ? AND bucket <= ?"
            ))
            .await?,
            select_index: prep(format!(
                "SELECT page_end, page FROM {ks}.trace_index WHERE service = ? AND bucket = ? AND page_end >= ?"
            ))
            .await?,
            select_services: prep(format!("SELECT DISTINCT service FROM {ks}.operations")).await?,
            select_ops: prep(format!("SELECT span_kind, operation FROM {ks}.operations WHERE service = ?")).await?,
            select_deps: prep(format!(
                "SELECT bucket_start, parent, child, calls, errors FROM {ks}.dependencies WHERE day = ? AND bucket_start >= ? AND bucket_start <= ?"
            ))
            .await?,
        };
        Ok(Self { session, st, config, cache: Mutex::new(WriteCache::default()), dicts: Mutex::new(HashMap::new()) })
    }

    /// The driver session (the operator uses it for schema work).
    pub fn session(&self) -> &Session {
        &self.session
    }

    async fn execute_row(&self, row: &Row) -> StoreResult<()> {
        let mut backoff = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            let r = match row {
                Row::Dictionary { dict_id, seq, value, ttl } => {
                    self.session.execute_unpaged(&self.st.insert_dict, (dict_id, seq, value, ttl)).await
                }
                Row::Trace { trace_id, chunk_id, block, ttl } => {
                    self.session.execute_unpaged(&self.st.insert_trace, (trace_id, chunk_id, block, ttl)).await
                }
                Row::Index { service, bucket, page_end, page_id, page, ttl } => {
                    self.session
                        .execute_unpaged(&self.st.insert_index, (service, bucket, page_end, page_id, page, ttl))
                        .await
                }
                Row::ServiceBucket { service, bucket, ttl } => {
                    self.session.execute_unpaged(&self.st.insert_bucket, (service, bucket, ttl)).await
                }
                Row::Operation { service, span_kind, operation, ttl } => {
                    self.session.execute_unpaged(&self.st.insert_op, (service, span_kind, operation, ttl)).await
                }
                Row::Dependency { day, bucket_start, parent, child, batch_id, calls, errors, ttl } => {
                    self.session
                        .execute_unpaged(
                            &self.st.insert_dep,
                            (day, bucket_start, parent, child, batch_id, calls, errors, ttl),
                        )
                        .await
                }
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if attempt < self.config.max_attempts => {
                    tracing::debug!(error = %e, attempt, "scylla write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                Err(e) => return Err(cql(e)),
            }
        }
    }

    async fn execute_all(&self, rows: &[Row]) -> StoreResult<()> {
        let mut inflight = futures::stream::FuturesUnordered::new();
        let mut next = rows.iter();
        loop {
            while inflight.len() < self.config.max_concurrency.max(1) {
                match next.next() {
                    Some(row) => inflight.push(self.execute_row(row)),
                    None => break,
                }
            }
            match inflight.next().await {
                Some(result) => result?,
                None => return Ok(()),
            }
        }
    }

    async fn load_dictionary(&self, dict_id: u64, min_len: usize) -> StoreResult<Dictionary> {
        if let Some(d) = self.dicts.lock().unwrap_or_else(|p| p.into_inner()).get(&(dict_id as i64))
            && d.len() >= min_len
        {
            return Ok(d.clone());
        }
        let mut rows = self
            .session
            .execute_iter(self.st.select_dict.clone(), (dict_id as i64,))
            .await
            .map_err(cql)?
            .rows_stream::<(i32, Vec<u8>)>()
            .map_err(cql)?;
        let mut raw: Vec<Vec<u8>> = Vec::new();
        while let Some(row) = rows.next().await {
            let (seq, value) = row.map_err(cql)?;
            if seq != raw.len() as i32 {
                return Err(StoreError::Codec(CodecError::Corrupt("shared dictionary has a gap")));
            }
            raw.push(value);
        }
        if raw.len() < min_len {
            return Err(StoreError::Codec(CodecError::MissingDictionary(dict_id)));
        }
        let entries: Dictionary = skein_codec::decode_dictionary(raw.iter().map(Vec::as_slice))?.into();
        let mut cache = self.dicts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(dict_id as i64, entries.clone());
        Ok(entries)
    }

    async fn decode(&self, block: &[u8]) -> StoreResult<Vec<Span>> {
        let dict = match skein_codec::dictionary_of(block) {
            Ok(Some((id, len))) => Some((id, self.load_dictionary(id, len).await?)),
            _ => None,
        };
        struct Loaded(Option<(u64, Dictionary)>);
        impl DictLookup for Loaded {
            fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Dictionary, CodecError> {
                match &self.0 {
                    Some((id, d)) if *id == dict_id && d.len() >= min_len => Ok(d.clone()),
                    _ => Err(CodecError::MissingDictionary(dict_id)),
                }
            }
        }
        Ok(skein_codec::decode_with(block, &Loaded(dict))?)
    }

    async fn blocks(&self, trace_id: TraceId) -> StoreResult<Vec<Vec<u8>>> {
        self.session
            .execute_iter(self.st.select_trace.clone(), (trace_id.0.to_vec(),))
            .await
            .map_err(cql)?
            .rows_stream::<(Vec<u8>,)>()
            .map_err(cql)?
            .map(|r| r.map(|(b,)| b).map_err(cql))
            .try_collect()
            .await
    }
}

#[async_trait::async_trait]
impl TraceStore for ScyllaStore {
    fn partition_secs(&self) -> u64 {
        BUCKET_SECS
    }

    async fn write(&self, batch: std::sync::Arc<WriteBatch>) -> StoreResult<()> {
        let rows = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            plan_rows(&batch, self.config.retention, self.config.retention_important, &mut cache)
        };
        let split = rows.iter().position(|r| !matches!(r, Row::Dictionary { .. })).unwrap_or(rows.len());
        let result = async {
            self.execute_all(&rows[..split]).await?;
            self.execute_all(&rows[split..]).await
        }
        .await;
        if result.is_err() {
            // Rows the cache marked as written may not have landed; forget them so the retry writes them.
            self.cache.lock().unwrap_or_else(|p| p.into_inner()).seen.clear();
        }
        result
    }

    async fn get_trace(&self, trace_id: TraceId) -> StoreResult<Option<Vec<Span>>> {
        let blocks = self.blocks(trace_id).await?;
        if blocks.is_empty() {
            return Ok(None);
        }
        let mut chunks = Vec::with_capacity(blocks.len());
        for b in &blocks {
            chunks.push(self.decode(b).await?);
        }
        Ok(Some(merge_chunks(chunks)))
    }

    async fn find_traces(&self, q: TraceQuery) -> StoreResult<FoundTraces> {
        let mut found = FoundTraces::default();
        if q.limit == 0 || q.start_min_unix_nanos > q.start_max_unix_nanos {
            return Ok(found);
        }
        let scan_min = q.scan_start_min_unix_nanos();
        let lo_bucket = (scan_min / 1_000_000_000 / BUCKET_SECS) as i64;
        let hi_bucket = (q.start_max_unix_nanos / 1_000_000_000 / BUCKET_SECS) as i64;
        let mut buckets: Vec<i64> = self
            .session
            .execute_iter(self.st.select_buckets.clone(), (&q.service, lo_bucket, hi_bucket))
            .await
            .map_err(cql)?
            .rows_stream::<(i64,)>()
            .map_err(cql)?
            .map(|r| r.map(|(b,)| b).map_err(cql))
            .try_collect()
            .await?;
        buckets.sort_unstable_by(|a, b| b.cmp(a));
        let lo = i64::try_from(scan_min).unwrap_or(i64::MAX);
        let mut seen = HashSet::new();
        // Buckets newest first; inside a bucket, pages by newest entry first, merged so that entries come newest
        // first overall: stop as soon as the limit is reached.
        for bucket in buckets {
            let mut rows = self
                .session
                .execute_iter(self.st.select_index.clone(), (&q.service, bucket, lo))
                .await
                .map_err(cql)?
                .rows_stream::<(i64, Vec<u8>)>()
                .map_err(cql)?;
            let mut merger = PageMerger::default();
            let mut next_page: Option<(i64, Vec<u8>)> = rows.next().await.transpose().map_err(cql)?;
            loop {
                if found.traces.len() >= q.limit {
                    return Ok(found);
                }
                while let Some((_, page)) = next_page.take_if(|(end, _)| merger.needs(*end as u64)) {
                    merger.push(decode_page(&page)?, scan_min, q.start_max_unix_nanos);
                    next_page = rows.next().await.transpose().map_err(cql)?;
                }
                let Some(e) = merger.pop() else { break };
                let trace_id = e.trace_id;
                if seen.contains(&trace_id) {
                    continue;
                }
                let entry = IndexEntry::decode_value(q.service.clone(), trace_id, e.start_unix_nanos, &e.value)?;
                if !entry.may_match(&q) {
                    continue;
                }
                let verify = q.needs_verification(&entry);
                let outcome =
                    self.get_trace(trace_id).await.map(|t| t.filter(|spans| !verify || q.matches_spans(spans)));
                if found.record(trace_id, outcome)? {
                    seen.insert(trace_id);
                }
            }
        }
        Ok(found)
    }

    async fn services(&self) -> StoreResult<Vec<String>> {
        let mut out: Vec<String> = self
            .session
            .execute_iter(self.st.select_services.clone(), ())
            .await
            .map_err(cql)?
            .rows_stream::<(String,)>()
            .map_err(cql)?
            .map(|r| r.map(|(s,)| s).map_err(cql))
            .try_collect()
            .await?;
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn operations(&self, service: &str, kind: Option<SpanKind>) -> StoreResult<Vec<Operation>> {
        let rows: Vec<(i32, String)> = self
            .session
            .execute_iter(self.st.select_ops.clone(), (service,))
            .await
            .map_err(cql)?
            .rows_stream::<(i32, String)>()
            .map_err(cql)?
            .map(|r| r.map_err(cql))
            .try_collect()
            .await?;
        let mut out: Vec<Operation> = rows
            .into_iter()
            .filter(|(k, _)| kind.is_none_or(|want| want.0 == *k))
            .map(|(k, name)| Operation { name, kind: SpanKind(k) })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn dependencies(&self, end_unix_nanos: u64, lookback_nanos: u64) -> StoreResult<Vec<DependencyLink>> {
        let end_secs = end_unix_nanos / 1_000_000_000;
        let start_secs = end_unix_nanos.saturating_sub(lookback_nanos) / 1_000_000_000;
        let first_bucket = start_secs / skein_model::dependencies::BUCKET_SECS * skein_model::dependencies::BUCKET_SECS;
        let first_day = (first_bucket / DAY_SECS).max((end_secs / DAY_SECS).saturating_sub(MAX_DEPENDENCY_DAYS));
        let mut edges = Vec::new();
        for day in first_day..=end_secs / DAY_SECS {
            let rows: Vec<(i64, String, String, i64, i64)> = self
                .session
                .execute_iter(self.st.select_deps.clone(), (day as i64, first_bucket as i64, end_secs as i64))
                .await
                .map_err(cql)?
                .rows_stream::<(i64, String, String, i64, i64)>()
                .map_err(cql)?
                .map(|r| r.map_err(cql))
                .try_collect()
                .await?;
            edges.extend(rows.into_iter().map(|(bucket, parent, child, calls, errors)| DependencyEdge {
                bucket_start_secs: bucket as u64,
                parent,
                child,
                calls: calls.max(0) as u64,
                errors: errors.max(0) as u64,
            }));
        }
        Ok(sum_edges(edges))
    }
}

#[cfg(test)]
mod tests;
