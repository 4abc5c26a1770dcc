#!/usr/bin/env bash
# The main job with embedded defaults: installs the build's system packages
# if missing, builds mend (release) and runs `mend demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release --locked --quiet --bin mend -- demo "$@"
