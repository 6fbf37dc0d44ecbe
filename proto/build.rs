//! Builds Skein's `.proto` files with tonic. `protoc` comes from `protoc-bin-vendored` unless `PROTOC` is set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_with_config(
        config,
        &["proto/jaeger/api_v2/sampling.proto"],
        &["proto"],
    )?;
    Ok(())
}
