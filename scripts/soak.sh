#!/usr/bin/env bash
# Soak (issue #10): app → skein-agent → skein-all-in-one → embedded store at a fixed rate, release builds.
#   scripts/soak.sh [DURATION_S=600] [SPANS_PER_S=34500]
# The default rate is half of #4's measured ingest capacity (68,929 spans/s, bench/results/ingest-synthetic.json).
# Writes bench/results/soak.json (spans sent/stored/lost, drops, end-to-end latency percentiles, RSS per process)
# and bench/results/soak-rss.svg (RSS of each process, sampled every second). Fails when a span is lost.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-600}"
rate="${2:-34500}"
cargo build --release -q -p skein-collector -p skein-agent -p skein-bench --bins
mkdir -p bench/results
"${CARGO_TARGET_DIR:-target}/release/skein-bench" soak --duration-s "$duration" --spans-per-s "$rate" \
  --report bench/results/soak.json --svg bench/results/soak-rss.svg 2> >(grep -v '^\[skein-' >&2)
