#!/usr/bin/env bash
# Builds the web pages (GraphiQL, the dashboard, the landing page) into web/dist from the pinned
# npm packages in web/package-lock.json. The server embeds web/dist when it is compiled, so run
# this before `cargo build` (the Makefile does). Idempotent and quick when nothing changed:
# `npm ci` runs only when the lockfile is newer than the installed tree.
set -euo pipefail
cd "$(dirname "$0")/../web"

log() { echo "web-build: $*" >&2; }

command -v npm >/dev/null 2>&1 || { log "npm is required (Node.js 20 or newer)"; exit 1; }
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
# Rebuild only when a source, the lockfile or the build script is newer than the last build.
if [ -f dist/manifest.json ] && [ -z "$(find src build.mjs package-lock.json -newer dist/manifest.json -print -quit)" ]; then
  log "web/dist is up to date"
  exit 0
fi
log "building web/dist"
npm run --silent build >&2
