#!/usr/bin/env bash
# The whole test suite: installs the build's system packages if missing,
# then runs every test of the workspace in the release profile (the one
# RocksDB is compiled for; see BUILD notes in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo test --release --locked --workspace "$@"
