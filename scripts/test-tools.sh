#!/usr/bin/env bash
# Installs what the browser, audit and client-example tests need, beyond the web build:
# - Debian's chromium (driven by playwright-core from web/package-lock.json; no browser download),
# - a Python venv at target/py-venv with examples/python/requirements.txt (gql) and
#   inference-requirements.txt (tritonclient, kserve), tests/requirements.txt (schemathesis,
#   openapi-spec-validator),
# - the TypeScript example's npm packages (examples/typescript/package-lock.json),
# - the deployment checks: hadolint and kubernetes-validate (deploy/requirements.txt, same venv),
#   kubectl (for `kubectl kustomize`), and promtool and nginx (scripts/deploy-tools.sh).
# Idempotent; `make test` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-tools: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  log "installing Debian's chromium"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

VENV=target/py-venv
if [ ! -x "$VENV/bin/python" ]; then
  log "creating the Python venv $VENV"
  mkdir -p target
  python3 -m venv "$VENV"
fi
# One resolution for every requirements file, so their pins cannot disagree unnoticed.
REQUIREMENTS=(examples/python/requirements.txt examples/python/inference-requirements.txt
  deploy/requirements.txt tests/requirements.txt)
stale=0
for r in "${REQUIREMENTS[@]}"; do [ "$r" -nt "$VENV/.installed" ] && stale=1; done
if [ ! -f "$VENV/.installed" ] || [ $stale = 1 ]; then
  log "installing ${REQUIREMENTS[*]}"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQUIREMENTS[@]/#/-r}" >&2
  touch "$VENV/.installed"
fi

# `kubectl kustomize` renders deploy/k8s; it needs kustomize v4 or later inside kubectl (1.21+).
# Debian's kubernetes-client (1.20, kustomize v2) is the fallback when there is no kubectl at all:
# deploy/k8s then fails to render and the deploy tests say so.
if ! command -v kubectl >/dev/null 2>&1; then
  log "installing Debian's kubernetes-client (kubectl)"
  as_root apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi

scripts/deploy-tools.sh >/dev/null

TS=examples/typescript
if [ ! -f "$TS/node_modules/.package-lock.json" ] || [ "$TS/package-lock.json" -nt "$TS/node_modules/.package-lock.json" ]; then
  log "installing the TypeScript example's npm packages (npm ci)"
  (cd "$TS" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
