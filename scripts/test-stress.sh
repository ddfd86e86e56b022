#!/usr/bin/env bash
# The whole test suite RUNS times in a row (default 5) with both cores kept busy by CPU hogs, as
# a loaded CI machine would be: a test that passes only on a quiet machine fails here.
# Expects DATABASE_URL (the Makefile's `test-stress` sets it up); prints one line per run and
# exits non-zero if any run failed. Each run's output is kept in target/test-stress/run-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
HOGS=${HOGS:-$(nproc)}
OUT=target/test-stress
mkdir -p "$OUT"

runner=(cargo test --locked --all-targets)
if cargo nextest --version >/dev/null 2>&1; then runner=(cargo nextest run --locked --all-targets); fi

# Build first, unloaded: the runs measure the tests, not the compiler.
"${runner[@]}" --no-run >/dev/null 2>"$OUT/build.log" || { cat "$OUT/build.log" >&2; exit 1; }
runner+=(--no-fail-fast)

hogs=()
stop_hogs() { for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_hogs EXIT
for _ in $(seq 1 "$HOGS"); do
  ( while :; do :; done ) &
  hogs+=($!)
done
echo "test-stress: $RUNS runs with $HOGS CPU hogs ($(nproc) cores)"

failed=0
for run in $(seq 1 "$RUNS"); do
  started=$(date +%s)
  if "${runner[@]}" >"$OUT/run-$run.log" 2>&1; then result=passed; else result=FAILED; failed=$((failed + 1)); fi
  summary=$(grep -E "Summary|test result" "$OUT/run-$run.log" | tail -n 1 | sed 's/^ *//')
  echo "run $run: $result in $(( $(date +%s) - started )) s — $summary"
  if [ "$result" = FAILED ]; then grep -E "^\s+FAIL " "$OUT/run-$run.log" | sort -u | sed 's/^/    /' || true; fi
done
echo "test-stress: $((RUNS - failed)) of $RUNS runs passed"
[ "$failed" -eq 0 ]
