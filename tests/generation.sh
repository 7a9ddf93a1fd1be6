#!/usr/bin/env bash
# Generates projects from this checkout with cargo-generate and checks that each one is
# complete: it builds, passes its own tests, clippy and fmt unmodified, carries the chosen
# name, resource type and manager, keeps no template-only file, and its binary serves and
# accepts events signed by its own `send` command. The blank project's tests pass with no
# backend installed (hidden in a mount namespace); each example's project runs that
# example's real-backend tests, against its src/resource.rs. An invalid answer is refused.
#
# All variants share one target directory (the repository's), so dependencies build once.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "generation: FAILED: $*" >&2; exit 1; }
step() { echo "generation: $*"; }

generate() { # name resource_type [manager]
  cargo generate --path "$root" --name "$1" --silent --vcs none --allow-commands \
    -d resource_type="$2" -d manager="${3:-blank}" --destination "$work" >"$work/$1.log" 2>&1 ||
    { cat "$work/$1.log" >&2; fail "cargo generate $1"; }
}

# Runs a command with every backend the examples use hidden: what a machine with Rust
# alone installed has.
without_backends() {
  unshare --mount sh -c '
    for dir in /usr/lib/postgresql /usr/lib/qemu; do
      [ -d "$dir" ] && mount -t tmpfs none "$dir"
    done
    for name in postgres pg_ctl initdb redis-server dockerd podman ovsdb-server ovs-vsctl libvirtd qemu-system-x86_64; do
      path=$(command -v "$name") && mount --bind /dev/null "$path"
    done
    if [ -n "$(ls -A /usr/lib/postgresql 2>/dev/null)" ] || [ -x "$(command -v initdb)" ]; then
      echo "PostgreSQL is still visible" >&2
      exit 90
    fi
    exec "$@"' sh "$@"
}

# Starts the generated binary in $dir with .env copied from .env.example, signs a built-in
# START with its `send` command and follows it (`--wait`) until it is configured, then END
# until it is released. RESOURCE_TYPE is given to the
# sender explicitly, so the event matches only if the server read the same type from .env.
serve_and_send() { # dir binary resource_type
  local dir=$1 bin=$2 type=$3 port="" log="$work/$2.server.log"
  cp "$dir/.env.example" "$dir/.env"
  # Port 0: the OS picks a free port, which the service logs.
  # The ledger goes outside the project, which the --git comparison below expects as generated.
  (cd "$dir" && PORT=0 HOST=127.0.0.1 DATA_DIR="$work/$bin.data" ADMIN_TOKEN=generation-check exec "$CARGO_TARGET_DIR/debug/$bin" >"$log" 2>&1) &
  server_pid=$!
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening.*port=\([0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$port" ] && curl -fsS "http://127.0.0.1:$port/healthz" >"$work/health.json" 2>/dev/null && break
    sleep 0.1
  done
  [ -n "$port" ] || fail "$bin did not start: $(cat "$log")"
  grep -q "\"service\":\"$bin\"" "$work/health.json" || fail "$bin /healthz: $(cat "$work/health.json")"
  local reply
  reply=$(cd "$dir" && PORT=$port DATA_DIR="$work/$bin.data" RESOURCE_TYPE="$type" ADMIN_TOKEN=generation-check "$CARGO_TARGET_DIR/debug/$bin" send --event start --wait) ||
    fail "$bin send: $reply"
  echo "$reply" | grep -q '"state": "active"' || fail "$bin did not configure: $reply"
  reply=$(cd "$dir" && PORT=$port DATA_DIR="$work/$bin.data" RESOURCE_TYPE="$type" ADMIN_TOKEN=generation-check "$CARGO_TARGET_DIR/debug/$bin" send --event end --wait) ||
    fail "$bin send: $reply"
  echo "$reply" | grep -q '"state": "released"' || fail "$bin did not release: $reply"
  kill -TERM "$server_pid"
  wait "$server_pid" || fail "$bin did not stop cleanly on SIGTERM: $(tail -5 "$work/$bin.server.log")"
  server_pid=""
  rm "$dir/.env"
}

check() { # name resource_type manager [--no-clippy]
  local name=$1 type=$2 manager=$3 lint=${4:-} dir="$work/$1"
  step "checking $name (resource type: $type, manager: $manager)"
  [ ! -e "$dir/template" ] || fail "$name: template/ left behind"
  for gone in tests/template.rs tests/generation.sh cargo-generate.toml .ci CHANGELOG.md docs/decisions \
    scripts/install-cargo-generate.sh scripts/sync-template.sh; do
    [ ! -e "$dir/$gone" ] || fail "$name: template-only $gone left behind"
  done
  grep -qx "name = \"$name\"" "$dir/Cargo.toml" || fail "$name: package not renamed"
  grep -q "^# $name" "$dir/README.md" || fail "$name: README not the generated one"
  [ "$(cat "$dir/src/resource_type.txt")" = "$type" ] || fail "$name: default resource type"
  grep -q "^manager = \"$manager\"" "$dir/webhook-template.toml" || fail "$name: the answers are not recorded"
  if [ "$manager" = blank ]; then
    local lines
    lines=$(cd "$dir" && find . -name '*.rs' -not -path './webhook-core/*' -not -path './examples/*' -not -path './target/*' -print0 | xargs -0 cat | wc -l)
    [ "$lines" -le 400 ] || fail "$name: $lines lines of Rust outside webhook-core/ and examples/"
    step "$name: $lines lines of Rust outside webhook-core/ and examples/"
  else
    grep -q "^pub type Manager = " "$dir/src/resource.rs" || fail "$name: src/resource.rs is not the example"
    grep -q "src/resource.rs" "$dir/examples/tests/$manager.rs" || fail "$name: its real-backend test does not test src/resource.rs"
    [ ! -e "$dir/tests/manager.rs" ] || fail "$name: the blank manager's test is left"
  fi
  (
    cd "$dir"
    cargo fmt --check
    cargo build --locked
    [ "$lint" = --no-clippy ] || cargo clippy --locked --all-targets -- -D warnings
    if [ "$manager" = blank ]; then
      without_backends cargo test --locked
    else
      cargo test --locked
    fi
  ) || fail "$name: build, clippy or tests"
  if [ "$manager" = blank ]; then
    serve_and_send "$dir" "$name" "$type"
    check_deploy "$dir" "$type"
  fi
  step "$name ok"
}

# The generated project's own deployment checks, and the resource type as Kubernetes gets it.
check_deploy() { # dir resource_type
  local tools="${DEPLOY_TOOLS_DIR:-$HOME/.local/share/webhook-deploy-tools}" rendered
  (cd "$1" && scripts/check-deploy.sh >"$work/deploy.log" 2>&1) ||
    fail "$1: scripts/check-deploy.sh: $(cat "$work/deploy.log")"
  rendered=$(cd "$1" && kubectl kustomize k8s/base | "$tools/bin/python" -c '
import sys, yaml
print(next(d["data"]["RESOURCE_TYPE"] for d in yaml.safe_load_all(sys.stdin) if d["kind"] == "ConfigMap"))')
  [ "$rendered" = "$2" ] || fail "$1: the ConfigMap says RESOURCE_TYPE=$rendered"
}

start=$(date +%s)
generate vlan-hook "Switch Port"
check vlan-hook "Switch Port" blank

# Spaces, quotes, a dollar sign, a backslash and non-ASCII letters in the resource type.
odd='Salle de réunion "Bâtiment B" $HOME \ Ω'
generate room-hook "$odd"
# The same code as vlan-hook but for its resource type: clippy would find what it found there.
check room-hook "$odd" blank --no-clippy

# Each example as the project's manager, with a resource type it could be for.
for choice in "postgres_database:Database" "container:Container" "api_key:API Key" \
  "switch_port:Switch Port" "virtual_machine:Virtual Machine"; do
  manager=${choice%%:*}
  name="${manager//_/-}-hook"
  generate "$name" "${choice#*:}" "$manager"
  check "$name" "${choice#*:}" "$manager"
done

# From a git repository (what users of --git get: the committed tree), the same files.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 && [ -z "$(git -C "$root" status --porcelain)" ]; then
  mkdir "$work/git"
  cargo generate --git "file://$root" --name vlan-hook --silent --vcs none \
    -d resource_type="Switch Port" -d manager=blank --destination "$work/git" >"$work/git.log" 2>&1 ||
    { cat "$work/git.log" >&2; fail "cargo generate --git"; }
  diff -r -x target "$work/git/vlan-hook" "$work/vlan-hook" ||
    fail "--git and --path give different projects"
  step "--git gives the same project"
else
  step "skipping the --git comparison: the working tree has uncommitted changes"
fi

# An empty resource type is refused with a message saying what to give.
if cargo generate --path "$root" --name empty-hook --silent --vcs none -d resource_type="" \
  --destination "$work" >"$work/empty.log" 2>&1; then
  fail "an empty resource type was accepted"
fi
grep -q "resource_type" "$work/empty.log" || fail "no clear message for an empty resource type: $(cat "$work/empty.log")"
# So is a manager that is not an example, naming the choices.
if cargo generate --path "$root" --name odd-hook --silent --vcs none -d resource_type=Port \
  -d manager='x;y' --destination "$work" >"$work/manager.log" 2>&1; then
  fail "a manager that is no example was accepted"
fi
grep -q "not a valid value for manager" "$work/manager.log" || fail "no clear message for a bad manager: $(cat "$work/manager.log")"

step "all variants ok in $(($(date +%s) - start)) s"
