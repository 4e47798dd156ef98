#!/usr/bin/env bash
# Build a local Rust builder image for docker/Dockerfile on a machine that reaches no container
# registry (where `rust:1.95-bookworm` cannot be pulled): a Debian bookworm made by debootstrap
# with the C/C++ toolchain the -sys crates need, plus this host's Rust toolchain (the one
# rust-toolchain.toml pins), then `docker import`ed. The host's CA bundle goes in too, so cargo
# in the container trusts whatever the host trusts on its way to crates.io.
#
# Usage: scripts/docker/builder-image.sh [image name]   (default comps-rs/rust-builder:1.95; a no-op
# when the image exists). Then:
#   docker build -f docker/Dockerfile --build-arg BUILDER_IMAGE=comps-rs/rust-builder:1.95 \
#       --build-arg BASE_IMAGE=comps-rs/bookworm-base -t comps-rs/comps:latest .
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE="${1:-comps-rs/rust-builder:1.95}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "builder image $IMAGE exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap on this host with apt-get (it builds the local base image; no registry is needed)"
    apt-get install -y debootstrap >/dev/null
fi
# rustc run here resolves rust-toolchain.toml, so this is the pinned toolchain.
SYSROOT="$(rustc --print sysroot)"
echo "toolchain: $(rustc --version) from $SYSROOT"
ROOT="$(mktemp -d /tmp/comps-rs-builder.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap bookworm into $ROOT"
debootstrap --variant=minbase --include=ca-certificates,curl,gcc,g++,libc6-dev,make,pkg-config \
    bookworm "$ROOT" "$MIRROR" >/dev/null
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
# A rustc finds its sysroot next to its own binary: bin/ and lib/ under one prefix is a whole
# installation. The documentation (share/) is left out.
for d in bin lib libexec; do
    if [ -d "$SYSROOT/$d" ]; then
        cp -a "$SYSROOT/$d/." "$ROOT/usr/local/$d/"
    fi
done
mkdir -p "$ROOT/usr/local/cargo"
tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" cargo --version
echo "built builder image $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
