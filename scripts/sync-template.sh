#!/usr/bin/env bash
# Rewrites the twins under template/ from the files they stand in for (see tests/template.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_TEMPLATE=1 cargo test --quiet --test template
