#!/usr/bin/env bash
# Where the server's CPU goes per GraphQL request: the service (durable) and the floor
# (bench/floor.rs: async-graphql with a trivial resolver), each profiled with call graphs under the
# same load as bench/load.sh (server on core 0, wrk on core 1, 64 connections), then one table of
# inclusive µs per request per part (bench/profile.py).
#
#   DATABASE_URL=... bench/profile.sh          (make bench-profile sets DATABASE_URL up)
#
# Builds frame-pointer binaries into target/fp (the first build takes as long as a clean release
# build; later ones only rebuild this crate). perf's sampling inflates the CPU per request by
# ~15 %: compare the columns with each other, and bench/load.sh's figures with each other.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench-profile does)}"
CONNS=${BENCH_CONNS:-64}
PORT=${BENCH_PORT:-18006}
OUT=bench/out/profile
FP=target/fp/release
mkdir -p "$OUT"
ensure_wrk
command -v perf >/dev/null || { echo "bench: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
CARGO_TARGET_DIR=target/fp RUSTFLAGS="-C force-frame-pointers=yes" \
  cargo build --release --locked --bin house-price-api --example floor >&2
BIN=$FP/house-price-api  # scratch_db migrates with it
TICKS=$(getconf CLK_TCK)

ticks_of() { set -- $(sed 's/^.*) //' "/proc/$1/stat"); echo $((${12} + ${13})); }

profile() {  # name; then the server command
  local name=$1; shift
  if [ "$name" = floor ]; then
    taskset -c 0 "$@" & local server=$!
    wait_listening "$PORT"
  else
    rm -rf "$OUT/spool"
    RUST_LOG=warn MONITOR_INTERVAL_MS=0 SPOOL_DIR="$OUT/spool" taskset -c 0 "$@" & local server=$!
    wait_ready "$PORT"
  fi
  taskset -c 1 wrk -t1 -c"$CONNS" -d3s -s bench/predict.lua "http://127.0.0.1:$PORT/graphql" >/dev/null  # warm-up
  local t0; t0=$(ticks_of $server)
  taskset -c 1 wrk -t1 -c"$CONNS" -d8s -s bench/predict.lua "http://127.0.0.1:$PORT/graphql" > "$OUT/$name.wrk" &
  local wrk=$!
  sleep 2
  perf record -q -F 2000 --call-graph fp -p $server -o "$OUT/$name.data" -- sleep 4 >/dev/null 2>&1
  wait $wrk
  local t1; t1=$(ticks_of $server)
  kill -TERM $server; wait $server 2>/dev/null || true
  perf script -i "$OUT/$name.data" -F ip,sym > "$OUT/$name.stacks" 2>/dev/null
  local requests; requests=$(awk '/requests in/ {print $1}' "$OUT/$name.wrk")
  echo "$name: $(awk '/Requests\/sec/ {printf "%.0f", $2}' "$OUT/$name.wrk") req/s" >&2
  python3 -c "print(f'{($t1 - $t0) / $TICKS * 1e6 / $requests:.2f}')" > "$OUT/$name.us"
}

url=$(scratch_db house_price_profile)
profile service "$BIN" serve --database-url "$url" --listen-addr "127.0.0.1:$PORT"
profile floor "$FP/examples/floor" graphql "$PORT"
python3 bench/profile.py "service=$OUT/service.stacks:$(cat "$OUT/service.us")" \
  "floor=$OUT/floor.stacks:$(cat "$OUT/floor.us")"
