# syntax=docker/dockerfile:1
# skein-query: the Jaeger-compatible query API (HTTP 16686, gRPC 16685).
#
# Build from the repository root:
#   docker build -f docker/skein-query.Dockerfile -t ghcr.io/skein-dev/skein-query:$VERSION .   # VERSION: the workspace version in Cargo.toml
# Multi-stage: the build image compiles the binary; the runtime image is distroless (glibc, CA certificates, no
# shell, no package manager) and runs as the unprivileged "nonroot" user 65532.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the build image needs nothing beyond Rust and a C compiler.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile release -p skein-collector --bin skein-query \
    && cp target/release/skein-query /skein-query

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skein-query /usr/local/bin/skein-query
USER 65532:65532
EXPOSE 16686 16685 16687
ENTRYPOINT ["/usr/local/bin/skein-query"]
