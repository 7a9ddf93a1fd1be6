# The webhook as a container image: one statically linked release binary on an empty base
# (`scratch`), run as a numeric non-root user. About 9 MB.
#
#   docker build -t registry.example.com/team/webhook:0.1.0 .
#
# Needs BuildKit (the default builder of Docker 23+, and podman/buildah) for the cache mounts.
# scripts/check-image.sh proves the runtime stage without a Rust image.

# Debian bookworm's C library is linked into the binary; check-image.sh expects the same.
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# - crt-static links the C library in, so the image needs no /lib. On the gnu target it
#   needs an explicit --target (proc macros must stay dynamic); this is the build's own.
# - The cache mounts keep downloaded crates and compiled dependencies between builds: a
#   source change recompiles only this crate.
# - cargo install names the binary after the package, which differs per project; moving
#   it to /webhook keeps this file the same everywhere (and fails if there are two).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target,sharing=locked \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo install --path . --root /out --locked --target "$(rustc --print host-tuple)" \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/var/lib/webhook \
 && mv /out/bin/* /rootfs/webhook
# What the runtime stage copies, besides the binary:
# - CA roots for HTTPS reports: the HTTP client loads /etc/ssl/certs/ca-certificates.crt at
#   start-up; without it every HTTPS report fails with "UnknownIssuer";
# - the ledger directory (DATA_DIR), owned by the service user so that a Docker volume
#   mounted there starts writable (Kubernetes uses fsGroup instead).
# Host names need nothing more: the static C library reads /etc/hosts and then DNS
# (/etc/resolv.conf), both of which the container runtime or kubelet mounts.
RUN cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
 && chown 65532:65532 /rootfs/var/lib/webhook

FROM scratch AS runtime
COPY --from=build /rootfs/ /
# A number, not a name: there is no /etc/passwd, and Kubernetes' runAsNonRoot can only
# verify a numeric user. 65532 is the conventional "nonroot" id of distroless images.
USER 65532:65532
# The embedded ledger lives here; a volume keeps it across container restarts and lets the
# service write with a read-only root filesystem (Kubernetes mounts a PVC here instead).
ENV DATA_DIR=/var/lib/webhook
VOLUME ["/var/lib/webhook"]
EXPOSE 8080
# No HEALTHCHECK: there is no shell or curl in the image; Kubernetes probes /healthz.
ENTRYPOINT ["/webhook"]
