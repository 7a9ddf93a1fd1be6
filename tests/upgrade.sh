#!/usr/bin/env bash
# Tests scripts/upgrade.sh as an owner would use it. This checkout's working tree
# (uncommitted files included) becomes the first commit of a scratch template repository
# (BASE); a second commit changes it as a release would (NEW): the core, a documentation
# twin, .env.example, a file dropped, a file added, the blank manager's test, the version.
# A project generated from BASE, whose owner then edits src/resource.rs, .env.example and
# README.md, is upgraded to NEW; the test checks what each file became, that the upgrade
# refuses without webhook-template.toml and over uncommitted changes, and that the upgraded
# project builds and passes its tests. Not shipped to generated projects.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "upgrade test: FAILED: $*" >&2; exit 1; }
step() { echo "upgrade test: $*"; }
commit() { # dir message
  git -C "$1" add -A
  git -C "$1" -c user.name="upgrade test" -c user.email=upgrade-test@localhost -c commit.gpgsign=false \
    commit --quiet -m "$2"
}
check() { # description, then a command that must succeed
  local what=$1
  shift
  "$@" || fail "$what"
  step "ok: $what"
}

start=$(date +%s)

# --- The template, at BASE and at NEW --------------------------------------------------------
repo="$work/template"
mkdir -p "$repo"
(cd "$root" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
  # Tracked files deleted in the working tree are listed too; they are not part of it.
  if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
done) >"$work/files"
tar -C "$root" --null -T "$work/files" -cf - | tar -C "$repo" -xf -
git -C "$repo" init --quiet
commit "$repo" "BASE: the working tree of $root"
base=$(git -C "$repo" rev-parse HEAD)
step "BASE is the working tree of $root ($(tr -cd '\0' <"$work/files" | wc -c) files), commit $base"

core_doc="//! Upgrade test: this line is new in the core."
grep -q '^//! ' "$repo/webhook-core/src/lib.rs" || fail "webhook-core/src/lib.rs has no //! line to change"
sed -i "0,/^\/\/! /s||$core_doc\n&|" "$repo/webhook-core/src/lib.rs"
echo "A file the new version of the core adds." >"$repo/webhook-core/src/upgrade-test.txt"
deploy_line="Upgrade test: a line the new version adds to docs/deploy.md."
for f in docs/deploy.md template/docs/deploy.md.liquid; do
  printf '\n%s\n' "$deploy_line" >>"$repo/$f"
done
env_line="# Upgrade test: a comment the new version adds to .env.example."
for f in .env.example template/.env.example.liquid; do
  echo "$env_line" >>"$repo/$f"
done
echo "// Upgrade test: the template's blank manager test changed." >>"$repo/tests/manager.rs"
[ -f "$repo/.yamllint" ] || fail "the template has no .yamllint to drop"
git -C "$repo" rm --quiet .yamllint
echo "Upgrade test: a file the new version adds." >"$repo/docs/upgrade-test.md"
grep -q '^version = "0.2.0"$' "$repo/template/webhook-template.toml.liquid" ||
  fail "template/webhook-template.toml.liquid does not record version = \"0.2.0\""
sed -i 's/^version = "0.2.0"$/version = "0.2.1"/' "$repo/template/webhook-template.toml.liquid"
commit "$repo" "NEW: a release"
new=$(git -C "$repo" rev-parse HEAD)
step "NEW changes the core, docs/deploy.md, .env.example, tests/manager.rs, drops .yamllint, adds docs/upgrade-test.md, version 0.2.1: commit $new"

# --- A project generated from BASE, edited by its owner --------------------------------------
name=upgrade-check
type='Lab "Core" Switch \ $HOME'
mkdir -p "$work/projects"
cargo generate --git "file://$repo" --revision "$base" --name "$name" --silent --vcs none \
  --allow-commands -d resource_type="$type" -d manager=blank --destination "$work/projects" \
  >"$work/generate.log" 2>&1 || { cat "$work/generate.log" >&2; fail "cargo generate from BASE"; }
project="$work/projects/$name"
cp -R "$project" "$work/generated"
check "the generated project records version 0.2.0" grep -qx 'version = "0.2.0"' "$project/webhook-template.toml"
check "the generated project records the resource type, escaped" \
  grep -qxF 'resource_type = "Lab \"Core\" Switch \\ $HOME"' "$project/webhook-template.toml"

# Refused without webhook-template.toml, with a message saying what it is.
cp -R "$project" "$work/unrecorded"
rm "$work/unrecorded/webhook-template.toml"
if (cd "$work/unrecorded" && scripts/upgrade.sh "file://$repo" --from "$base" --to "$new") >"$work/unrecorded.log" 2>&1; then
  fail "the upgrade ran without webhook-template.toml"
fi
check "the upgrade refuses without webhook-template.toml" grep -q "no webhook-template.toml" "$work/unrecorded.log"

owner_resource="// The owner's own line: the upgrade must leave it."
owner_env="OWNER_SETTING=kept-by-the-upgrade"
owner_readme="The owner's note in the README."
git -C "$project" init --quiet
commit "$project" "generated"
echo "$owner_resource" >>"$project/src/resource.rs"
echo "$owner_env" >>"$project/.env.example"
echo "$owner_readme" >>"$project/README.md"
echo "The owner's file in the core: replaced with the core." >"$project/webhook-core/owner-notes.md"
cp "$project/src/resource.rs" "$work/resource.rs"

# Refused over uncommitted changes, which it leaves as they are.
if (cd "$project" && scripts/upgrade.sh "file://$repo" --from "$base" --to "$new") >"$work/dirty.log" 2>&1; then
  fail "the upgrade ran over uncommitted changes"
fi
check "the upgrade refuses over uncommitted changes" grep -q "uncommitted changes" "$work/dirty.log"
check "the refused upgrade changed nothing" \
  bash -c '! grep -qF "$1" "$2/webhook-core/src/lib.rs"' _ "$core_doc" "$project"
commit "$project" "the owner's changes"

# --- The upgrade ------------------------------------------------------------------------------
step "running scripts/upgrade.sh file://$repo --from $base --to $new"
(cd "$project" && scripts/upgrade.sh "file://$repo" --from "$base" --to "$new") >"$work/upgrade.log" 2>&1 ||
  { cat "$work/upgrade.log" >&2; fail "scripts/upgrade.sh"; }
sed 's/^/  | /' "$work/upgrade.log"

check "the core change arrived (webhook-core/src/lib.rs)" grep -qxF "$core_doc" "$project/webhook-core/src/lib.rs"
check "webhook-core/src/upgrade-test.txt was added" test -f "$project/webhook-core/src/upgrade-test.txt"
check "webhook-core/owner-notes.md, not in NEW's core, was deleted and reported" \
  bash -c '! [ -e "$1/webhook-core/owner-notes.md" ] && grep -q "^  webhook-core/owner-notes.md$" "$2"' _ "$project" "$work/upgrade.log"
check "docs/deploy.md, which the owner never changed, was updated" grep -qxF "$deploy_line" "$project/docs/deploy.md"
check "docs/upgrade-test.md, new in NEW, was added" test -f "$project/docs/upgrade-test.md"
check ".yamllint, which NEW dropped and the owner never changed, was deleted" test ! -e "$project/.yamllint"
check ".env.example kept the owner's line" grep -qxF "$owner_env" "$project/.env.example"
check ".env.example did not take the template's new line" bash -c '! grep -qxF "$1" "$2"' _ "$env_line" "$project/.env.example"
check ".env.example.upgrade has the template's new line" grep -qxF "$env_line" "$project/.env.example.upgrade"
check ".env.example.upgrade has the resource type as generated" grep -qF 'RESOURCE_TYPE="Lab \"Core\" Switch \\ \$HOME"' "$project/.env.example.upgrade"
check "the conflict is reported" grep -qF ".env.example -> .env.example.upgrade" "$work/upgrade.log"
check "README.md, changed by the owner only, was kept" grep -qxF "$owner_readme" "$project/README.md"
check "README.md has no .upgrade (the template did not change it)" test ! -e "$project/README.md.upgrade"
check "src/resource.rs is exactly as the owner left it" cmp -s "$work/resource.rs" "$project/src/resource.rs"
check "tests/manager.rs, the owner's test, was not touched" cmp -s "$work/generated/tests/manager.rs" "$project/tests/manager.rs"
check "tests/manager.rs.upgrade has the template's new version" \
  grep -qxF "// Upgrade test: the template's blank manager test changed." "$project/tests/manager.rs.upgrade"
check "webhook-template.toml has the new version" grep -qx 'version = "0.2.1"' "$project/webhook-template.toml"
check "webhook-template.toml still has the answers" grep -qx "manager = \"blank\"" "$project/webhook-template.toml"
check "the summary gives the next steps" grep -q "cargo test" "$work/upgrade.log"

# The core is exactly NEW's: what a project generated from NEW has.
mkdir -p "$work/fresh"
cargo generate --git "file://$repo" --revision "$new" --name "$name" --silent --vcs none \
  --allow-commands -d resource_type="$type" -d manager=blank --destination "$work/fresh" \
  >"$work/fresh.log" 2>&1 || { cat "$work/fresh.log" >&2; fail "cargo generate from NEW"; }
check "webhook-core/ is exactly NEW's" diff -r "$work/fresh/$name/webhook-core" "$project/webhook-core"
check "every file the owner did not change is NEW's" bash -c '
  cd "$1" && find . -path ./webhook-core -prune -o -type f -print | while IFS= read -r f; do
    case "$f" in ./.env.example | ./README.md | ./src/resource.rs | ./tests/manager.rs) continue ;; esac
    cmp -s "$f" "$2/$f" || { echo "differs: $f" >&2; exit 1; }
  done' _ "$work/fresh/$name" "$project"

# --- The defaults: from the tag v<recorded version>, to a local path's working tree ----------
git -C "$repo" tag v0.2.0 "$base"
uncommitted="Upgrade test: a line not committed in the template's working tree."
echo "$uncommitted" >>"$repo/docs/upgrade-test.md"
cp -R "$work/generated" "$work/defaults"
step "running scripts/upgrade.sh $repo (a local path; no --from, no --to) in a copy of the generated project"
(cd "$work/defaults" && scripts/upgrade.sh "$repo") >"$work/defaults.log" 2>&1 ||
  { cat "$work/defaults.log" >&2; fail "scripts/upgrade.sh with the defaults"; }
check "the defaults start from the tag v0.2.0" grep -q "came from (v0.2.0)" "$work/defaults.log"
check "the defaults bring in the core change" grep -qxF "$core_doc" "$work/defaults/webhook-core/src/lib.rs"
check "the defaults take the local path's working tree, uncommitted lines included" \
  grep -qxF "$uncommitted" "$work/defaults/docs/upgrade-test.md"
check "the defaults update .env.example, which this owner never changed" grep -qxF "$env_line" "$work/defaults/.env.example"
check "the defaults report no conflict" grep -q "^conflicts (.*: 0$" "$work/defaults.log"
check "the defaults record the new version" grep -qx 'version = "0.2.1"' "$work/defaults/webhook-template.toml"

# --- The upgraded project builds and passes its tests -----------------------------------------
step "cargo build and cargo test in the upgraded project (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$project" && cargo build) || fail "cargo build in the upgraded project"
step "ok: cargo build"
(cd "$project" && cargo test) || fail "cargo test in the upgraded project"
step "ok: cargo test"

step "passed in $(($(date +%s) - start)) s"
