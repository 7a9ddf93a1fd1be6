#!/usr/bin/env bash
# Installs the reference tools the core's tests check this crate against, outside the
# repository: Debian's `age` (sealed credentials must decrypt with it), OpenSSH's
# `ssh-keygen` (the keys they are sealed to) and, in one Python virtual environment, the
# Standard Webhooks reference library (`standardwebhooks`, from PyPI, pinned), whose
# signatures the `standard-webhooks` preset must accept. Safe to run again.
#
# TEST_TOOLS_DIR chooses where the environment lives; the tests look there too.
set -euo pipefail

TOOLS_DIR=${TEST_TOOLS_DIR:-$HOME/.local/share/webhook-test-tools}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
command -v age >/dev/null || missing+=(age)
# ssh-keygen makes the users' keys the sealed credentials are checked with.
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
age --version

if [[ ! -x $TOOLS_DIR/bin/python ]]; then
  python3 -m venv "$TOOLS_DIR"
fi
"$TOOLS_DIR/bin/python" -m pip install --quiet --disable-pip-version-check standardwebhooks==1.3.0
"$TOOLS_DIR/bin/pip" show standardwebhooks | sed -n 's/^Version: /standardwebhooks /p'
