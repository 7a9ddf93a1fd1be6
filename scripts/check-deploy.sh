#!/usr/bin/env bash
# Checks the deployment files offline, and exits non-zero if any check fails:
#  - hadolint on the Dockerfile;
#  - yamllint on k8s/ (settings in .yamllint);
#  - the base and every overlay render with `kubectl kustomize`, and every rendered object
#    is valid for Kubernetes $K8S_VERSION (kubernetes-validate --strict: unknown fields,
#    such as a misspelt securityContext key, are errors);
#  - k8s/monitoring: promtool checks rules.yaml and runs its unit tests (tests.yaml); the
#    Prometheus Operator's objects it renders, which kubernetes-validate has no schemas for,
#    are checked here: the PrometheusRule carries exactly rules.yaml's groups, the
#    ServiceMonitor selects the base's Service, the dashboard ConfigMap is dashboard.json;
#  - the project name and the resource type are written only in k8s/base/kustomization.yaml.
# The tools come from scripts/install-deploy-tools.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.30.0}
TOOLS_DIR=${DEPLOY_TOOLS_DIR:-$HOME/.local/share/webhook-deploy-tools}
PATH=$TOOLS_DIR/bin:$PATH
for tool in hadolint yamllint kubernetes-validate kubectl promtool; do
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

# split_custom RENDERED: moves the objects of API groups outside Kubernetes itself (no dot in
# the group, or *.k8s.io) to RENDERED.custom, which kubernetes-validate could not check.
split_custom() {
    "$TOOLS_DIR/bin/python" - "$1" <<'PY'
import sys, yaml
path = sys.argv[1]
with open(path) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
def core(d):
    group = d["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")
for name, keep in ((path, True), (path + ".custom", False)):
    with open(name, "w") as f:
        yaml.safe_dump_all([d for d in docs if core(d) == keep], f)
PY
}

for dir in k8s/base k8s/overlays/*/ k8s/monitoring; do
    dir=${dir%/}
    out=$WORK/${dir//\//_}.yaml
    check "kubectl kustomize $dir" kubectl kustomize "$dir" -o "$out" || continue
    [[ -s $out ]] || continue
    split_custom "$out"
    check "kubernetes-validate $K8S_VERSION $dir" kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"
    # What was rendered, for the record.
    awk '/^kind:/{k=$2} /^  name:/{print "      " k "/" $2}' "$out" "$out.custom"
done

check "promtool check rules k8s/monitoring/rules.yaml" promtool check rules k8s/monitoring/rules.yaml
check "promtool test rules k8s/monitoring/tests.yaml" promtool test rules k8s/monitoring/tests.yaml

# The Operator's objects and the dashboard, as k8s/monitoring renders them.
monitoring_objects() {
    "$TOOLS_DIR/bin/python" - "$WORK/k8s_monitoring.yaml" "$WORK/k8s_base.yaml" <<'PY'
import json, sys, yaml
def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]
rendered = load(sys.argv[1]) + load(sys.argv[1] + ".custom")
base = load(sys.argv[1].replace("k8s_monitoring", "k8s_base"))
errors = []
def one(kind, api, objects):
    found = [d for d in objects if d["kind"] == kind]
    if len(found) != 1 or found[0]["apiVersion"] != api:
        errors.append(f"expected one {kind} of {api}, found {[d['apiVersion'] for d in found]}")
        return {}
    return found[0]
rule = one("PrometheusRule", "monitoring.coreos.com/v1", rendered)
with open("k8s/monitoring/rules.yaml") as f:
    groups = yaml.safe_load(f)["groups"]
if rule and rule.get("spec", {}).get("groups") != groups:
    errors.append("the PrometheusRule's spec.groups differ from k8s/monitoring/rules.yaml's "
                  "groups: copy them into k8s/monitoring/prometheusrule.yaml")
monitor = one("ServiceMonitor", "monitoring.coreos.com/v1", rendered)
service = one("Service", "v1", base)
if monitor and service:
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in wanted.items()):
        errors.append(f"the ServiceMonitor selects {wanted}; the base's Service has {labels}")
    ports = {p.get("name") for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in ports:
            errors.append(f"the ServiceMonitor scrapes port {endpoint.get('port')!r}; the Service has {ports}")
    job = labels.get(monitor["spec"].get("jobLabel"))
    if f'job="{job}"' not in " ".join(r["expr"] for g in groups for r in g["rules"]):
        errors.append(f"the ServiceMonitor's job is {job!r}, which the alerts do not select")
dashboards = [d for d in rendered if d["kind"] == "ConfigMap"
              and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
with open("k8s/monitoring/dashboard.json") as f:
    text = f.read()
json.loads(text)
if [d["data"].get("dashboard.json") for d in dashboards] != [text]:
    errors.append("expected one ConfigMap labelled grafana_dashboard=1 holding dashboard.json")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}
check "k8s/monitoring: PrometheusRule = rules.yaml, ServiceMonitor, dashboard" monitoring_objects

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
