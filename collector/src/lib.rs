//! Skein's collector: OTLP ingest, trace assembly, the trace-block codec, storage and the Jaeger-compatible
//! query API.
//!
//! Data flow (DESIGN §1): [`ingest`] receivers validate OTLP into the [`model`], [`assembly`] groups spans by
//! trace, [`writer`] encodes trace chunks with [`codec`] and persists them through the [`storage::TraceStore`]
//! trait together with their index entries and [`dependencies`]; [`query`] answers Jaeger's API from the store.
//! [`server`] wires it all into `skein-all-in-one`; [`formats`] reads the datasets `skein-replay` sends.

pub mod assembly;
pub mod cli;
pub mod codec;
pub mod config;
pub mod dependencies;
pub mod formats;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod query;
pub mod sampling;
pub mod server;
pub mod storage;
pub mod synthetic;
pub mod wal;
pub mod writer;

use std::net::SocketAddr;

/// Collector errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] storage::StoreError),
    /// An I/O operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A server stopped with an error.
    #[error("server: {0}")]
    Serve(String),
    /// The configuration file is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// Collector result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
