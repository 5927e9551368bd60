#!/usr/bin/env bash
# Boot benchmark, vireo-vmm vs QEMU microvm with the same test guest, in one run.
# Usage: scripts/bench/boot.sh [RUNS]   (installs Debian's qemu-system-x86 if missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v qemu-system-x86_64 >/dev/null; then
    apt-get update -qq && apt-get install -y -qq qemu-system-x86 >/dev/null
fi
scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -q -p vireo-vmm
exec python3 scripts/bench/boot.py --runs "${1:-10}" --vmm target/release/vireo-vmm \
    --guest .cache/test-guest/vireo-test-guest.elf
