# syntax=docker/dockerfile:1
# skein-all-in-one: the whole backend on the embedded store (embedded-storage pipelines, single machines).
#
# Build from the repository root:
#   docker build -f docker/skein-all-in-one.Dockerfile -t ghcr.io/skein-dev/skein-all-in-one:$VERSION .   # VERSION: the workspace version in Cargo.toml
# Multi-stage: the build image compiles the binary; the runtime image is distroless (glibc, CA certificates, no
# shell, no package manager) and runs as the unprivileged "nonroot" user 65532.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the build image needs nothing beyond Rust and a C compiler.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile release -p skein-collector --bin skein-all-in-one \
    && cp target/release/skein-all-in-one /skein-all-in-one

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /skein-all-in-one /usr/local/bin/skein-all-in-one
USER 65532:65532
EXPOSE 4317 4318 9411 5778 5779 16686 14269
ENTRYPOINT ["/usr/local/bin/skein-all-in-one"]
