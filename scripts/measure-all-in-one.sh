#!/usr/bin/env bash
# Measures a release skein-all-in-one on the shipped datasets: skein-replay throughput (spans/s), stored bytes per
# span (data dir size / spans written) and trace-by-ID latency over the Jaeger API. Prints one JSON line per dataset.
# Usage: scripts/measure-all-in-one.sh   (needs ../shared/trace-data; takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin skein-all-in-one --bin skein-replay >&2
BIN=target/release
DATA=../shared/trace-data

metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }

measure() {
  local name=$1; shift
  local dir; dir=$(mktemp -d)
  "$BIN/skein-all-in-one" --data-dir "$dir/data" --otlp-grpc-addr 127.0.0.1:0 --otlp-http-addr 127.0.0.1:0 \
    --query-http-addr 127.0.0.1:0 --query-grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --trace-idle-ms 1000 2>"$dir/log" &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$dir/log" && break; sleep 0.1; done
  local grpc query admin
  grpc=$(grep -o 'otlp_grpc=[0-9.:]*' "$dir/log" | cut -d= -f2)
  query=$(grep -o 'query_http=[0-9.:]*' "$dir/log" | cut -d= -f2)
  admin=$(grep -o 'admin=[0-9.:]*' "$dir/log" | cut -d= -f2)
  local summary; summary=$("$BIN/skein-replay" --endpoint "http://$grpc" --json "$@")
  for _ in $(seq 600); do
    [ "$(metric "$admin" skein_live_traces)" = 0 ] && [ "$(metric "$admin" skein_pending_chunks)" = 0 ] && break
    sleep 0.2
  done
  local written; written=$(metric "$admin" skein_spans_written_total)
  local service; service=$(curl -s "http://$query/api/services" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0])')
  curl -s "http://$query/api/traces?service=$service&start=0&limit=200" \
    | python3 -c 'import json,sys; [print(t["traceID"]) for t in json.load(sys.stdin)["data"]]' > "$dir/ids"
  while read -r id; do curl -s -o /dev/null -w '%{time_total}\n' "http://$query/api/traces/$id"; done < "$dir/ids" > "$dir/lat"
  kill -TERM "$pid"; wait "$pid" || true
  # Allocated blocks, not apparent size: fjall preallocates its journal file sparsely.
  local bytes; bytes=$(du -s --block-size=1 "$dir/data" | cut -f1)
  python3 - "$name" "$summary" "$written" "$bytes" "$dir/lat" <<'PY'
import json, sys
name, summary, written, size, lat_file = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
lat = sorted(float(x) * 1000 for x in open(lat_file) if x.strip())
pct = lambda p: lat[min(len(lat) - 1, int(p * (len(lat) - 1)))]
print(json.dumps({"dataset": name, "spans_read": summary["read"], "spans_written": int(written),
    "replay_spans_per_s": round(summary["spans_per_s"]), "data_dir_bytes": size,
    "bytes_per_span": round(size / written, 1), "trace_by_id_ms": {"n": len(lat), "p50": round(pct(0.5), 2),
    "p99": round(pct(0.99), 2), "max": round(lat[-1], 2)}}))
PY
  rm -rf "$dir"
}

mapfile -t NEZHA < <(find "$DATA/nezha-ob-tt-csv" -name '*.csv' | sort)
measure nezha "${NEZHA[@]}"
measure hotrod-es "$DATA/jaeger-es-hotrod/jaeger-span-2023-01-24.json"
measure hotrod-otlp "$DATA"/jaeger-otlp-hotrod-oteldemo/{n_plus_one_full_concurrent,n_plus_one_full_serial,error_timeout_masked,n_plus_one_positive,n_plus_one_near_miss}.json
