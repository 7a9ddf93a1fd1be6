#!/usr/bin/env bash
# Brings a newer version of the template this project was generated from into it.
#
#   scripts/upgrade.sh SOURCE [--from REV] [--to REV] [--force]
#
# It regenerates, with the answers recorded in webhook-template.toml, the version this
# project came from (BASE) and the newer one (NEW), and compares each file with both:
#   webhook-core/                  replaced by NEW's, wholesale
#   src/resource.rs, src/resource/ never touched: your manager, and your tests; where the
#   and tests/                     template's version changed, it is written beside as .upgrade
#   a file you never changed       updated to NEW's (deleted if NEW dropped it)
#   a file only you changed        kept
#   a file you and NEW changed     kept, with NEW's version beside it as <file>.upgrade
#   a file only in NEW             added
# target/, .git/, .env and data/ are never looked at. It then rewrites webhook-template.toml
# and prints what it did. Needs cargo-generate (cargo install cargo-generate --locked).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/upgrade.sh SOURCE [--from REV] [--to REV] [--force]

Brings a newer version of the template this project was generated from into it.

  SOURCE      the template: its git URL (https://..., git@..., file://...) or a local path
  --from REV  the template's revision this project was generated from (a tag, branch or
              commit); default: the tag v<version> of the version in webhook-template.toml
  --to REV    the revision to upgrade to; default: SOURCE's default branch, or, for a
              local path, its working tree as it is (uncommitted changes included)
  --force     upgrade even though the project's git working tree has uncommitted changes

webhook-core/ is replaced; src/resource.rs, src/resource/ and tests/ are never touched;
files you never changed are updated; a file both you and the template changed is kept, the
template's new version written beside it as <file>.upgrade. Commit before you upgrade:
`git diff` then shows everything the upgrade changed.
EOF
}

fail() {
  echo "upgrade: $*" >&2
  exit 1
}

# The value of `key = "..."` in a TOML file, unescaped (\\ and \" are all it writes).
toml_string() { # file key
  local value
  value=$(sed -n -E 's/^[[:space:]]*'"$2"'[[:space:]]*=[[:space:]]*"((\\.|[^"\\])*)"[[:space:]]*(#.*)?$/\1/p' "$1" | head -n 1)
  [ -n "$value" ] || return 1
  printf '%s' "$value" | sed 's/\\\(.\)/\1/g'
}

# Every file of a tree, relative to it, one a line, without what the upgrade never looks at.
files_of() { # dir
  (cd "$1" && find . \( -path ./target -o -path ./data -o -path ./webhook-core/target -o -name .git \) -prune \
    -o \( -type f -o -type l \) -print) | sed 's|^\./||' | grep -v -x -e .env -e webhook-template.toml || true
}

# Whether two files have the same content, a missing file being equal only to a missing one.
same() { # a b
  if [ -e "$1" ] || [ -L "$1" ]; then
    [ -e "$2" ] && cmp -s "$1" "$2"
  else
    ! [ -e "$2" ] && ! [ -L "$2" ]
  fi
}

# Copies a file into place through a temporary name, so a reader (this very script, when it
# upgrades itself) never sees it half written.
put() { # from to
  mkdir -p "$(dirname "$2")"
  cp -p "$1" "$2.upgrade-tmp"
  mv -f "$2.upgrade-tmp" "$2"
}

remove() { # path in the project
  rm -f "$root/$1"
  local dir
  dir=$(dirname "$1")
  while [ "$dir" != . ] && rmdir "$root/$dir" 2>/dev/null; do
    dir=$(dirname "$dir")
  done
}

# Whether a path is the owner's own: their manager and their tests.
protected() { # path
  case "$1" in
    src/resource.rs | src/resource/* | tests/*) return 0 ;;
    *) return 1 ;;
  esac
}

# The cargo-generate arguments that take SOURCE at REV.
source_at() { # rev
  local rev=$1 repo=${local_repo:-}
  if [ -n "$repo" ]; then
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
      fail "$repo is not a git repository, so its revision $rev cannot be read (give --from and --to with its git URL, or a clone)"
    local sha tags
    if ! sha=$(git -C "$repo" rev-parse --verify --quiet "$rev^{commit}"); then
      tags=$(git -C "$repo" tag | tr '\n' ' ')
      fail "no revision $rev in $repo (its tags: ${tags:-none})${hint:-}"
    fi
    args=(--git "$repo" --revision "$sha")
  elif [[ $rev =~ ^[0-9a-fA-F]{7,40}$ || $rev == HEAD || $rev == refs/* ]]; then
    args=(--git "$source" --revision "$rev")
  else
    local refs
    refs=$(git ls-remote "$source" "refs/tags/$rev" "refs/heads/$rev") ||
      fail "cannot read the revisions of $source (git ls-remote failed)"
    if awk -v ref="refs/tags/$rev" '$2 == ref { found = 1 } END { exit !found }' <<<"$refs"; then
      args=(--git "$source" --tag "$rev")
    elif awk -v ref="refs/heads/$rev" '$2 == ref { found = 1 } END { exit !found }' <<<"$refs"; then
      args=(--git "$source" --branch "$rev")
    else
      fail "no tag or branch $rev in $source${hint:-}"
    fi
  fi
}

# Generates the project with the recorded answers from the template as `args` says, into
# $work/$1/$name.
generate() { # label what
  local label=$1 what=$2 log="$work/$1.log"
  mkdir -p "$work/$label"
  echo "upgrade: generating $what: cargo generate ${args[*]}"
  if ! (cd "$work" && cargo generate "${args[@]}" --name "$name" --force --silent --vcs none \
    --allow-commands --no-workspace -d resource_type="$resource_type" -d manager="$manager" \
    --destination "$work/$label") >"$log" 2>&1 || [ ! -d "$work/$label/$name" ]; then
    cat "$log" >&2
    fail "generating $what failed (its log is above); nothing in the project was changed"
  fi
}

main() {
  source="" from="" to="" force=false
  while [ $# -gt 0 ]; do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --from) [ $# -ge 2 ] || fail "--from needs a revision"; from=$2; shift 2 ;;
      --to) [ $# -ge 2 ] || fail "--to needs a revision"; to=$2; shift 2 ;;
      --force) force=true; shift ;;
      -*) usage >&2; fail "unknown option $1" ;;
      *) [ -z "$source" ] || { usage >&2; fail "one SOURCE only (got $source and $1)"; }; source=$1; shift ;;
    esac
  done
  [ -n "$source" ] || { usage >&2; exit 2; }

  root=$(cd "$(dirname "$0")/.." && pwd)
  local record="$root/webhook-template.toml"
  [ -f "$record" ] || fail "no webhook-template.toml in $root: it records the template version and the answers this project was generated with, and the upgrade needs them. Was the project generated before the template recorded them (version 0.2.0), or was the file removed? Restore it (git), or write it as a newly generated project has it."
  local version
  version=$(toml_string "$record" version) || fail "$record has no version = \"...\""
  name=$(toml_string "$record" name) || fail "$record has no name = \"...\""
  resource_type=$(toml_string "$record" resource_type) || fail "$record has no resource_type = \"...\""
  manager=$(toml_string "$record" manager) || fail "$record has no manager = \"...\""

  if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    local dirty
    dirty=$(git -C "$root" status --porcelain -- .)
    if [ -n "$dirty" ] && ! $force; then
      printf '%s\n' "$dirty" >&2
      fail "the working tree has uncommitted changes (above): commit or stash them first, so that \`git diff\` shows what the upgrade changes and \`git checkout .\` undoes it; or give --force"
    fi
  fi
  cargo generate --version >/dev/null 2>&1 ||
    fail "cargo-generate is needed: cargo install cargo-generate --locked"

  # A local path is read with git for revisions, and as it is for the default NEW.
  local_repo=""
  local path=${source#file://}
  if [ -d "$path" ]; then
    local_repo=$(cd "$path" && pwd)
  fi

  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT

  hint=""
  if [ -z "$from" ]; then
    from=v$version
    hint=": give --from the revision (tag, branch or commit) this project was generated from"
  fi
  source_at "$from"
  hint=""
  generate base "the version this project came from ($from)"
  if [ -n "$to" ]; then
    source_at "$to"
  elif [ -n "$local_repo" ] && [ "$source" = "$path" ]; then
    args=(--path "$local_repo")
  else
    args=(--git "$source")
  fi
  generate new "the new version (${to:-${local_repo:+the working tree of }$source})"
  local base="$work/base/$name" new="$work/new/$name"

  local base_version new_version
  base_version=$(toml_string "$base/webhook-template.toml" version 2>/dev/null || echo unknown)
  new_version=$(toml_string "$new/webhook-template.toml" version 2>/dev/null) ||
    fail "the new version generates no webhook-template.toml: it is older than this project's template, or not this template"
  [ "$base_version" = "$version" ] ||
    echo "upgrade: warning: $from is version $base_version but this project records $version; files you never changed may show as yours (give --from the revision it was generated from)" >&2

  local updated=() added=() deleted=() kept=() conflicts=() protected_new=()
  local core_updated=0 core_added=0 core_deleted=0 core_lost=()
  local p
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    local b="$base/$p" n="$new/$p" o="$root/$p"
    if [[ $p == webhook-core/* ]]; then
      same "$o" "$n" && continue
      same "$o" "$b" || core_lost+=("$p")
      if [ ! -e "$n" ]; then
        remove "$p"; core_deleted=$((core_deleted + 1))
      elif [ ! -e "$o" ]; then
        put "$n" "$o"; core_added=$((core_added + 1))
      else
        put "$n" "$o"; core_updated=$((core_updated + 1))
      fi
    elif protected "$p"; then
      # Yours, whatever the template did; its new version beside, if it changed.
      if [ -e "$n" ] && ! same "$n" "$b" && ! same "$n" "$o"; then
        put "$n" "$o.upgrade"; protected_new+=("$p -> $p.upgrade")
      fi
    elif same "$o" "$n"; then
      continue
    elif [ -d "$o" ]; then
      put "$n" "$o.upgrade"; conflicts+=("$p")
    elif same "$o" "$b"; then
      # You never changed it: it becomes NEW's.
      if [ ! -e "$n" ]; then
        remove "$p"; deleted+=("$p")
      elif [ ! -e "$o" ]; then
        put "$n" "$o"; added+=("$p")
      else
        put "$n" "$o"; updated+=("$p")
      fi
    elif same "$n" "$b"; then
      kept+=("$p")
    elif [ ! -e "$n" ]; then
      # You changed it and the new version dropped it: yours stays.
      conflicts+=("$p (the new version no longer has it: delete it if you do not need it)")
    else
      put "$n" "$o.upgrade"; conflicts+=("$p -> $p.upgrade")
    fi
  done < <({
    files_of "$base"
    files_of "$new"
    files_of "$root" | grep '^webhook-core/' || true
  } | sort -u)
  put "$new/webhook-template.toml" "$record"

  list() { # title items...
    local title=$1
    shift
    echo "$title: $#"
    local item
    for item in "$@"; do echo "  $item"; done
  }
  echo
  echo "upgrade: $name from template version $version to $new_version"
  echo "webhook-core/: replaced by the new version's ($core_updated updated, $core_added added, $core_deleted deleted)"
  if [ ${#core_lost[@]} -gt 0 ]; then
    list "  your changes to these core files were replaced (git has them)" "${core_lost[@]}"
  fi
  list "updated (you had not changed them)" ${updated[@]+"${updated[@]}"}
  list "added" ${added[@]+"${added[@]}"}
  list "deleted (you had not changed them; the new version dropped them)" ${deleted[@]+"${deleted[@]}"}
  list "kept (yours: you changed them, the template did not)" ${kept[@]+"${kept[@]}"}
  list "conflicts (you and the template both changed them: yours kept, the template's beside it)" ${conflicts[@]+"${conflicts[@]}"}
  if [ ${#protected_new[@]} -gt 0 ]; then
    list "yours, never touched, whose template version changed (the new one beside it)" "${protected_new[@]}"
  fi
  echo "webhook-template.toml: version $new_version"
  if [ $((core_updated + core_added + core_deleted + ${#updated[@]} + ${#added[@]} + ${#deleted[@]} + ${#conflicts[@]} + ${#protected_new[@]})) -eq 0 ]; then
    echo "Nothing to bring in: the project already has everything of the new version."
  fi
  echo
  echo "Next steps:"
  local step=1
  if [ $((${#conflicts[@]} + ${#protected_new[@]})) -gt 0 ]; then
    echo "  $step. Review each .upgrade file: bring what you want of it into the file beside it, then delete it."
    step=$((step + 1))
  fi
  echo "  $step. cargo build"
  echo "  $((step + 1)). cargo test"
  local changelog="CHANGELOG.md in $source"
  [ -z "$local_repo" ] || changelog="$local_repo/CHANGELOG.md"
  echo "  $((step + 2)). Read webhook-core/CHANGELOG.md, the versions after $version: what changed in the core and"
  echo "     what you must do; the rest of the template's changes are in $changelog."
  if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "  $((step + 3)). git status and git diff show everything the upgrade changed; commit it when it builds and passes."
  fi
}

main "$@"
exit
