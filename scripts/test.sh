#!/usr/bin/env bash
# The whole test suite: installs what the tests need (scripts/setup/*.sh, each idempotent and
# cached under .cache/), builds every binary, runs the Rust tests and the end-to-end pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for step in scripts/setup/*.sh; do
    [ -e "$step" ] || continue
    echo "== setup: $step"
    "$step"
done

echo "== build"
cargo build --workspace --bins
export VIREO_BIN_DIR="$root/target/debug"
export VIREO_TEST_GUEST="$root/.cache/test-guest/vireo-test-guest.elf"

echo "== rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

echo "== fuzz: virtio-blk queues (brief; scripts/fuzz.sh SECONDS for longer)"
scripts/fuzz.sh 20
echo "== fuzz: SOAP decoder, 2 s per input (brief; scripts/fuzz-api.sh SECONDS for longer)"
scripts/fuzz-api.sh 20

if [ -d tests/e2e ] && ls tests/e2e/test_*.py >/dev/null 2>&1; then
    echo "== end-to-end tests (pytest)"
    "$root/.cache/venv/bin/python" -m pytest -v tests/e2e
fi
echo "== all tests passed"
