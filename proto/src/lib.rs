//! Skein's wire types.
//!
//! OTLP comes from the `opentelemetry-proto` crate (tonic codegen, with serde for the OTLP JSON encoding);
//! this crate re-exports it so that every other Skein crate names one source of truth for the wire format.
//! Skein's own APIs (query, remote sampling) are added here as `.proto` files built with tonic when the issues
//! that need them land.

pub mod otlp_grpc;
pub mod otlp_http;
pub mod sampling;

/// Jaeger's remote-sampling API (`jaeger.api_v2`, `proto/jaeger/api_v2/sampling.proto`): the
/// `SamplingManager` gRPC service and its messages, wire-compatible with Jaeger's.
#[allow(missing_docs, clippy::all)]
pub mod jaeger_sampling {
    tonic::include_proto!("jaeger.api_v2");
}

pub use opentelemetry_proto::tonic::{
    collector::trace::v1 as otlp_collector_trace, common::v1 as otlp_common, resource::v1 as otlp_resource,
    trace::v1 as otlp_trace,
};

/// The OTLP trace service client.
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client;
/// The OTLP trace service server (gRPC `opentelemetry.proto.collector.trace.v1.TraceService`).
pub use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server;
