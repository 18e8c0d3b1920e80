#!/usr/bin/env bash
# Builds the single-app Debian images the real-image tests run (crates/cli/tests/debian_images.rs):
# root filesystem tarballs made by mmdebstrap from Debian packages, the way Docker Hub's
# Debian-based images start (`docker import` of such a tarball is a one-layer image).
#   redis.tar   the Essential set + redis-server
#   python.tar  the Essential set + python3-minimal
# Documentation, man pages and translations are left out as the official *-slim images do.
# Output: DIR (default target/debian-images); an image already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/debian-images}"
mkdir -p "$out"
. /etc/os-release
suite="${COFFER_DEBIAN_SUITE:-${VERSION_CODENAME:-bookworm}}"
build() {
    local name=$1 packages=$2
    if [ -s "$out/$name.tar" ]; then
        return
    fi
    mmdebstrap --quiet --variant=essential --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --format=tar "$suite" "$out/$name.tar.partial"
    mv "$out/$name.tar.partial" "$out/$name.tar"
    echo "$out/$name.tar"
}
build redis redis-server
build python python3-minimal
