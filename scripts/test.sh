#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then checks formatting, lints,
# the crate's tests (examples against real backends included), generated projects, and the
# deployment files.
set -euo pipefail
cd "$(dirname "$0")/.."

section() { printf '\n=== %s (%ss)\n' "$1" "$SECONDS"; }

section "setup"
scripts/setup.sh

section "format and lints"
cargo fmt --all -- --check
cargo clippy --locked --all-targets --all-features -- -D warnings

section "tests"
cargo test --locked --all-features

section "generated projects"
tests/generation.sh

section "deployment files"
scripts/check-deploy.sh
scripts/check-image.sh

section "done"
