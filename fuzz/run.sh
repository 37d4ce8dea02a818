#!/usr/bin/env bash
# Builds and runs every fuzz target for SECONDS each; exits non-zero on the first crash.
# Usage: fuzz/run.sh SECONDS
set -euo pipefail

seconds="${1:?usage: $0 SECONDS}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# cargo-fuzz needs nightly flags (-Z sanitizer); RUSTC_BOOTSTRAP lets a stable toolchain pass them.
export RUSTC_BOOTSTRAP=1

for target in $(cargo fuzz list); do
    echo "== fuzz target ${target}: ${seconds}s"
    cargo fuzz run "${target}" -- -max_total_time="${seconds}"
done
