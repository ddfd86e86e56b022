#!/usr/bin/env bash
# What exporting traces costs: GraphQL `predictPrice` (durable, 64 connections, bench/load.sh's
# point) with OTEL_EXPORTER_OTLP_ENDPOINT unset, set with every trace sampled, and set with 10 %
# sampled, in alternating rounds. The collector is nginx answering 200 to every export (a sink:
# what a collector does with the spans is not the service's cost). OLD_BIN, when given, is a
# build from before the HTTP metrics and trace code, run first in each round.
#
#   DATABASE_URL=... ROUNDS=3 OLD_BIN=/path/to/older/house-price-api bench/traces.sh
#
# Do not run it while cargo is building: the machine has 2 cores and the numbers would be noise.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
: "${DATABASE_URL:?set DATABASE_URL}"
ROUNDS=${ROUNDS:-3}
SINK_PORT=${SINK_PORT:-18431}
OUT=bench/out/traces
mkdir -p "$OUT/nginx"
TOOLS=$(scripts/deploy-tools.sh)

cat >"$OUT/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $PWD/$OUT/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $PWD/$OUT/nginx/body;
  proxy_temp_path $PWD/$OUT/nginx/proxy;
  fastcgi_temp_path $PWD/$OUT/nginx/fastcgi;
  uwsgi_temp_path $PWD/$OUT/nginx/uwsgi;
  scgi_temp_path $PWD/$OUT/nginx/scgi;
  client_body_buffer_size 4m;
  client_max_body_size 16m;
  server { listen 127.0.0.1:$SINK_PORT; location / { return 200; } }
}
CONF
taskset -c 1 "$TOOLS/nginx" -p "$PWD/$OUT/nginx" -c nginx.conf -e stderr & SINK=$!
trap 'kill $SINK 2>/dev/null || true' EXIT
wait_listening "$SINK_PORT"

load() { BENCH_TARGETS=graphql-durable BENCH_CONNS=64 BENCH_DURATION=${BENCH_DURATION:-10} bench/load.sh | tail -1; }
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  if [ -n "${OLD_BIN:-}" ]; then echo -n "old build        "; BIN=$OLD_BIN load; fi
  echo -n "traces off       "; load
  echo -n "traces, all      "; OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT load
  echo -n "traces, 10 %     "; OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT \
    OTEL_TRACES_SAMPLER=traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 load
done
