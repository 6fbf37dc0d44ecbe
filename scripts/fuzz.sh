#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for a given time each and reports executions and crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET=600] [TARGET...]
#
# Seeds come from `skein-fuzz-seeds` (valid inputs of each kind); the corpus grows in fuzz/corpus/<target>/.
# A crash is copied to fuzz/regressions/<target>/ (replayed in CI by fuzz/checks/tests/regressions.rs): fix the
# bug, commit the input. The report (executions, coverage, crashes per target) goes to
# fuzz/reports/<date>.txt. Runs outside CI: it needs minutes to hours, not the suite's budget.
#
# cargo-fuzz needs nightly-only compiler flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP=1, set here
# for the fuzz build only. SANITIZER (default none) picks cargo-fuzz's sanitizer: Skein's own code forbids
# `unsafe`, so a panic (the checks' oracle) is what fuzzing looks for, and without AddressSanitizer each target
# runs about three times as many executions; SANITIZER=address checks the dependencies' unsafe code as well.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(otlp_protobuf otlp_json zipkin_json decode_block jaeger_query admission_review trace_context)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
sanitizer="${SANITIZER:-none}"
cargo run -q --release -p skein-fuzz-checks --bin skein-fuzz-seeds -- fuzz/corpus
# The fuzz build's flags differ from every other build's: it gets its own target directory (fuzz/target).
unset CARGO_TARGET_DIR
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/reports
report="fuzz/reports/$(date -u +%Y%m%dT%H%M%SZ).txt"
echo "# scripts/fuzz.sh $secs ${targets[*]} on $(git rev-parse --short HEAD), $(nproc) cores, sanitizer $sanitizer" | tee "$report"
cd fuzz
cargo fuzz build -O -s "$sanitizer"
for t in "${targets[@]}"; do
  log="$(mktemp)"
  status=0
  cargo fuzz run -O -s "$sanitizer" "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096 \
    -timeout=10 >"$log" 2>&1 || status=$?
  execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
  crashes=0
  if [ -d "artifacts/$t" ]; then
    mkdir -p "regressions/$t"
    for a in artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-*; do
      [ -e "$a" ] || continue
      cp "$a" "regressions/$t/" && crashes=$((crashes + 1))
    done
  fi
  printf '%-18s executions %12s  coverage %6s  exit %d  crashes %d\n' "$t" "${execs:-?}" "${cov:-?}" "$status" \
    "$crashes" | tee -a "../$report"
  if [ "$status" -ne 0 ]; then
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 | sed 's/^/    /' | tee -a "../$report" || true
  fi
  rm -f "$log"
done
echo "report: $report"
