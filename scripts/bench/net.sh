#!/usr/bin/env bash
# virtio-net benchmark: the test guest's `net get` (host-to-guest TCP throughput and small-request
# round trip) on one TAP under vireo-vmm and QEMU microvm, interleaved; medians, ratios and the
# load average printed. Runs in a network namespace of its own (needs root).
# Usage: scripts/bench/net.sh [RUNS] [SIZE_MB]   (installs qemu-system-x86 if missing: the
# version of the installed qemu-utils, and never by removing anything, since the disk tests'
# qemu-img oracle may be a newer qemu-utils than the distribution's qemu-system-x86 allows)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/bench/qemu-system.sh
scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -q -p vireo-vmm
python3 scripts/bench/net.py --vmm target/release/vireo-vmm --guest .cache/test-guest/vireo-test-guest.elf \
    --runs "${1:-3}" --size-mb "${2:-4}"
