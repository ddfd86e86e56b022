#!/usr/bin/env bash
# Load benchmark of the logging path (issue: "the logging path at the physical limit"): in one
# invocation and under the same conditions — server pinned to core 0, wrk to core 1, a warm-up
# discarded, PostgreSQL on the same host — this service's GraphQL `predictPrice` and REST route in
# durable and async mode, the benchmark-only null-log build (what logging costs), the floor
# (bench/floor.rs: async-graphql with a trivial resolver, and hyper/axum alone), at 1 / 16 / 64
# connections, and the 10,000-item `predictPrices` batch. Per point: req/s, p50/p99, server and
# PostgreSQL CPU per request (from /proc), server RSS, and rows logged vs OK answers.
#
#   DATABASE_URL=... bench/load.sh        (make bench-load sets DATABASE_URL up)
#   BENCH_DURATION=10 BENCH_CONNS="1 16 64" bench/load.sh
#
# Do not run it while cargo is building: the machine has 2 cores and the numbers would be noise.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench-load does)}"
DURATION=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNS:-1 16 64}
PORT=${BENCH_PORT:-18003}
OUT=bench/out/load
NULL_BIN=${BENCH_NULL_BIN:-$OUT/house-price-api-null-log}
mkdir -p "$OUT"
ensure_wrk
[ -x "$BIN" ] || cargo build --release --locked
if [[ " ${BENCH_TARGETS:-graphql-null-log} " == *" graphql-null-log "* ]] && [ ! -x "$NULL_BIN" ]; then
  echo "bench: building the null-log binary (feature bench-null-log) into $NULL_BIN" >&2
  cp "$BIN" "$OUT/house-price-api.keep"
  cargo build --release --locked --features bench-null-log >&2
  cp "$BIN" "$NULL_BIN"
  cp "$OUT/house-price-api.keep" "$BIN"
fi
# The floor (bench/floor.rs): async-graphql and hyper alone, on the same runtime and allocator.
FLOOR_BIN=target/release/examples/floor
if [[ " ${BENCH_TARGETS:-floor-graphql} " == *" floor-"* ]]; then
  cargo build --release --locked --example floor >&2
fi
TICKS=$(getconf CLK_TCK)

cpu_of() {  # total utime+stime ticks of the given pids
  local total=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    set -- $(sed 's/^.*) //' "/proc/$pid/stat")
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
pg_pids() { pgrep -u postgres -d ' ' postgres || true; }
machine_ticks() {  # "busy idle" ticks of all cores since boot (/proc/stat; iowait counts as idle)
  awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat
}

printf '%-26s %5s %9s %8s %8s %10s %10s %9s %6s %7s %12s\n' target conns "req/s" p50 p99 "srv µs/req" "pg µs/row" \
  "wrk µs/req" "idle%" "RSS MB" "rows/OK"
point() {  # name binary mode script path conns  (mode "floor-http"/"floor-graphql": bench/floor.rs)
  local name=$1 bin=$2 mode=$3 script=$4 path=$5 conns=$6
  local url
  url=$(scratch_db house_price_load)
  # A fresh spool too: rows an earlier point left there would be replayed into this database.
  rm -rf "$OUT/spool"
  if [[ $mode == floor-* ]]; then
    taskset -c 0 "$bin" "${mode#floor-}" "$PORT" & local server=$!
    wait_listening "$PORT"
  else
    RUST_LOG=warn LOG_MODE=$mode MONITOR_INTERVAL_MS=0 SPOOL_DIR="$OUT/spool" taskset -c 0 \
      "$bin" serve --database-url "$url" --listen-addr "127.0.0.1:$PORT" & local server=$!
    wait_ready "$PORT"
  fi
  taskset -c 1 wrk -t1 -c"$conns" -d3s -s "$script" "http://127.0.0.1:$PORT$path" > /dev/null  # warm-up
  local rows0; rows0=$(psql "$url" -At -c "select count(*) from prediction_log")
  local s0 p0 m0; s0=$(cpu_of $server); p0=$(cpu_of $(pg_pids)); m0=$(machine_ticks)
  taskset -c 1 /usr/bin/time -f '%U %S' -o "$OUT/$name-$conns.wrk-cpu" \
    wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$PORT$path" > "$OUT/$name-$conns.txt"
  local s1 p1 m1; s1=$(cpu_of $server); p1=$(cpu_of $(pg_pids)); m1=$(machine_ticks)
  local wrk_cpu; wrk_cpu=$(awk '{print $1 + $2}' "$OUT/$name-$conns.wrk-cpu")
  local rss; rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' /proc/$server/status)
  sleep 0.5  # async mode: let the queue drain before counting
  local rows1; rows1=$(psql "$url" -At -c "select count(*) from prediction_log")
  kill -TERM $server; wait $server 2>/dev/null || true
  local requests rps p50 p99
  requests=$(awk '/requests in/ {print $1}' "$OUT/$name-$conns.txt")
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$OUT/$name-$conns.txt")
  p50=$(awk '/^ +50%/ {print $2}' "$OUT/$name-$conns.txt")
  p99=$(awk '/^ +99%/ {print $2}' "$OUT/$name-$conns.txt")
  local rows=$((rows1 - rows0))
  python3 - "$name" "$conns" "$rps" "$p50" "$p99" "$s0" "$s1" "$p0" "$p1" "$TICKS" "$requests" "$rows" "$rss" \
    "$wrk_cpu" $m0 $m1 <<'PY'
import sys
name, conns, rps, p50, p99 = sys.argv[1:6]
s0, s1, p0, p1, ticks, requests, rows, rss, wrk, mb0, mi0, mb1, mi1 = map(float, sys.argv[6:19])
srv = (s1 - s0) / ticks * 1e6 / max(requests, 1)
pg = (p1 - p0) / ticks * 1e6 / max(rows, 1) if rows else float("nan")
wrk_us = wrk * 1e6 / max(requests, 1)
idle = 100 * (mi1 - mi0) / max(mb1 - mb0 + mi1 - mi0, 1)
print(f"{name:<26} {conns:>5} {float(rps):>9,.0f} {p50:>8} {p99:>8} {srv:>10.1f} {pg:>10.1f} {wrk_us:>9.1f} {idle:>6.0f} "
      f"{rss:>7.0f} {rows:>7.0f}/{requests:.0f}")
PY
}

TARGETS=${BENCH_TARGETS:-graphql-durable rest-durable graphql-async graphql-null-log floor-graphql floor-http batch}
has() { [[ " $TARGETS " == *" $1 "* ]]; }
for conns in $CONNS; do
  if has graphql-durable; then point graphql-durable "$BIN" durable bench/predict.lua /graphql "$conns"; fi
  if has rest-durable; then point rest-durable "$BIN" durable bench/rest.lua /prever_precos/ "$conns"; fi
  if has graphql-async; then point graphql-async "$BIN" async bench/predict.lua /graphql "$conns"; fi
  if has graphql-null-log; then point graphql-null-log "$NULL_BIN" durable bench/predict.lua /graphql "$conns"; fi
  if has floor-graphql; then point floor-graphql "$FLOOR_BIN" floor-graphql bench/predict.lua /graphql "$conns"; fi
  if has floor-http; then point floor-http "$FLOOR_BIN" floor-http bench/predict.lua /graphql "$conns"; fi
done
has batch || exit 0

# The 10,000-item batch: end-to-end time of one request (every item logged before the answer).
url=$(scratch_db house_price_load)
rm -rf "$OUT/spool"
RUST_LOG=warn MONITOR_INTERVAL_MS=0 MAX_BATCH_SIZE=10000 MAX_ROWS_PER_REQUEST=10000 MAX_BODY_BYTES=4194304 \
  SPOOL_DIR="$OUT/spool" taskset -c 0 "$BIN" serve --database-url "$url" --listen-addr "127.0.0.1:$PORT" & server=$!
wait_ready "$PORT"
python3 - > "$OUT/batch.json" <<'PY'
import json
items = [{"squareFeet": 800 + i % 2000, "bedrooms": 1 + i % 5, "bathrooms": 2} for i in range(10000)]
print(json.dumps({"query": "query($b: [HouseInput!]!) { predictPrices(inputs: $b) { index prediction { id } } }", "variables": {"b": items}}))
PY
times=()
for _ in $(seq 1 12); do
  times+=("$(taskset -c 1 curl -s -o /dev/null -w '%{time_total}' -H 'content-type: application/json' --data-binary @"$OUT/batch.json" "http://127.0.0.1:$PORT/graphql")")
done
kill -TERM $server; wait $server 2>/dev/null || true
rows=$(psql "$url" -At -c "select count(*) from prediction_log")
python3 - "$rows" "${times[@]}" <<'PY'
import statistics, sys
rows = int(sys.argv[1]); t = sorted(float(x) for x in sys.argv[2:][2:])  # first two are warm-up
print(f"predictPrices 10,000 items: median {statistics.median(t)*1000:.0f} ms, best {t[0]*1000:.0f} ms "
      f"({10000/statistics.median(t):,.0f} rows/s); {rows} rows logged for 12 requests")
PY
