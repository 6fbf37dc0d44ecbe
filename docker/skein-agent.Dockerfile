# syntax=docker/dockerfile:1
# skein-agent: the sidecar the operator injects (built with the small `agent` profile: fat LTO, stripped).
#
# Build from the repository root:
#   docker build -f docker/skein-agent.Dockerfile -t ghcr.io/skein-dev/skein-agent:$VERSION .   # VERSION: the workspace version in Cargo.toml
# Multi-stage: the build image compiles the binary; the runtime image is distroless (glibc, CA certificates, no
# shell, no package manager) and runs as the unprivileged "nonroot" user 65532.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the build image needs nothing beyond Rust and a C compiler.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile agent -p skein-agent --bin skein-agent \
    && cp target/agent/skein-agent /skein-agent

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skein-agent /usr/local/bin/skein-agent
USER 65532:65532
EXPOSE 4317 4318 5778 14271
ENTRYPOINT ["/usr/local/bin/skein-agent"]
