#!/usr/bin/env bash
# Fuzzes signature checking and payload parsing with libFuzzer (cargo-fuzz), each target
# for SECONDS (default 30: the CI budget), seeded with the sender's fixtures, and prints the
# executions reached. A longer run, e.g. an hour per target:
#   scripts/fuzz.sh 3600
# A crash stops the run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
scripts/install-fuzz.sh >/dev/null
# cargo-fuzz passes nightly-only flags; the stable compiler accepts them this way.
export RUSTC_BOOTSTRAP=1
for target in signature payload; do
  mkdir -p "fuzz/corpus/$target"
  log="fuzz/corpus/$target.log"
  cargo fuzz run "$target" "fuzz/corpus/$target" webhook-core/fixtures/events -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || {
    tail -n 40 "$log"
    echo "fuzz target $target failed (see $log and fuzz/artifacts/$target/)" >&2
    exit 1
  }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz $target: ${runs:-?} executions in ${seconds}s, no crash"
done
