//! Skein's server binaries: `skein-all-in-one`, `skein-collector` and `skein-query`. Each is the union of the
//! components it runs ([`server::Runs`]): ingest and remote sampling (`skein-ingest`), query (`skein-query`), the
//! admin endpoints ([`admin`]) and, on the embedded store, retention (`skein-storage`). [`cli`] holds the flags
//! they share and their `main`.
//!
//! This crate only wires components together; what a component does lives in its own crate (see ARCHITECTURE.md).

pub mod admin;
pub mod cli;
pub mod server;

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
    Store(#[from] skein_storage::StoreError),
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
