//! Skein's wire types.
//!
//! OTLP comes from the `opentelemetry-proto` crate (tonic codegen, with serde for the OTLP JSON encoding);
//! this crate re-exports it so that every other Skein crate names one source of truth for the wire format.
//! Skein's own APIs (the query API, Jaeger's remote sampling) are `.proto` files under `proto/` built with tonic.

pub mod otlp_grpc;
pub mod otlp_http;
pub mod sampling;
pub mod wire;

/// Jaeger's remote-sampling API (`jaeger.api_v2`, `proto/jaeger/api_v2/sampling.proto`): the
/// `SamplingManager` gRPC service and its messages, wire-compatible with Jaeger's.
#[allow(missing_docs, clippy::all)]
pub mod jaeger_sampling {
    tonic::include_proto!("jaeger.api_v2");
}

/// Skein's query API (`skein.query.v1`, `proto/skein/query/v1/query.proto`): the `QueryService` gRPC service
/// (port 16685) and its messages; traces are OTLP `TracesData` from the `opentelemetry-proto` crate.
#[allow(missing_docs, clippy::all)]
pub mod query {
    tonic::include_proto!("skein.query.v1");
}

pub use opentelemetry_proto::tonic::{
    collector::trace::v1 as otlp_collector_trace, common::v1 as otlp_common, resource::v1 as otlp_resource,
    trace::v1 as otlp_trace,
};

/// The OTLP trace service client.
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client;
/// The OTLP trace service server (gRPC `opentelemetry.proto.collector.trace.v1.TraceService`).
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server;
