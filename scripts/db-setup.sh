#!/usr/bin/env bash
# Ensures a local PostgreSQL server is running and has the project's role and database.
# Idempotent: safe to run before every `make run` / `make test`.
#
# - Installs PostgreSQL with apt if no cluster exists (needs root).
# - Starts the first cluster with pg_ctlcluster (postgres refuses to run as root, so the Debian
#   wrapper starts it as the postgres user).
# - Creates role $DB_USER (LOGIN CREATEDB: #[sqlx::test] creates a database per test) and
#   database $DB_NAME owned by it.
# - Creates the analysts' read-only roles: house_price_reader (NOLOGIN; the migrations grant it
#   SELECT on the SQL contract) and $ANALYST_USER (LOGIN, a member of it; read-only transactions,
#   queries cut at 5 min, an idle open transaction at 1 min, so it cannot hold locks for long).
set -euo pipefail

DB_USER=${DB_USER:-house_price}
DB_PASSWORD=${DB_PASSWORD:-house_price}
DB_NAME=${DB_NAME:-house_price}
ANALYST_USER=${ANALYST_USER:-house_price_analyst}
ANALYST_PASSWORD=${ANALYST_PASSWORD:-house_price_analyst}

log() { echo "db-setup: $*" >&2; }

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"
  elif [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"
  else sudo -u postgres "$@"
  fi
}

# Stdout carries exactly one line, the DATABASE_URL (the Makefile captures it): everything the
# tools print (pg_ctlcluster says "Removed stale pid file." after an unclean stop, apt talks...)
# goes to stderr. (No extra file descriptor for stdout: the server started here would inherit it
# and keep the caller's `$(...)` waiting forever.)
setup() {
  if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    log "no PostgreSQL cluster found; installing postgresql with apt"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
  fi

  read -r PG_VERSION PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters -h | head -n 1)
  if [ "$PG_STATUS" != online ]; then
    log "starting cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
    if [ "$(id -u)" = 0 ]; then pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start || [ $? -eq 2 ]
    else sudo pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start || [ $? -eq 2 ]
    fi
  fi

  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 1
  done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "PostgreSQL did not become ready on port $PG_PORT"; exit 1; }

  as_postgres psql -q -v ON_ERROR_STOP=1 -p "$PG_PORT" \
    -v db_user="$DB_USER" -v db_password="$DB_PASSWORD" -v db_name="$DB_NAME" \
    -v analyst_user="$ANALYST_USER" -v analyst_password="$ANALYST_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'db_user', :'db_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user')\gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'db_user', :'db_password')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db_name', :'db_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name')\gexec
SELECT 'CREATE ROLE house_price_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'house_price_reader')\gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE house_price_reader', :'analyst_user', :'analyst_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'analyst_user')\gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'analyst_user', :'analyst_password')\gexec
SELECT format('ALTER ROLE %I SET default_transaction_read_only = on', :'analyst_user')\gexec
SELECT format('ALTER ROLE %I SET statement_timeout = %L', :'analyst_user', '5min')\gexec
SELECT format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', :'analyst_user', '1min')\gexec
SELECT format('GRANT house_price_reader TO %I', :'analyst_user')\gexec
SQL
}

setup >&2
log "ready: postgres://$DB_USER:***@127.0.0.1:$PG_PORT/$DB_NAME"
# The URL on stdout, for the Makefile.
echo "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
