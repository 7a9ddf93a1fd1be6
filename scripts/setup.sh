#!/usr/bin/env bash
# Installs everything the test suite needs on Debian 12, skipping what is already there:
# a few tools from Debian, the backends the tests start (PostgreSQL, Redis, Open vSwitch,
# Docker, Podman), the checkers of the deployment files, the reference tools the core's tests
# compare against (age, the Standard Webhooks library), and in the template repository
# cargo-generate and cargo-fuzz.
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

# The template repository also generates projects and fuzzes; generated projects do neither.
[ ! -e scripts/install-cargo-generate.sh ] || scripts/install-cargo-generate.sh
scripts/install-backends.sh
scripts/install-deploy-tools.sh
scripts/install-test-tools.sh
[ ! -e scripts/install-fuzz.sh ] || scripts/install-fuzz.sh
