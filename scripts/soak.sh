#!/usr/bin/env bash
# Crash soak (issue 19): SIGKILLs vireod at random moments of random snapshot/clone tasks on a
# running test guest, KILLS times (default 100), restarting it after each kill and checking that
# the VM is described truthfully (API tree == .vmsd == .vtree, qemu-img check, flushed guest data,
# not paused, next snapshot works). Not part of scripts/test.sh; bounded by TIMEOUT seconds.
#   scripts/soak.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-100}
seed=${2:-$RANDOM$RANDOM}
timeout=${TIMEOUT:-3000}
cargo build --workspace --bins
export VIREO_BIN_DIR="$PWD/target/debug"
export VIREO_TEST_GUEST="$PWD/.cache/test-guest/vireo-test-guest.elf"
export VIREO_SOAK_KILLS="$kills" VIREO_SOAK_SEED="$seed"
echo "== soak: $kills kills, seed $seed (reproduce: scripts/soak.sh $kills $seed)"
timeout "$timeout" nice -n 10 "$PWD/.cache/venv/bin/python" -m pytest -q -s \
    tests/e2e/test_crash_recovery.py::test_random_kills
