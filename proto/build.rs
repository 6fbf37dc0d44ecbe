//! Builds Skein's `.proto` files with tonic. `protoc` comes from `protoc-bin-vendored` unless `PROTOC` is set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    // The query API returns OTLP messages: use the opentelemetry-proto crate's types for them (the imported
    // `.proto` files under proto/opentelemetry are read by protoc only).
    config.extern_path(".opentelemetry.proto", "::opentelemetry_proto::tonic");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &["proto/jaeger/api_v2/sampling.proto", "proto/skein/query/v1/query.proto"],
        &["proto"],
    )?;
    Ok(())
}
