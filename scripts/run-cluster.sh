#!/usr/bin/env bash
# `make run-cluster`: nginx (Debian's, unpacked by scripts/deploy-tools.sh) on CLUSTER_PORT in
# front of one replica per port of REPLICA_PORTS, all on loopback and on the one PostgreSQL of
# DATABASE_URL, each with its own spool directory. Runs in the foreground; Ctrl-C (or SIGTERM)
# stops nginx and the replicas, which drain their log writers first.
#
#   BIN            the server binary           (default target/release/house-price-api)
#   CLUSTER_DIR    pid files, logs, spools      (default target/cluster)
#   CLUSTER_PORT   nginx                        (default 8000)
#   REPLICA_PORTS  the replicas                 (default "8001 8002 8003")
#
# Each replica's pid is in $CLUSTER_DIR/replica-<port>.pid and its output in replica-<port>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/house-price-api}
CLUSTER_DIR=${CLUSTER_DIR:-target/cluster}
CLUSTER_PORT=${CLUSTER_PORT:-8000}
REPLICA_PORTS=${REPLICA_PORTS:-8001 8002 8003}
: "${DATABASE_URL:?DATABASE_URL must be set (make run-cluster sets it)}"
log() { echo "run-cluster: $*" >&2; }

TOOLS=$(scripts/deploy-tools.sh)
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)

pids=()
stop() {
  trap - EXIT INT TERM
  log "stopping"
  # SIGTERM: each replica finishes its requests and drains its log writer before exiting.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait || true
}
trap stop EXIT INT TERM

"$BIN" migrate
upstreams=""
for port in $REPLICA_PORTS; do
  mkdir -p "$CLUSTER_DIR/spool-$port"
  LISTEN_ADDR="127.0.0.1:$port" SPOOL_DIR="$CLUSTER_DIR/spool-$port" TRUST_FORWARDED_FOR=true \
    "$BIN" serve >"$CLUSTER_DIR/replica-$port.log" 2>&1 &
  pids+=("$!")
  echo "$!" >"$CLUSTER_DIR/replica-$port.pid"
  upstreams+="        server 127.0.0.1:$port max_fails=1 fail_timeout=2s;"$'\n'
done

# nginx starts once every replica listens (model loading takes a moment), so the first requests
# find them all.
for port in $REPLICA_PORTS; do
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue 2
    sleep 0.1
  done
  log "the replica on port $port did not start; see $CLUSTER_DIR/replica-$port.log"
  exit 1
done

mkdir -p "$CLUSTER_DIR/nginx"
sed -e "s|__PREFIX__|$CLUSTER_DIR/nginx|g" -e "s|__LISTEN__|127.0.0.1:$CLUSTER_PORT|g" \
  deploy/nginx/nginx.conf.template >"$CLUSTER_DIR/nginx/nginx.conf.partial"
# The upstream list spans lines: inserted by awk rather than sed.
awk -v servers="$upstreams" '{ if ($0 == "__UPSTREAMS__") printf "%s", servers; else print }' \
  "$CLUSTER_DIR/nginx/nginx.conf.partial" >"$CLUSTER_DIR/nginx/nginx.conf"
rm "$CLUSTER_DIR/nginx/nginx.conf.partial"
"$TOOLS/nginx" -t -q -p "$CLUSTER_DIR/nginx" -c nginx.conf -e stderr
"$TOOLS/nginx" -p "$CLUSTER_DIR/nginx" -c nginx.conf -e stderr &
nginx=$!
pids+=("$nginx")
log "nginx on http://127.0.0.1:$CLUSTER_PORT in front of replicas on ports $REPLICA_PORTS (logs in $CLUSTER_DIR)"
# Until Ctrl-C or nginx exits. A replica that dies is routed around, as a load balancer would.
wait "$nginx" || true
