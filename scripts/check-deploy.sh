#!/usr/bin/env bash
# Checks the deployment files offline, and exits non-zero if any check fails:
#  - hadolint on the Dockerfile;
#  - yamllint on k8s/ (settings in .yamllint);
#  - the base and every overlay render with `kubectl kustomize`, and every rendered object
#    is valid for Kubernetes $K8S_VERSION (kubernetes-validate --strict: unknown fields,
#    such as a misspelt securityContext key, are errors);
#  - the project name and the resource type are written only in k8s/base/kustomization.yaml.
# The tools come from scripts/install-deploy-tools.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.30.0}
TOOLS_DIR=${DEPLOY_TOOLS_DIR:-$HOME/.local/share/webhook-deploy-tools}
PATH=$TOOLS_DIR/bin:$PATH
for tool in hadolint yamllint kubernetes-validate kubectl; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deploy-tools.sh" >&2; exit 2; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
FAILED=0

# check DESCRIPTION COMMAND...: runs COMMAND, prints ok or FAIL with its output.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok    $what"
    else
        echo "FAIL  $what"
        sed 's/^/      /' <<<"$out"
        FAILED=$((FAILED + 1))
        return 1
    fi
}

check "hadolint Dockerfile" hadolint --no-color Dockerfile
check "yamllint k8s/" yamllint --strict k8s

for dir in k8s/base k8s/overlays/*/; do
    dir=${dir%/}
    out=$WORK/${dir//\//_}.yaml
    check "kubectl kustomize $dir" kubectl kustomize "$dir" -o "$out" || continue
    [[ -s $out ]] || continue
    check "kubernetes-validate $K8S_VERSION $dir" kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"
    # What was rendered, for the record.
    awk '/^kind:/{k=$2} /^  name:/{print "      " k "/" $2}' "$out"
done

# Generation rewrites the project name and resource type in that one file only.
names_in_one_file() {
    local file=k8s/base/kustomization.yaml name type others
    name=$(sed -n 's/^namePrefix: *\(.*\)-$/\1/p' "$file")
    type=$(sed -n 's/^ *- *"RESOURCE_TYPE=\(.*\)"$/\1/p' "$file")
    [[ -n $name && -n $type ]] || { echo "no namePrefix or \"RESOURCE_TYPE=...\" literal in $file"; return 1; }
    others=$(grep -rlF -e "$name" -e "$type" k8s | grep -vxF "$file")
    [[ -z $others ]] || { echo "\"$name\" or \"$type\" is also written in: $others"; return 1; }
}
check "project name and resource type only in k8s/base/kustomization.yaml" names_in_one_file

if ((FAILED)); then
    echo "$FAILED check(s) failed"
    exit 1
fi
echo "all deployment checks passed"
