#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests that start real processes on
# 127.0.0.1, and doc tests. One build is shared by all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
# The static launcher that converted images carry; the runc tests and the demo test need it.
bash scripts/build-launcher.sh
# Single-app images from Debian packages (mmdebstrap) that crates/cli/tests/debian_images.rs
# converts and runs; built once into target/debian-images (about a minute).
bash scripts/build-debian-images.sh
cargo test --workspace --locked
