#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12, skipping what is already there:
# a few tools from Debian, cargo-generate, the backends of the example managers, and the
# checkers of the deployment files.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
tools=(curl ca-certificates python3 python3-venv file binutils)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

scripts/install-cargo-generate.sh
scripts/install-backends.sh
scripts/install-deploy-tools.sh
