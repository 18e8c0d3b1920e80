#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests that start real processes on
# 127.0.0.1, and doc tests. One build is shared by all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
cargo test --workspace --locked
