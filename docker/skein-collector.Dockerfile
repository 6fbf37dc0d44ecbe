# syntax=docker/dockerfile:1
# skein-collector: OTLP ingest, tail sampling and storage for ScyllaDB pipelines.
#
# Build from the repository root:
#   docker build -f docker/skein-collector.Dockerfile -t ghcr.io/skein-dev/skein-collector:$VERSION .   # VERSION: the workspace version in Cargo.toml
# Multi-stage: the build image compiles the binary; the runtime image is distroless (glibc, CA certificates, no
# shell, no package manager) and runs as the unprivileged "nonroot" user 65532.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the build image needs nothing beyond Rust and a C compiler.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile release -p skein-collector --bin skein-collector \
    && cp target/release/skein-collector /skein-collector

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skein-collector /usr/local/bin/skein-collector
USER 65532:65532
EXPOSE 4317 4318 9411 5778 5779 14269
ENTRYPOINT ["/usr/local/bin/skein-collector"]
