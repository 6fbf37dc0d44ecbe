//! ScyllaDB keyspaces for pipelines: create or migrate through the collector's schema module
//! (`skein_storage::scylla::ensure_schema`), drop on deletion with `reclaimPolicy: Delete`.
//!
//! The controller talks to a [`SchemaManager`] so reconciler tests can stand in for a cluster; [`Scylla`] is the
//! real one.

use std::time::Duration;

use async_trait::async_trait;
use scylla::client::session_builder::SessionBuilder;
use skein_storage::scylla::{SCHEMA_VERSION, ensure_schema, validate_keyspace};

use crate::resources::ScyllaTarget;

/// Username and password for `PasswordAuthenticator`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// A schema operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// No contact point answered (condition reason `ScyllaUnreachable`).
    #[error("cannot connect to {contact_points}: {message}")]
    Unreachable {
        /// The contact points tried.
        contact_points: String,
        /// The driver's message.
        message: String,
    },
    /// Connected, but a statement failed (condition reason `SchemaMigrationFailed`).
    #[error("{0}")]
    Migration(String),
    /// The credentials Secret is missing or lacks `username`/`password` (condition reason `CredentialsMissing`).
    #[error("{0}")]
    Credentials(String),
}

impl SchemaError {
    /// The `StorageReady` condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "ScyllaUnreachable",
            Self::Migration(_) => "SchemaMigrationFailed",
            Self::Credentials(_) => "CredentialsMissing",
        }
    }
}

/// Creates, migrates and drops pipeline keyspaces.
#[async_trait]
pub trait SchemaManager: Send + Sync {
    /// Creates the keyspace and tables or applies missing migrations; returns the schema version now in place.
    ///
    /// # Errors
    /// [`SchemaError`] when the cluster cannot be reached or a statement fails.
    async fn ensure(&self, target: &ScyllaTarget, credentials: Option<&Credentials>) -> Result<i32, SchemaError>;

    /// Drops the keyspace (`DROP KEYSPACE IF EXISTS`).
    ///
    /// # Errors
    /// [`SchemaError`] when the cluster cannot be reached or the statement fails.
    async fn drop_keyspace(&self, target: &ScyllaTarget, credentials: Option<&Credentials>) -> Result<(), SchemaError>;
}

/// The real [`SchemaManager`]: one short-lived session per operation (schema work is rare).
#[derive(Clone, Debug)]
pub struct Scylla {
    /// Connection timeout per contact point.
    pub connect_timeout: Duration,
}

impl Default for Scylla {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_secs(5) }
    }
}

impl Scylla {
    async fn session(
        &self,
        target: &ScyllaTarget,
        credentials: Option<&Credentials>,
    ) -> Result<scylla::client::session::Session, SchemaError> {
        let mut builder =
            SessionBuilder::new().known_nodes(&target.contact_points).connection_timeout(self.connect_timeout);
        if let Some(c) = credentials {
            builder = builder.user(&c.username, &c.password);
        }
        // The whole connect (DNS, TCP, handshake, topology) is bounded, not just each TCP attempt.
        match tokio::time::timeout(self.connect_timeout * 2, builder.build()).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(SchemaError::Unreachable {
                contact_points: target.contact_points.join(","),
                message: e.to_string(),
            }),
            Err(_) => Err(SchemaError::Unreachable {
                contact_points: target.contact_points.join(","),
                message: format!("timed out after {:?}", self.connect_timeout * 2),
            }),
        }
    }
}

#[async_trait]
impl SchemaManager for Scylla {
    async fn ensure(&self, target: &ScyllaTarget, credentials: Option<&Credentials>) -> Result<i32, SchemaError> {
        let session = self.session(target, credentials).await?;
        let version =
            ensure_schema(&session, &target.schema).await.map_err(|e| SchemaError::Migration(e.to_string()))?;
        if version < SCHEMA_VERSION {
            return Err(SchemaError::Migration(format!(
                "keyspace {} is at schema version {version}, this operator needs {SCHEMA_VERSION}",
                target.schema.keyspace
            )));
        }
        Ok(version)
    }

    async fn drop_keyspace(&self, target: &ScyllaTarget, credentials: Option<&Credentials>) -> Result<(), SchemaError> {
        validate_keyspace(&target.schema.keyspace).map_err(SchemaError::Migration)?;
        let session = self.session(target, credentials).await?;
        session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", target.schema.keyspace), ())
            .await
            .map_err(|e| SchemaError::Migration(format!("drop keyspace {}: {e}", target.schema.keyspace)))?;
        tracing::info!(keyspace = %target.schema.keyspace, "keyspace dropped (reclaimPolicy: Delete)");
        Ok(())
    }
}
