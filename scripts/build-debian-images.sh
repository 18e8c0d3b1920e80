#!/usr/bin/env bash
# Builds the single-app Debian images the real-image tests run (crates/cli/tests/debian_images.rs):
# root filesystem tarballs made by mmdebstrap from Debian packages, the way Docker Hub's
# Debian-based images start (`docker import` of such a tarball is a one-layer image).
#   redis.tar   the Essential set + redis-server
#   python.tar  the Essential set + python3-minimal
#   nginx.tar   the Essential set + nginx-light (crates/cli/tests/sgx_images.rs checks it for SGX)
# With --bench, also the large images of the conversion benchmark (BENCHMARKS.md):
#   python-large.tar  python3 with pip, numpy and scipy (tens of thousands of files)
#   jdk.tar           openjdk-17-jdk-headless (about 300 MB)
# Documentation, man pages and translations are left out as the official *-slim images do
# (with an empty man1 directory, which update-alternatives needs for openjdk's links).
# Output: DIR (default target/debian-images); an image already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=0
if [ "${1:-}" = "--bench" ]; then
    bench=1
    shift
fi
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
        --essential-hook='mkdir -p "$1/usr/share/man/man1"' \
        --format=tar "$suite" "$out/$name.tar.partial"
    mv "$out/$name.tar.partial" "$out/$name.tar"
    echo "$out/$name.tar"
}
build redis redis-server
build python python3-minimal
build nginx nginx-light
if [ "$bench" = 1 ]; then
    build python-large python3,python3-pip,python3-numpy,python3-scipy
    build jdk openjdk-17-jdk-headless
fi
