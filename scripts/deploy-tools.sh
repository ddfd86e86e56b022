#!/usr/bin/env bash
# Unpacks Debian's nginx and prometheus packages into target/tools and prints the directory of
# their binaries (nginx, promtool). `dpkg -x`, not `apt-get install`: installing them would start
# system daemons (nginx on port 80, a Prometheus server) that neither the tests nor
# `make run-cluster` want; they run these binaries with their own configuration. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=target/tools
log() { echo "deploy-tools: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x "$TOOLS/usr/sbin/nginx" ] || [ ! -x "$TOOLS/usr/bin/promtool" ]; then
  mkdir -p "$TOOLS/debs"
  log "unpacking Debian's nginx and prometheus (promtool) into $TOOLS"
  # `apt-get download` needs the package lists; a fresh machine may have none yet.
  if ! (cd "$TOOLS/debs" && apt-get download -qq nginx prometheus >&2 2>/dev/null); then
    as_root apt-get update -qq >&2
    (cd "$TOOLS/debs" && apt-get download -qq nginx prometheus >&2)
  fi
  for deb in "$TOOLS"/debs/*.deb; do dpkg -x "$deb" "$TOOLS"; done
  rm -rf "$TOOLS/debs"
fi
mkdir -p "$TOOLS/bin"
ln -sf ../usr/sbin/nginx "$TOOLS/bin/nginx"
ln -sf ../usr/bin/promtool "$TOOLS/bin/promtool"
"$TOOLS/bin/nginx" -v 2>/dev/null
"$TOOLS/bin/promtool" --version >/dev/null
echo "$PWD/$TOOLS/bin"
