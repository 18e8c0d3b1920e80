#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, integration tests that start real processes on
# 127.0.0.1, and doc tests. One build is shared by all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --locked
# The static launcher that converted images carry; the runc tests and the demo test need it.
bash scripts/build-launcher.sh
# The etcd tests (a real 3-member cluster) skip only when etcd is not installed at all; where
# it is (CI installs etcd-server), a skip would hide a failure, so they must run.
if [ -x /usr/bin/etcd ]; then export COFFER_REQUIRE_ETCD=1; fi
cargo test --workspace --locked
