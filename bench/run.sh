#!/usr/bin/env bash
# Load benchmark: starts the release server on a scratch database, drives it with wrk from a
# second process, and checks afterwards that every answered request left exactly one log row.
#
#   DATABASE_URL=... bench/run.sh            (make bench sets DATABASE_URL up)
#   BENCH_DURATION=20s BENCH_CONNECTIONS=64 LOG_MODE=durable bench/run.sh
#
# Do not run it while cargo is building: the machine has 2 cores and the numbers would be noise.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench does)}"
DURATION=${BENCH_DURATION:-20s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-1}
MODE=${LOG_MODE:-durable}
PORT=${BENCH_PORT:-18000}
OUT=bench/out
mkdir -p "$OUT"

ensure_wrk
[ -x "$BIN" ] || cargo build --release --locked

# A scratch database next to the configured one, so the benchmark never touches real history.
BENCH_DB=house_price_bench
MAIN_DB=${DATABASE_URL##*/}
BENCH_URL=$(scratch_db $BENCH_DB)

RUST_LOG=warn LOG_MODE=$MODE "$BIN" serve --database-url "$BENCH_URL" --listen-addr "127.0.0.1:$PORT" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
wait_ready "$PORT"

run() {
  local name=$1 script=$2 path=$3
  echo "== $name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (LOG_MODE=$MODE)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "http://127.0.0.1:$PORT$path" | tee "$OUT/$name.txt"
}
run graphql bench/predict.lua /graphql
run rest bench/rest.lua /prever_precos/

kill -TERM $SERVER && wait $SERVER || true
trap - EXIT

# wrk counts requests it completed; the log must hold one row for each answered request
# (plus requests cut off by wrk's deadline, which were answered after wrk stopped listening).
completed=$(grep -h "requests in" "$OUT"/graphql.txt "$OUT"/rest.txt | awk '{s+=$1} END {print s}')
rows=$(psql "$BENCH_URL" -At -c "select count(*) from prediction_log")
echo "== requests completed by wrk: $completed, rows in prediction_log: $rows"
psql "$BENCH_URL" -c "select route, status, count(*), round(avg(latency_us)) as avg_latency_us from prediction_log group by 1, 2 order by 1, 2"
echo "main database $MAIN_DB untouched; scratch database $BENCH_DB kept for inspection"
