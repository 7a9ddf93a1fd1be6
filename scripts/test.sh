#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then checks formatting, lints,
# the crate's tests (examples and both ledgers against real backends included), generated
# projects, a short fuzzing run, and the deployment files.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }
# Every cargo test summary of this run (the crate's and the generated projects') is kept, to
# print the totals as the last line.
results=$(mktemp)
trap 'rm -f "$results"' EXIT
tally() { tee >(grep --line-buffered '^test result:' >>"$results"); }

section "setup"
scripts/setup.sh

section "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets --all-features -- -D warnings

section "tests"
# The core's suites (both ledgers, storm, crashes) and this project's own tests. The
# examples' real-backend tests need their feature (`--all-features` for all of them); the
# template repository runs each of them in the project generated with it as its manager.
if [ -e tests/generation.sh ] && command -v cargo-generate >/dev/null; then
  cargo test --locked --workspace 2>&1 | tally
else
  cargo test --locked --workspace --all-features 2>&1 | tally
fi

section "the core as a crate of its own"
RUSTDOCFLAGS="-D warnings" cargo doc --locked -p reservation-webhook-core --no-deps --all-features
cargo package --locked -p reservation-webhook-core --allow-dirty

# Only the template repository generates projects and fuzzes.
if [ -e tests/generation.sh ]; then
  section "generated projects"
  tests/generation.sh 2>&1 | tally
  section "upgrading a generated project"
  tests/upgrade.sh 2>&1 | tally
fi
if [ -e scripts/fuzz.sh ]; then
  section "fuzzing (short budget; scripts/fuzz.sh 3600 for an hour per target)"
  scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi

section "deployment files"
scripts/check-deploy.sh
scripts/check-image.sh

section "done"
awk '{for (i = 1; i <= NF; i++) {if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i}}
     END {printf "tests: %d passed, %d failed\n", p, f}' "$results"
