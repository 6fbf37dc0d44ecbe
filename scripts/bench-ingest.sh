#!/usr/bin/env bash
# Ingest benchmark (issue #4): a release skein-all-in-one with the write-ahead log and tail sampling on, loaded by
# `skein-bench ingest` at saturation. Writes bench/results/ingest-<payload>.json.
#   scripts/bench-ingest.sh [testbed|synthetic] [clients] [duration_s]
set -euo pipefail
cd "$(dirname "$0")/.."
payload="${1:-testbed}"
clients="${2:-8}"
duration="${3:-30}"
cargo build --release -q -p skein-collector -p skein-bench --bins
target="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/skein.yaml" <<'YAML'
tail_sampling:
  decision_wait: 2s
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: slow, type: latency, latency: {threshold_ms: 500}}
    - {name: half, type: probabilistic, probabilistic: {sampling_percentage: 50}}
YAML
"$target/skein-all-in-one" --data-dir "$work/data" --config "$work/skein.yaml" \
  --otlp-grpc-addr 127.0.0.1:14317 --otlp-http-addr 127.0.0.1:14318 --query-http-addr 127.0.0.1:26686 --query-grpc-addr 127.0.0.1:26685 \
  --admin-addr 127.0.0.1:24269 --zipkin-addr 127.0.0.1:19411 --sampling-http-addr 127.0.0.1:15778 \
  --sampling-grpc-addr 127.0.0.1:15779 2> "$work/server.log" &
pid=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:24269/readyz >/dev/null && break; sleep 0.1; done
mkdir -p bench/results
"$target/skein-bench" ingest --endpoint http://127.0.0.1:14317 --clients "$clients" --duration-s "$duration" \
  --payload "$payload" --pid "$pid" --report "bench/results/ingest-$payload.json"
curl -s 127.0.0.1:24269/metrics | grep -E '^skein_(spans_refused|traces_sampled|wal_fsync_seconds_(sum|count)|spans_written)' || true
