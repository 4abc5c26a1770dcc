#!/usr/bin/env bash
# Installs the system packages mend's build needs on Debian: libclang for
# RocksDB's bindgen step (libclang1-14 alone lacks the builtin headers such as
# stdbool.h, which live in libclang-common-14-dev), and headless Chromium
# with its WebDriver for the dashboard's browser test, and the PostgreSQL
# server for mend-pg's tests and `mend demo --postgres` (the tests start
# their own throwaway instances; the package's own cluster is not used).
# Idempotent and quick when the packages are already present.
set -euo pipefail
pkgs=(libclang1-14 libclang-common-14-dev chromium chromium-driver postgresql)
if dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "mend: installing build dependencies: ${pkgs[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
