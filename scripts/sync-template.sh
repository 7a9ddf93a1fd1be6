#!/usr/bin/env bash
# Writes template/Cargo.toml.liquid from Cargo.toml: the same manifest with the package
# name replaced by the name given to cargo-generate. With --check, fails if it is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
rendered=$(sed 's/^name = "reservation-webhook"$/name = "{{project-name}}"/' Cargo.toml)
if [ "${1:-}" = "--check" ]; then
  if ! diff -u template/Cargo.toml.liquid <(printf '%s\n' "$rendered"); then
    echo "template/Cargo.toml.liquid is stale: run scripts/sync-template.sh" >&2
    exit 1
  fi
else
  printf '%s\n' "$rendered" > template/Cargo.toml.liquid
fi
