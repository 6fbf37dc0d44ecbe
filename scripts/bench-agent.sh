#!/usr/bin/env bash
# Agent footprint benchmark (issue #5): `skein-bench agent` starts a release skein-all-in-one and skein-agent and
# sends a fixed span rate through the agent. Writes bench/results/agent-<payload>.json.
#   scripts/bench-agent.sh [spans_per_s] [duration_s] [payload: testbed|synthetic]
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-10000}"
duration="${2:-60}"
payload="${3:-testbed}"
cargo build --release -q -p skein-collector -p skein-agent -p skein-bench --bins
target="${CARGO_TARGET_DIR:-target}/release"
mkdir -p bench/results
"$target/skein-bench" agent --spans-per-s "$rate" --duration-s "$duration" --payload "$payload" \
  --report "bench/results/agent-$payload.json"
