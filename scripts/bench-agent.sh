#!/usr/bin/env bash
# Agent footprint benchmark (issue #5): `skein-bench agent` starts a release skein-all-in-one and skein-agent and
# sends a fixed span rate through the agent. Writes bench/results/agent-<payload>.json.
#   scripts/bench-agent.sh [testbed|synthetic] [spans_per_s] [duration_s]
set -euo pipefail
cd "$(dirname "$0")/.."
payload="${1:-testbed}"
rate="${2:-10000}"
duration="${3:-60}"
# The agent in its shipping profile (LTO, no symbols; see Cargo.toml), the rest in release.
cargo build --release -q -p skein-collector -p skein-bench --bins
cargo build --profile agent -q -p skein-agent
target="${CARGO_TARGET_DIR:-target}"
mkdir -p bench/results
"$target/release/skein-bench" agent --agent-bin "$target/agent/skein-agent" --spans-per-s "$rate" \
  --duration-s "$duration" --payload "$payload" \
  --report "bench/results/agent-$payload.json"
