//! Trace datasets for tests, benchmarks and demos: readers of the shipped formats ([`formats`]: OTLP JSON, Jaeger
//! JSON and Elasticsearch documents, Zipkin v2 JSON, Nezha CSV → OTLP), a seeded synthetic traffic generator
//! ([`synthetic`]) and the `skein-replay` binary that sends either to any OTLP/gRPC endpoint.
//!
//! Offline code only: the live receivers must not import this crate (the Zipkin receiver uses
//! `skein_model::zipkin`, which the Zipkin reader here shares). It must not import any Skein crate but
//! `skein-model` and `skein-proto`.

pub mod formats;
pub mod synthetic;
