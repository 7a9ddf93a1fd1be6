#!/usr/bin/env bash
# Installs cargo-fuzz (libFuzzer for Rust), used by scripts/fuzz.sh. Skipped when present.
# The fuzz targets build with the stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz
# needs nightly flags), so no nightly toolchain is needed.
set -euo pipefail
if cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz already installed: $(cargo fuzz --version)"
  exit 0
fi
cargo install cargo-fuzz --locked
