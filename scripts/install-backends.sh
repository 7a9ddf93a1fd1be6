#!/usr/bin/env bash
# Installs, from Debian packages, every backend the example managers are tested against:
# PostgreSQL, Redis, Open vSwitch, and the Docker and Podman engines. The tests start and
# stop their own instances in temporary directories; nothing here starts a service. openssl
# makes the certificates of the ledger's TLS test.
set -euo pipefail

packages=(
  postgresql
  redis-server
  openvswitch-switch
  docker.io
  podman
  runc
  busybox-static
  openssl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "backends already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts some of these as system services where it can; the tests need none of them.
for svc in postgresql redis-server openvswitch-switch docker podman; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
