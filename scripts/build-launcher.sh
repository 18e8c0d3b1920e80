#!/usr/bin/env bash
# Builds the static `coffer-launcher` (glibc with crt-static) that `coffer convert` puts into
# images as /coffer/launcher, where no C library may exist.
#
# Only the final link gets `-C target-feature=+crt-static` (via `cargo rustc`), and the explicit
# `--target` keeps the artefacts in target/x86_64-unknown-linux-gnu/, so the workspace's normal
# build (and everyone's RUSTFLAGS) is untouched. Output:
#     target/x86_64-unknown-linux-gnu/release/coffer-launcher
# `coffer demo` and `coffer convert` look there (after --launcher / COFFER_LAUNCHER and next to
# the `coffer` executable).
#
# Known limit of static glibc: host names are resolved without NSS modules, so give the
# launcher an IP address (COFFER_COORDINATOR=10.0.0.5:4433) or a name in the image's
# /etc/hosts when the image has no glibc.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
cargo rustc -p coffer-launcher --release --bin coffer-launcher --target "$target" --locked \
    -- -C target-feature=+crt-static
out="target/$target/release/coffer-launcher"
# ldd (Debian's libc-bin, always installed) says so for a static executable.
if ! ldd "$out" 2>&1 | grep -Eq "not a dynamic executable|statically linked"; then
    echo "error: $out is not statically linked:" >&2
    ldd "$out" >&2 || true
    exit 1
fi
echo "$out"
