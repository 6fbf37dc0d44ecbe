//! The ScyllaDB schema as versioned CQL migrations (DESIGN §4). The operator calls [`ensure_schema`] to create a
//! pipeline's keyspace; the collector and query binaries call it at start. Every statement is idempotent
//! (`IF NOT EXISTS`), and applied versions are recorded in `schema_version`, so running it again, or from several
//! replicas at once, is safe.

use ::scylla::client::session::Session;
pub use skein_config::scylla::{Replication, validate_keyspace};

use super::super::{StoreError, StoreResult};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// What the schema depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaConfig {
    /// Keyspace name (letters, digits, underscore; at most 48 characters).
    pub keyspace: String,
    /// Replication of the keyspace.
    pub replication: Replication,
    /// Table default TTL, seconds (= the standard retention; important traces are written with a longer TTL).
    pub default_ttl_secs: u64,
    /// Index time-bucket length, seconds; TimeWindowCompactionStrategy windows are sized to it.
    pub bucket_secs: u64,
}

fn replication_cql(r: &Replication) -> String {
    match r {
        Replication::Simple { replication_factor } => {
            format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
        }
        Replication::NetworkTopology { datacenters } => {
            let dcs: Vec<String> =
                datacenters.iter().map(|(dc, rf)| format!("'{}': {rf}", dc.replace('\'', "''"))).collect();
            format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
        }
    }
}

/// The keyspace statement.
pub fn keyspace_cql(c: &SchemaConfig) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {} AND durable_writes = true",
        c.keyspace,
        replication_cql(&c.replication)
    )
}

/// The migrations, oldest first: `(version, statements)`.
pub fn migrations(c: &SchemaConfig) -> Vec<(i32, Vec<String>)> {
    let ks = &c.keyspace;
    let ttl = c.default_ttl_secs.min(i32::MAX as u64);
    let window_hours = (c.bucket_secs / 3600).max(1);
    let twcs = format!(
        "compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', \
         'compaction_window_size': {window_hours}}} AND default_time_to_live = {ttl} AND gc_grace_seconds = 10800"
    );
    vec![(
        1,
        vec![
            // One row per trace chunk: the trace block (the skein-codec crate).
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.traces (trace_id blob, chunk_id bigint, block blob, \
                 PRIMARY KEY (trace_id, chunk_id)) WITH {twcs}"
            ),
            // Index pages: a write batch's index entries (storage/index.rs) of one service and bucket in one row,
            // newest page (by its newest entry) first.
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.trace_index (service text, bucket bigint, page_end bigint, \
                 page_id bigint, page blob, \
                 PRIMARY KEY ((service, bucket), page_end, page_id)) \
                 WITH CLUSTERING ORDER BY (page_end DESC, page_id ASC) AND {twcs}"
            ),
            // Which buckets hold index rows for a service (written once per service and bucket per writer).
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.service_buckets (service text, bucket bigint, \
                 PRIMARY KEY (service, bucket)) WITH CLUSTERING ORDER BY (bucket DESC) AND default_time_to_live = {ttl}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.operations (service text, span_kind int, operation text, \
                 PRIMARY KEY (service, span_kind, operation)) WITH default_time_to_live = {ttl}"
            ),
            // Dependency edges summed per write batch and 60 s bucket; reads add the rows up.
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.dependencies (day bigint, bucket_start bigint, parent text, \
                 child text, batch_id bigint, calls bigint, errors bigint, \
                 PRIMARY KEY (day, bucket_start, parent, child, batch_id)) WITH default_time_to_live = {ttl}"
            ),
            // Shared dictionaries of trace blocks (codec v2).
            format!(
                "CREATE TABLE IF NOT EXISTS {ks}.dictionaries (dict_id bigint, seq int, value blob, \
                 PRIMARY KEY (dict_id, seq)) WITH default_time_to_live = {ttl}"
            ),
        ],
    )]
}

/// Creates the keyspace and applies every migration not yet recorded in `schema_version`. Idempotent.
///
/// # Errors
/// [`StoreError::Engine`] when a statement fails or the cluster does not reach schema agreement.
pub async fn ensure_schema(session: &Session, c: &SchemaConfig) -> StoreResult<i32> {
    validate_keyspace(&c.keyspace).map_err(StoreError::Engine)?;
    let cql_err = |e: &dyn std::fmt::Display| StoreError::Engine(format!("schema: {e}"));
    session.query_unpaged(keyspace_cql(c), ()).await.map_err(|e| cql_err(&e))?;
    let ks = &c.keyspace;
    session
        .query_unpaged(
            format!("CREATE TABLE IF NOT EXISTS {ks}.schema_version (version int PRIMARY KEY, applied_at_ms bigint)"),
            (),
        )
        .await
        .map_err(|e| cql_err(&e))?;
    session.await_schema_agreement().await.map_err(|e| cql_err(&e))?;
    let applied: Vec<i32> = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_version"), ())
        .await
        .map_err(|e| cql_err(&e))?
        .into_rows_result()
        .map_err(|e| cql_err(&e))?
        .rows::<(i32,)>()
        .map_err(|e| cql_err(&e))?
        .map(|r| r.map(|(v,)| v))
        .collect::<Result<_, _>>()
        .map_err(|e| cql_err(&e))?;
    let mut current = applied.iter().copied().max().unwrap_or(0);
    for (version, statements) in migrations(c) {
        if applied.contains(&version) {
            continue;
        }
        for s in statements {
            session.query_unpaged(s, ()).await.map_err(|e| cql_err(&e))?;
        }
        session.await_schema_agreement().await.map_err(|e| cql_err(&e))?;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.schema_version (version, applied_at_ms) VALUES (?, ?)"),
                (version, now_ms),
            )
            .await
            .map_err(|e| cql_err(&e))?;
        tracing::info!(keyspace = %ks, version, "schema migration applied");
        current = current.max(version);
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(replication: Replication) -> SchemaConfig {
        SchemaConfig { keyspace: "skein_prod".into(), replication, default_ttl_secs: 72 * 3600, bucket_secs: 3600 }
    }

    #[test]
    fn keyspace_replication_follows_config() {
        let simple = keyspace_cql(&config(Replication::Simple { replication_factor: 1 }));
        assert!(simple.contains("'class': 'SimpleStrategy', 'replication_factor': 1"), "{simple}");
        let nts = keyspace_cql(&config(Replication::NetworkTopology {
            datacenters: [("dc1".to_string(), 3), ("dc2".to_string(), 2)].into_iter().collect(),
        }));
        assert!(nts.contains("'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2"), "{nts}");
        assert!(nts.starts_with("CREATE KEYSPACE IF NOT EXISTS skein_prod "));
    }

    #[test]
    fn tables_carry_ttl_and_twcs_sized_to_the_bucket() {
        let all: Vec<String> = migrations(&config(Replication::Simple { replication_factor: 1 }))
            .into_iter()
            .flat_map(|(_, s)| s)
            .collect();
        for table in ["traces", "trace_index", "operations", "dependencies", "dictionaries", "service_buckets"] {
            let stmt = all.iter().find(|s| s.contains(&format!("skein_prod.{table} "))).expect(table);
            assert!(stmt.contains("IF NOT EXISTS"), "{stmt}");
            assert!(stmt.contains("default_time_to_live = 259200"), "{stmt}");
        }
        let index = all.iter().find(|s| s.contains(".trace_index ")).expect("index");
        assert!(index.contains("'compaction_window_size': 1") && index.contains("page_end DESC"), "{index}");
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(validate_keyspace("skein_default").is_ok());
        for bad in ["", "1abc", "a-b", "a; DROP KEYSPACE x", &"a".repeat(49)] {
            assert!(validate_keyspace(bad).is_err(), "{bad}");
        }
    }
}
