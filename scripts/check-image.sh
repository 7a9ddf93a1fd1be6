#!/usr/bin/env bash
# Proves the Dockerfile's image works, without a Rust image or a registry:
#  1. builds the release binary here exactly as the build stage does, and checks that it
#     is statically linked;
#  2. builds the Dockerfile's runtime stage, unchanged, on a stand-in for the build stage
#     that holds this binary (with dockerd from Debian's docker.io, started here in a
#     temporary directory); without dockerd, or with CHECK_IMAGE_ENGINE=chroot, it runs the
#     same files in an otherwise empty root directory instead;
#  3. runs it as the Kubernetes manifests do (user 65532, read-only root, no capabilities,
#     secret from a file) and checks GET /healthz and GET /readyz;
#  4. sends a signed booking and checks both reports reach the "central system": one by a
#     host name answered by DNS, one by a name in /etc/hosts (no C library files needed);
#  5. prints the image size (and fails above 25 MB), stops the service (it must exit 0 on
#     SIGTERM) and removes everything it started.
# Needs root, curl, python3, file, readelf (binutils) and a Debian bookworm host (the build
# stage's C library).
set -euo pipefail
cd "$(dirname "$0")/.."

STATIC_FLAGS='-C target-feature=+crt-static'
MAX_IMAGE_BYTES=$((25 * 1000 * 1000))
SECRET=check-image-secret-of-at-least-32-bytes

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
((EUID == 0)) || fail "run as root (dockerd, chroot and the user switch need it)"

# The build stage and this script must compile the same way.
grep -qF "RUSTFLAGS=\"$STATIC_FLAGS\"" Dockerfile || fail "Dockerfile does not use RUSTFLAGS=\"$STATIC_FLAGS\""
grep -q '^FROM scratch AS runtime' Dockerfile || fail "Dockerfile has no 'FROM scratch AS runtime' stage"
grep -q '^VERSION_CODENAME=bookworm' /etc/os-release ||
    echo "warning: this host is not Debian bookworm; the image is built on bookworm" >&2

ENGINE=${CHECK_IMAGE_ENGINE:-}
[[ -z $ENGINE ]] && { command -v dockerd >/dev/null && ENGINE=docker || ENGINE=chroot; }

WORK=$(mktemp -d)
TAG=localhost/webhook-check:$$
PIDS=()
cleanup() {
    set +e
    if [[ -S $WORK/docker.sock ]]; then
        docker rm -f webhook-check-$$ >/dev/null 2>&1
        docker rmi -f "$TAG" localhost/webhook-build-check:$$ >/dev/null 2>&1
    fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    # dockerd leaves its network namespace mounted under its exec root.
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "building the release binary as the build stage does"
TARGET=$(rustc --print host-tuple)
RUSTFLAGS="$STATIC_FLAGS" cargo install --quiet --path . --root "$WORK/out" --locked --target "$TARGET"
BIN=$(echo "$WORK"/out/bin/*)
[[ -x $BIN ]] || fail "expected exactly one binary, got: $BIN"

step "checking it is statically linked"
file -b "$BIN"
# A dynamic binary names its loader (program interpreter) and its libraries (NEEDED).
HEADERS=$(readelf -lW -d "$BIN")
! grep -qE 'program interpreter|\(NEEDED\)' <<<"$HEADERS" || fail "$BIN is dynamically linked"

# The stand-in for the build stage: /rootfs as the Dockerfile's build stage leaves it
# (keep the two in step).
R=$WORK/stage/rootfs
mkdir -p "$R/etc/ssl/certs" "$R/var/lib/webhook"
cp "$BIN" "$R/webhook"
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
chown 65532:65532 "$R/var/lib/webhook"

# The "central system": a DNS server answering central.test (on a loopback address of its
# own, so it needs no free port 53 elsewhere) and an HTTP server logging every report.
DNS_IP=127.0.0.153
HTTP_PORT=$(free_port)
PORT=$(free_port)
cat >"$WORK/central.py" <<'EOF'
import http.server, socket, struct, sys, threading
dns_ip, http_port, log = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
def dns():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((dns_ip, 53))
    while True:
        q, peer = s.recvfrom(512)
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
        qtype, name = struct.unpack("!H", q[i + 1:i + 3])[0], ".".join(labels).lower()
        known, answer = name == "central.test", b""
        if known and qtype == 1:  # A record: 127.0.0.1
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        head = q[:2] + struct.pack("!HHHHH", 0x8180 if known else 0x8183, 1, 1 if answer else 0, 0, 0)
        s.sendto(head + q[12:i + 5] + answer, peer)
        log.write(f"dns {name} type {qtype}\n")
class Central(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        log.write(f"http POST {self.path} host {self.headers['host']}\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
threading.Thread(target=dns, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Central).serve_forever()
EOF
python3 "$WORK/central.py" "$DNS_IP" "$HTTP_PORT" "$WORK/central.log" &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/" && break; sleep 0.2; done

echo "nameserver $DNS_IP" >"$WORK/resolv.conf"
mkdir -p "$WORK/secret" && printf '%s' "$SECRET" >"$WORK/secret/WEBHOOK_SECRET"
chmod 0644 "$WORK/secret/WEBHOOK_SECRET"
# A .env in the service's working directory (/) that would stop it (LOG_LEVEL is no
# filter) if it were read: only debug builds and `--dotenv` read one, never the image.
printf 'LOG_LEVEL=info,[\n' >"$WORK/dotenv"
# central.test is resolved by DNS, central-hosts.test by /etc/hosts.
ENV=(
    PORT="$PORT"
    DATA_DIR=/var/lib/webhook
    WEBHOOK_SECRET_FILE=/run/secrets/webhook/WEBHOOK_SECRET
    NOTIFICATION_ENDPOINT="http://central.test:$HTTP_PORT/notify"
    WEBHOOK_LOG_ENDPOINT="http://central-hosts.test:$HTTP_PORT/log"
    # The stand-in back end speaks plain HTTP on names that are not loopback.
    ALLOW_INSECURE_REPORTS=true
)

if [[ $ENGINE == docker ]]; then
    step "starting dockerd in $WORK"
    export DOCKER_HOST=unix://$WORK/docker.sock DOCKER_BUILDKIT=0
    # The config file only moves dockerd's key file (else /etc/docker/key.json) into $WORK.
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$WORK" >"$WORK/daemon.json"
    dockerd --config-file "$WORK/daemon.json" --data-root "$WORK/docker" --exec-root "$WORK/exec" \
        --pidfile "$WORK/dockerd.pid" -H "$DOCKER_HOST" --iptables=false --bridge=none \
        >"$WORK/dockerd.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail "$WORK/dockerd.log"; fail "dockerd did not start"; }

    step "building the runtime stage of the Dockerfile on the stand-in build stage"
    tar -C "$WORK/stage" -c . | docker import - localhost/webhook-build-check:$$ >/dev/null
    mkdir "$WORK/context"
    { echo "FROM localhost/webhook-build-check:$$ AS build"
      sed -n '/^FROM scratch AS runtime/,$p' Dockerfile; } >"$WORK/context/Dockerfile"
    docker build -t "$TAG" "$WORK/context" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "docker build"; }
    # (/dev, /proc, /sys, /etc/hosts, /etc/hostname, /etc/resolv.conf come from the engine.)
    docker create --name webhook-check-$$ "$TAG" >/dev/null
    echo "image contents:"
    docker export webhook-check-$$ | tar -tv | awk '$6 !~ /^(dev|proc|sys)\// && $6 != ".dockerenv"'
    docker rm webhook-check-$$ >/dev/null
    SIZE=$(docker image inspect -f '{{.Size}}' "$TAG")

    step "running it as Kubernetes will"
    ENV_ARGS=(); for e in "${ENV[@]}"; do ENV_ARGS+=(-e "$e"); done
    docker run -d --name webhook-check-$$ --network host --read-only --cap-drop ALL \
        --security-opt no-new-privileges --add-host central-hosts.test:127.0.0.1 \
        -v "$WORK/resolv.conf:/etc/resolv.conf:ro" -v "$WORK/secret:/run/secrets/webhook:ro" \
        -v "$WORK/dotenv:/.env:ro" "${ENV_ARGS[@]}" "$TAG" >/dev/null
    echo "user: $(docker inspect -f '{{.Config.User}}' webhook-check-$$)"
    logs() { docker logs webhook-check-$$ 2>&1; }
    stop() { docker stop -t 20 webhook-check-$$ >/dev/null; RC=$(docker wait webhook-check-$$); }
else
    step "running it in an empty root directory (no container engine)"
    SIZE=$(du -sb "$R" | cut -f1)
    cp "$WORK/resolv.conf" "$R/etc/resolv.conf"
    printf '127.0.0.1 localhost\n127.0.0.1 central-hosts.test\n' >"$R/etc/hosts"
    mkdir -p "$R/run/secrets/webhook" && cp "$WORK/secret/WEBHOOK_SECRET" "$R/run/secrets/webhook/"
    cp "$WORK/dotenv" "$R/.env"
    env -i "${ENV[@]}" "$(command -v chroot)" --userspec=65532:65532 "$R" /webhook >"$WORK/webhook.log" 2>&1 &
    WEBHOOK_PID=$!
    PIDS+=("$WEBHOOK_PID")
    logs() { cat "$WORK/webhook.log"; }
    stop() { kill -TERM "$WEBHOOK_PID"; RC=0; wait "$WEBHOOK_PID" || RC=$?; }
fi

step "GET /healthz and /readyz"
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/healthz" || { logs; fail "/healthz did not answer 200 (did it read /.env?)"; }
echo
curl -sf "http://127.0.0.1:$PORT/readyz" || { logs; fail "/readyz did not answer 200"; }
echo

step "a signed booking, reported back by host name"
(cd "$WORK" && env -i PORT="$PORT" WEBHOOK_SECRET="$SECRET" "$BIN" send --event start --event-id 4242)
for _ in $(seq 50); do [[ $(grep -c '^http' "$WORK/central.log" 2>/dev/null) -ge 2 ]] && break; sleep 0.2; done
cat "$WORK/central.log"
grep -q '^dns central.test type 1$' "$WORK/central.log" || { logs; fail "central.test was not looked up in DNS"; }
grep -q '^http POST /notify host central.test' "$WORK/central.log" || { logs; fail "no notification arrived"; }
grep -q '^http POST /log host central-hosts.test' "$WORK/central.log" || { logs; fail "no audit entry arrived"; }

step "size and shutdown"
echo "$ENGINE: $SIZE bytes ($((SIZE / 1000 / 1000)) MB)"
((SIZE < MAX_IMAGE_BYTES)) || fail "larger than $MAX_IMAGE_BYTES bytes"
stop
[[ $RC == 0 ]] || { logs; fail "exit status $RC after SIGTERM"; }
logs | tail -n 2
echo "OK: the $ENGINE image serves, reports back by host name and stops cleanly"
