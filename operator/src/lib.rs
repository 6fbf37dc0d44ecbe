//! Skein's Kubernetes operator.
//!
//! It watches `TracingPipeline` objects ([`crd`]) and reconciles each ([`controller`]) into the collector's
//! ConfigMap, Deployments or StatefulSet, Services, PodDisruptionBudget and HorizontalPodAutoscaler built by pure
//! functions ([`resources`]), creates the ScyllaDB keyspace and tables through the collector's schema module
//! ([`schema`]), and reports what it saw in the object's status. [`run`] wires it up with leader election, metrics
//! and health endpoints ([`metrics`]).

pub mod agents;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod events;
pub mod inject;
pub mod metrics;
pub mod resources;
pub mod run;
pub mod schema;
pub mod webhook;

#[cfg(test)]
mod fixtures;

/// Name of the operator in server-side apply (`fieldManager`), Events and the leader Lease.
pub const FIELD_MANAGER: &str = "skein-operator";

/// Finalizer held by pipelines whose ScyllaDB keyspace is dropped on deletion (`reclaimPolicy: Delete`).
pub const FINALIZER: &str = "skein.dev/keyspace";

/// Everything that can fail in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
    /// The spec cannot be turned into objects.
    #[error("invalid spec: {0}")]
    InvalidSpec(resources::InvalidSpec),
    /// ScyllaDB could not be reached or the schema could not be applied.
    #[error("storage: {0}")]
    Storage(#[source] schema::SchemaError),
    /// The object has no namespace or uid (it did not come from the API server).
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// A builder produced JSON that does not match its Kubernetes type (a bug).
    #[error("building {kind}: {message}")]
    Build {
        /// The object kind.
        kind: &'static str,
        /// serde's message.
        message: String,
    },
}

impl Error {
    /// A short, bounded label for metrics (`skein_operator_reconcile_errors_total{error=…}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Storage(_) => "storage",
            Self::MissingField(_) => "missing_field",
            Self::Build { .. } => "build",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
