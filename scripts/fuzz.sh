#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/) for a fixed number of inputs from a
# fixed seed, so CI repeats exactly the inputs a developer ran: a short,
# reproducible run, not a search. Longer searches: see FUZZING.md.
# Needs the nightly toolchain (on the image) for libFuzzer with ASan;
# installs cargo-fuzz if missing. The fuzz crate depends on mend-core only,
# so this never compiles RocksDB.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS="${MEND_FUZZ_RUNS:-100000}"
TARGET_DIR="${MEND_FUZZ_TARGET_DIR:-/var/tmp/mend-fuzz-target}"
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "mend: fuzzing needs the nightly toolchain (rustup toolchain list shows none)" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in $(cargo +nightly fuzz list); do
  if ! cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$t" -- \
      -runs="$RUNS" -seed=1 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "mend: fuzz target $t failed (reproduce: cd fuzz && cargo +nightly fuzz run $t -- -runs=$RUNS -seed=1)" >&2
    exit 1
  fi
  echo "fuzz: $t: $(grep -o 'number_of_executed_units: [0-9]*' "$log" | tail -1), seed 1, no crash"
done
