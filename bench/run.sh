#!/usr/bin/env bash
# Benchmarks the webhook side by side with a bare poem server, in one run on this machine,
# and prints one table. Run on demand (not part of the tests): bench/run.sh
#
#   DURATION=10 CONNECTIONS=16 REPS=3 bench/run.sh
#   ONLY=start bench/run.sh     # only the signed START rows (both ledgers), then stop
#   ONLY=retention bench/run.sh # only the ledger's size and start-up with and without retention
#
# The PostgreSQL rows start their own server (PostgreSQL 13 or later, default durability)
# in a temporary directory on a free port, as the ledger tests do.
#
# Throughput and latency come from bench/src/bin/load.rs over loopback; the median of REPS
# runs is reported, and every non-2xx answer is counted. The load generator shares the
# machine's cores with the server, so absolute figures understate a dedicated server; the
# ratio to bare poem in the same run is the figure to compare.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-16}
REPS=${REPS:-3}
ONLY=${ONLY:-}
MILLION=${MILLION:-1000000}
BOOKINGS=${BOOKINGS:-1000000}
# Everything is built as the image builds the service (see Dockerfile): release, linked
# statically, for the host's target.
host=$(rustc --print host-tuple)
export RUSTFLAGS="-C target-feature=+crt-static"
bin="$CARGO_TARGET_DIR/$host/release"
work=$(mktemp -d)
pid=""
pid2=""
shm=""
pg=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$pid2" ] && kill "$pid2" 2>/dev/null || true
  [ -n "$shm" ] && rm -rf "$shm"
  [ -n "$pg" ] && pg_stop
  rm -rf "$work"
}
trap cleanup EXIT

export WEBHOOK_SECRET=bench-secret-of-at-least-32-bytes-long RESOURCE_TYPE="Switch Port" LOG_LEVEL=warn
export DATA_DIR="$work/data" REPLAY_TOLERANCE=off LEDGER_RETENTION=off HOST=127.0.0.1
mkdir -p "$DATA_DIR"

echo "building (release)..." >&2
cargo build --quiet --release --target "$host" --manifest-path "$root/bench/Cargo.toml"
cargo build --quiet --release --target "$host" --manifest-path "$root/Cargo.toml"

free_port() { "$bin/load" port; }

start() { # binary port
  PORT=$2 "$1" >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 500); do
    curl -fso /dev/null -X "${3:-GET}" "http://127.0.0.1:$2${4:-/healthz}" && return 0
    sleep 0.01
  done
  echo "server did not start: $(cat "$work/server.log")" >&2
  exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

# Median (by requests/s) of REPS runs: prints "rps p50_us p99_us non2xx+errors".
measure() { # url mode
  for _ in $(seq 1 "$REPS"); do
    "$bin/load" run "$1" "$2" "$CONNECTIONS" "$DURATION"
  done | sed 's/[a-z0-9_]*=//g' | sort -n -k2 | sed -n "$(((REPS + 1) / 2))p" |
    awk '{print $2, $3, $4, $5 + $6}'
}

rows=()
row() { rows+=("$(printf '| %-46s | %s |' "$1" "$2")"); }
load_row() { # label "rps p50 p99 bad" [ratio-base]
  read -r rps p50 p99 bad <<<"$2"
  local ratio=""
  [ -n "${3:-}" ] && ratio=$(awk -v a="$rps" -v b="$3" 'BEGIN {printf " (%.0f%% of bare poem)", 100 * a / b}')
  row "$1" "$rps req/s$ratio, p50 $((p50)) µs, p99 $((p99)) µs, non-2xx $bad"
}

# Drops the last ledger and lets the disk finish writing, so the next scenario does not run
# beside the kernel's write-back of the previous one's.
settle_disk() {
  rm -rf "$DATA_DIR"
  sync
  sleep 1
}

# The ledger's size and start-up after BOOKINGS bookings (a START and an END each, four
# generators one after the other), kept for good and with a retention short enough to act
# during the run (REPLAY_TOLERANCE shorter still, as start-up requires).
retention_rows() {
  local setting tolerance bytes kept bad
  for setting in off 20s; do
    tolerance=off
    [ "$setting" = off ] || tolerance=10s
    export DATA_DIR="$work/data-retention-$setting" LEDGER_RETENTION=$setting REPLAY_TOLERANCE=$tolerance
    mkdir -p "$DATA_DIR"
    port=$(free_port)
    start "$bin/noop-webhook" "$port"
    for _ in 1 2 3 4; do
      "$bin/load" run "http://127.0.0.1:$port/webhook" startend "$CONNECTIONS" 3600 "$((BOOKINGS / 2))"
    done >"$work/retention"
    # Long enough for retention to reach the last bookings: their age, then a round.
    [ "$setting" = off ] || sleep 30
    stop
    bad=$(sed -n 's/.*non2xx=\([0-9]*\) errors=\([0-9]*\).*/\1 \2/p' "$work/retention" | awk '{s += $1 + $2} END {print s}')
    bytes=$(du -cb "$DATA_DIR"/ledger.db* | tail -n 1 | cut -f 1)
    kept="?"
    command -v sqlite3 >/dev/null && kept=$(sqlite3 "$DATA_DIR/ledger.db" "SELECT COUNT(*) FROM bookings")
    row "ledger after $BOOKINGS bookings, LEDGER_RETENTION=$setting" \
      "$((bytes / 1024 / 1024)) MiB on disk, $kept bookings kept, start-up $(startup) ms (median of 5), non-2xx $bad"
    settle_disk
  done
  export LEDGER_RETENTION=off REPLAY_TOLERANCE=off
}

# Prints the table of the rows measured.
table() { # what
  echo
  echo "Benchmarks $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB;" \
    "$1; $CONNECTIONS connections, ${DURATION}s × $REPS runs, median. The load generator shares the cores with the server."
  echo
  echo "| measure | result |"
  echo "|---|---|"
  printf '%s\n' "${rows[@]}"
}

startup() { # median of 5, in ms, on the ledger in $DATA_DIR
  for _ in 1 2 3 4 5; do "$bin/load" startup "$bin/noop-webhook"; done |
    sed 's/startup_ms=//' | sort -n | sed -n 3p
}

if [ "$ONLY" = retention ]; then
  retention_rows
  table "retention rows only"
  exit 0
fi

port=$(free_port)
echo "bare poem..." >&2
start "$bin/bare-poem" "$port" POST /
bare=$(measure "http://127.0.0.1:$port/" bare)
stop
bare_rps=${bare%% *}
load_row "bare poem, POST / → 200" "$bare"

# Each scenario gets a fresh server and ledger, so none pays for the previous one's
# background work (the ledger's write-ahead log checkpoints after the START runs).
webhook_row() { # label path mode [data-dir]
  export DATA_DIR="${4:-$work/data-$3}"
  mkdir -p "$DATA_DIR"
  port=$(free_port)
  start "$bin/noop-webhook" "$port"
  [ -n "${idle:-}" ] || idle=$(rss_kib)
  last=$(measure "http://127.0.0.1:$port$2" "$3")
  load_row "$1" "$last" "$bare_rps"
  stop
  settle_disk
}
echo "webhook..." >&2
# The light scenarios first: the START runs write a lot, and the machine takes a while to
# become quiet again after them.
if [ "$ONLY" != start ]; then
  webhook_row "webhook, signed START of another type (ignored)" /webhook ignored
  webhook_row "webhook, GET /healthz" /healthz healthz
fi
webhook_row "webhook, signed EVENT_START, new id each" /webhook start
sqlite_rps=${last%% *}
# The same with the ledger in memory (tmpfs): what syncing it to disk costs.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  shm=$(mktemp -d /dev/shm/webhook-bench.XXXXXX)
  webhook_row "… the same, ledger on tmpfs (no disk sync)" /webhook start "$shm"
  shm="" # settle_disk removed it
fi

# A PostgreSQL server of the run's own, with default durability (fsync, synchronous commit).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi
}
pg_start() {
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$pgbin" ]; then
    echo "PostgreSQL is not installed: run scripts/install-backends.sh" >&2
    return 1
  fi
  pg=$(mktemp -d)
  [ "$(id -u)" = 0 ] && chown postgres: "$pg"
  pg_ctl="$pgbin/pg_ctl"
  as_postgres "$pgbin/initdb" -D "$pg/data" -U postgres --auth=trust -E UTF8 >/dev/null
  pg_port=$(free_port)
  as_postgres "$pg_ctl" -D "$pg/data" -l "$pg/server.log" -w \
    -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  createdb="$pgbin/createdb"
}
pg_stop() {
  as_postgres "$pg_ctl" -D "$pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pg"
  pg=""
}
pg_database() { # name: prints its LEDGER_URL
  as_postgres "$createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$1"
  echo "postgres://postgres@127.0.0.1:$pg_port/$1"
}

# Two replicas on one ledger, each loaded by a generator of its own at the same time; the
# median of REPS by their sum: prints "rps p50_us p99_us non2xx+errors rps1 rps2", the
# latencies the worse of the two.
measure_two() { # url1 url2 mode
  for _ in $(seq 1 "$REPS"); do
    "$bin/load" run "$1" "$3" "$CONNECTIONS" "$DURATION" >"$work/one" &
    local first=$!
    sleep 0.01 # another base for the generator's event ids
    "$bin/load" run "$2" "$3" "$CONNECTIONS" "$DURATION" >"$work/two"
    wait "$first"
    cat "$work/one" "$work/two" | sed 's/[a-z0-9_]*=//g' |
      awk '{rps[NR] = $2; if ($3 > p50) p50 = $3; if ($4 > p99) p99 = $4; bad += $5 + $6}
           END {printf "%d %d %d %d %d %d\n", rps[1] + rps[2], p50, p99, bad, rps[1], rps[2]}'
  done | sort -n -k1 | sed -n "$(((REPS + 1) / 2))p"
}

echo "webhook on a PostgreSQL ledger..." >&2
pg_start
export LEDGER_URL
LEDGER_URL=$(pg_database one)
webhook_row "… the same, PostgreSQL ledger, one replica" /webhook start
pg_rps=${last%% *}
LEDGER_URL=$(pg_database two)
port=$(free_port)
start "$bin/noop-webhook" "$port"
pid2=$pid
port2=$(free_port)
start "$bin/noop-webhook" "$port2"
read -r rps p50 p99 bad rps1 rps2 <<<"$(measure_two "http://127.0.0.1:$port/webhook" \
  "http://127.0.0.1:$port2/webhook" start)"
stop
kill "$pid2"
wait "$pid2" 2>/dev/null || true
pid2=""
row "… the same, PostgreSQL ledger, two replicas, a generator each" \
  "$rps1 + $rps2 = $rps req/s ($(awk -v a="$rps" -v b="$pg_rps" 'BEGIN {printf "%.2f", a / b}') × one replica), p50 $p50 µs, p99 $p99 µs, non-2xx $bad"
row "PostgreSQL ledger, one replica, against SQLite" \
  "$(awk -v a="$pg_rps" -v b="$sqlite_rps" 'BEGIN {printf "%.0f%%", 100 * a / b}') of the embedded ledger's START rate (synced, same run)"
unset LEDGER_URL
pg_stop

if [ "$ONLY" = start ]; then
  table "signed START rows only"
  exit 0
fi

row "webhook idle RSS" "$((idle / 1024)) MiB ($idle KiB)"

echo "one million requests..." >&2
export DATA_DIR="$work/data-million"
mkdir -p "$DATA_DIR"
port=$(free_port)
start "$bin/noop-webhook" "$port"
before=$(rss_kib)
third=$((MILLION / 3))
"$bin/load" run "http://127.0.0.1:$port/webhook" startend "$CONNECTIONS" 3600 "$third" >"$work/m1"
after1=$(rss_kib)
"$bin/load" run "http://127.0.0.1:$port/webhook" startend "$CONNECTIONS" 3600 "$third" >"$work/m2"
after2=$(rss_kib)
"$bin/load" run "http://127.0.0.1:$port/webhook" startend "$CONNECTIONS" 3600 "$((MILLION - 2 * third))" >"$work/m3"
after3=$(rss_kib)
stop
bad=$(cat "$work/m1" "$work/m2" "$work/m3" | sed -n 's/.*non2xx=\([0-9]*\) errors=\([0-9]*\).*/\1 \2/p' | awk '{s += $1 + $2} END {print s}')
row "RSS over $MILLION START/END requests" "start $((before / 1024)) MiB, after each third $((after1 / 1024)) / $((after2 / 1024)) / $((after3 / 1024)) MiB, non-2xx $bad"

echo "start-up..." >&2
row "start-up to first /healthz 200, ledger of the run above (median of 5)" "$(startup) ms ($((MILLION / 2)) bookings)"
settle_disk
mkdir -p "$DATA_DIR"
row "start-up to first /healthz 200, new ledger (median of 5)" "$(startup) ms"

size=$(stat -c %s "$bin/reservation-webhook")
row "release binary size" "$((size / 1024 / 1024)) MiB ($size bytes)"

echo "cargo generate..." >&2
if command -v cargo-generate >/dev/null; then
  # From the repository's committed tree, as `cargo generate --git <url>` gets it.
  t0=$(date +%s%N)
  cargo generate --git "file://$root" --name bench-hook --silent --vcs none \
    -d resource_type="Switch Port" --destination "$work" >/dev/null 2>&1
  row "cargo generate wall time" "$((($(date +%s%N) - t0) / 1000000)) ms (--git, local clone)"
  # A developer's build: debug, for the host, without the image's static linking.
  (cd "$work/bench-hook" && env -u RUSTFLAGS cargo build --quiet)
  touch "$work/bench-hook/src/resource.rs"
  t0=$(date +%s%N)
  (cd "$work/bench-hook" && env -u RUSTFLAGS cargo build --quiet)
  row "generated project, warm incremental debug build" "$((($(date +%s%N) - t0) / 1000000)) ms (after touching src/resource.rs)"
else
  row "cargo generate wall time" "not measured: run scripts/install-cargo-generate.sh"
fi

echo "instructions per signed START (callgrind)..." >&2
instructions() { # requests
  local port out="$work/callgrind.$1"
  port=$(free_port)
  PORT=$port valgrind --tool=callgrind --callgrind-out-file="$out" "$bin/noop-webhook" >"$work/vg.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do curl -fso /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.02; done
  [ "$1" -gt 0 ] && "$bin/load" run "http://127.0.0.1:$port/webhook" start 1 600 "$1" >/dev/null
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$out" | head -n 1
}
if command -v valgrind >/dev/null; then
  i0=$(instructions 0)
  i1=$(instructions 50)
  row "instructions per signed START (callgrind)" "$(((i1 - i0) / 50)) (whole process, (I(50) − I(0)) / 50)"
else
  row "instructions per signed START (callgrind)" "not measured: apt-get install -y valgrind"
fi

echo "retention..." >&2
retention_rows

table "all rows"
