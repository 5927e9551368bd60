#!/usr/bin/env bash
# Boot benchmark, vireo-vmm vs QEMU microvm with the same test guest, in one run.
# Usage: scripts/bench/boot.sh [RUNS]   (installs qemu-system-x86 if missing: scripts/bench/qemu-system.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/bench/qemu-system.sh
scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -q -p vireo-vmm
exec python3 scripts/bench/boot.py --runs "${1:-10}" --vmm target/release/vireo-vmm \
    --guest .cache/test-guest/vireo-test-guest.elf
