#!/usr/bin/env bash
# Chaos benchmark: the service under 64 connections for 60 s with its link to PostgreSQL cut for
# the middle 30 s (bench/linkproxy.py between them), in durable and in async mode. Prints, per
# phase (before / during / after the cut), requests/s, p50/p99 and errors; then how long the spool
# took to drain and at what rate, and how many ids answered OK are missing from prediction_log
# (must be 0). Server pinned to core 0, wrk to core 1.
#
#   DATABASE_URL=... bench/chaos.sh      (make bench-chaos sets DATABASE_URL up)
#
# Do not run it while cargo is building: the machine has 2 cores and the numbers would be noise.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

: "${DATABASE_URL:?set DATABASE_URL (make bench-chaos does)}"
CONNECTIONS=${BENCH_CONNECTIONS:-64}
BEFORE=${CHAOS_BEFORE:-15}
CUT=${CHAOS_CUT:-30}
AFTER=${CHAOS_AFTER:-15}
MODES=${CHAOS_MODES:-durable async}
PORT=${BENCH_PORT:-18001}
PROXY_PORT=${BENCH_PROXY_PORT:-15433}
OUT=bench/out/chaos
mkdir -p "$OUT"
ensure_wrk
[ -x "$BIN" ] || cargo build --release --locked

BENCH_DB=house_price_chaos
PG_HOSTPORT=${DATABASE_URL#*@}; PG_HOSTPORT=${PG_HOSTPORT%%/*}
PG_HOST=${PG_HOSTPORT%:*}; PG_PORT=${PG_HOSTPORT##*:}


phase() {  # name seconds
  echo "-- $1 (${2}s)"
  OK_IDS="$OUT/$MODE-$1.ids" taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${2}s" --timeout 10s --latency \
    -s bench/chaos.lua "http://127.0.0.1:$PORT/graphql" > "$OUT/$MODE-$1.txt"
  awk '/Requests\/sec/ {print "   req/s " $2} /^ +50%/ {print "   p50 " $2} /^ +99%/ {print "   p99 " $2}
       /Socket errors|Non-2xx/ {print "   " $0}' "$OUT/$MODE-$1.txt"
  echo "   OK answers: $(grep -vc '^ERR' "$OUT/$MODE-$1.ids" || true), errors: $(grep -c '^ERR' "$OUT/$MODE-$1.ids" || true) $(grep '^ERR' "$OUT/$MODE-$1.ids" | sort | uniq -c | tr '\n' ' ')"
}

for MODE in $MODES; do
  echo "== LOG_MODE=$MODE: $CONNECTIONS connections, link cut after ${BEFORE}s for ${CUT}s"
  BENCH_URL=$(scratch_db $BENCH_DB)
  PROXIED_URL=${BENCH_URL/@$PG_HOSTPORT/@127.0.0.1:$PROXY_PORT}
  rm -rf "$OUT/spool" "$OUT/$MODE"-*.ids
  python3 bench/linkproxy.py "$PROXY_PORT" "$PG_HOST" "$PG_PORT" & PROXY=$!
  sleep 0.5
  RUST_LOG=warn LOG_MODE=$MODE SPOOL_DIR="$OUT/spool" MONITOR_INTERVAL_MS=0 taskset -c 0 \
    "$BIN" serve --database-url "$PROXIED_URL" --listen-addr "127.0.0.1:$PORT" & SERVER=$!
  trap 'kill $SERVER $PROXY 2>/dev/null || true' EXIT
  wait_ready "$PORT"
  phase before "$BEFORE"
  kill -USR1 $PROXY
  phase during-cut "$CUT"
  spooled=$(curl -s "http://127.0.0.1:$PORT/health/ready" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log"]["backlog"]["rows"])')
  kill -USR2 $PROXY
  restored=$(date +%s.%N)
  phase after "$AFTER"
  # Drained: the spool is empty again.
  while :; do
    rows=$(curl -s "http://127.0.0.1:$PORT/health/ready" | python3 -c 'import json,sys; b=json.load(sys.stdin)["log"]; print(b["backlog"]["rows"] if b["state"]=="spooling" else 0)')
    [ "$rows" = 0 ] && break
    sleep 0.1
  done
  drained=$(date +%s.%N)
  replayed=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^prediction_log_rows_drained_total/ {print $2}')
  rss=$(awk '/VmHWM/ {print $2 " " $3}' /proc/$SERVER/status)
  kill -TERM $SERVER; wait $SERVER || true
  kill $PROXY 2>/dev/null || true; wait $PROXY 2>/dev/null || true
  trap - EXIT
  cat "$OUT/$MODE"-*.ids | grep -v '^ERR' > "$OUT/$MODE-ok.txt" || true
  psql "$BENCH_URL" -q -c "create table ok_ids (id uuid)" -c "\\copy ok_ids from '$OUT/$MODE-ok.txt'"
  missing=$(psql "$BENCH_URL" -At -c "select count(*) from ok_ids o where not exists (select 1 from prediction_log l where l.id = o.id)")
  answered=$(wc -l < "$OUT/$MODE-ok.txt")
  python3 - "$restored" "$drained" "${replayed:-0}" "$spooled" <<'PY'
import sys
restored, drained, replayed, spooled = map(float, sys.argv[1:])
secs = drained - restored
print(f"   spooled during the cut: {spooled:.0f} rows; drained in total: {replayed:.0f} rows")
print(f"   backlog drained {secs:.1f} s after the link came back ({replayed / max(secs, 1e-9):,.0f} rows/s while also serving)")
PY
  echo "   peak RSS: $rss"
  echo "   ids answered OK: $answered, missing from prediction_log: $missing"
done
