# Shared by the benchmark scripts (sourced): wrk, a scratch database, waiting for the server.

BIN=${BIN:-target/release/house-price-api}

# The load comes from one address: the benchmarks measure the service, not its rate limits.
export RATE_LIMIT_PER_ADDRESS=${RATE_LIMIT_PER_ADDRESS:-0} RATE_LIMIT_PER_KEY=${RATE_LIMIT_PER_KEY:-0}

# Installs wrk from Debian if it is missing.
ensure_wrk() {
  command -v wrk >/dev/null && return
  echo "bench: installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
}

# Recreates database $1 next to DATABASE_URL's, migrated, so a benchmark never touches real
# history; prints its URL.
scratch_db() {
  psql "$DATABASE_URL" -q -c "drop database if exists $1" -c "create database $1" >&2
  local url=${DATABASE_URL%/*}/$1
  "$BIN" migrate --database-url "$url" >/dev/null
  echo "$url"
}

# Waits until the server on port $1 is ready (10 s at most).
wait_ready() {
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null && return; sleep 0.2; done
  echo "bench: the server on port $1 did not become ready" >&2
  return 1
}

# Waits until something listens on port $1 (10 s at most): for servers without /health.
wait_listening() {
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.2; done
  echo "bench: nothing listens on port $1" >&2
  return 1
}
