# syntax=docker/dockerfile:1
# skein-operator: reconciles TracingPipelines and serves the admission webhooks.
#
# Build from the repository root:
#   docker build -f docker/skein-operator.Dockerfile -t ghcr.io/skein-dev/skein-operator:$VERSION .   # VERSION: the workspace version in Cargo.toml
# Multi-stage: the build image compiles the binary; the runtime image is distroless (glibc, CA certificates, no
# shell, no package manager) and runs as the unprivileged "nonroot" user 65532.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the build image needs nothing beyond Rust and a C compiler.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile release -p skein-operator --bin skein-operator \
    && cp target/release/skein-operator /skein-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skein-operator /usr/local/bin/skein-operator
USER 65532:65532
EXPOSE 8080 9443
ENTRYPOINT ["/usr/local/bin/skein-operator"]
