#!/usr/bin/env bash
# Installs, from Debian packages, every backend the example managers are tested against:
# PostgreSQL, Redis, Open vSwitch, the Docker and Podman engines, and libvirt with QEMU. The
# tests start and stop their own instances in temporary directories; nothing here starts a
# service. openssl makes the certificates of the ledger's TLS test; libvirt-dev is what the
# `libvirt` feature's bindings link against; a kernel, busybox and cpio make the initramfs
# that a test's VM boots to show it reads its cloud-init seed.
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
  qemu-system-x86
  qemu-utils
  libvirt-daemon
  libvirt-daemon-driver-qemu
  libvirt-clients
  libvirt-dev
  linux-image-cloud-amd64
  cpio
)
# qemu-system-x86 needs the qemu-utils of its own version; an image that carries a newer one
# (from backports) blocks it, so qemu-utils is pinned to the version qemu-system-x86 would be
# installed at, looked up rather than written here, and downgraded if need be. It is looked
# up again after `apt-get update`: the version in a stale package list may be gone.
qemu_candidate() { apt-cache policy qemu-system-x86 | awk '/Candidate:/ && $2 != "(none)" { print $2 }'; }
qemu_version=$(qemu_candidate)
if [ -n "$qemu_version" ]; then
  installed=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  [ -z "$installed" ] || [ "$installed" = "$qemu_version" ] || packages+=(qemu-utils-pinned)
fi
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
qemu_version=$(qemu_candidate)
qemu_utils=qemu-utils${qemu_version:+=$qemu_version}
for i in "${!missing[@]}"; do
  case "${missing[$i]}" in qemu-utils | qemu-utils-pinned) missing[$i]=$qemu_utils ;; esac
done
$SUDO apt-get install -y -q --no-install-recommends --allow-downgrades "${missing[@]}"
# Debian starts some of these as system services where it can; the tests need none of them.
for svc in postgresql redis-server openvswitch-switch docker podman libvirtd virtlogd virtlockd; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
