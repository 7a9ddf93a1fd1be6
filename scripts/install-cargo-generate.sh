#!/usr/bin/env bash
# Installs the cargo-generate version this template is tested with, once.
#
# cargo-generate 0.26.0's lock file pulls cargo-util-schemas 0.14.3 and kstring 2.0.5,
# which need a newer rustc than 1.95; pinning those two back builds it on 1.95.
# The build takes minutes on two cores, so an existing install of the right version is kept.
set -euo pipefail

VERSION=0.26.0
if command -v cargo-generate >/dev/null 2>&1 &&
  cargo-generate --version 2>/dev/null | grep -q " $VERSION"; then
  echo "cargo-generate $VERSION already installed"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fetch the published crate source through cargo's own registry client.
mkdir -p "$work/fetch/src"
cat >"$work/fetch/Cargo.toml" <<TOML
[package]
name = "fetch-cargo-generate"
version = "0.0.0"
edition = "2021"
[dependencies]
cargo-generate = "=$VERSION"
TOML
touch "$work/fetch/src/lib.rs"
(cd "$work/fetch" && cargo fetch --quiet)
src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "cargo-generate-$VERSION" | head -n 1)
[ -n "$src" ] || { echo "cargo-generate $VERSION source not found after cargo fetch" >&2; exit 1; }
cp -r "$src" "$work/cargo-generate"

cd "$work/cargo-generate"
cargo update --quiet -p cargo-util-schemas --precise 0.14.1
cargo update --quiet -p kstring --precise 2.0.2
cargo install --path . --locked
cargo-generate --version
