#!/usr/bin/env bash
# Build the local base image the Dockerfiles use on machines that reach no container registry:
# a minimal Debian bookworm made by debootstrap from Debian's package mirror, then `docker
# import`ed. With a registry, skip this and keep the Dockerfiles' public default base image.
# Usage: scripts/docker/base-image.sh [image name]   (default comps-rs/bookworm-base; a no-op when
# the image exists)
set -euo pipefail
IMAGE="${1:-comps-rs/bookworm-base}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "installing debootstrap on this host with apt-get (it builds the local base image; no registry is needed)"
    apt-get install -y debootstrap >/dev/null
fi
ROOT="$(mktemp -d /tmp/comps-rs-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap bookworm into $ROOT"
debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$ROOT" "$MIRROR" >/dev/null
# Keep the image small: package lists and caches are not needed at run time.
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import - "$IMAGE" >/dev/null
echo "built base image $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
