#!/usr/bin/env bash
# virtio-blk benchmark: the test guest's I/O workload on one raw file under vireo-vmm and QEMU
# microvm, each with cache=none (QEMU aio=io_uring) and cache=writeback, plus fio --direct=1 on the host
# on that file; ratios and load average printed.
# Usage: scripts/bench/blk.sh [RUNS] [SECONDS]   (installs fio, and qemu-system-x86 through scripts/bench/qemu-system.sh, if missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/bench/qemu-system.sh
if ! command -v fio >/dev/null; then
    apt-get update -qq && apt-get install -y -qq fio >/dev/null
fi
scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -q -p vireo-vmm
file=$(mktemp /var/tmp/vireo-blk-bench.XXXXXX.raw)
trap 'rm -f "$file"' EXIT
# A fully allocated 1 GiB file, so reads hit real blocks; written back before the first run so
# no runner pays for the writeback of the setup.
dd if=/dev/urandom of="$file" bs=1M count=1024 conv=fsync status=none
python3 scripts/bench/blk.py --vmm target/release/vireo-vmm --guest .cache/test-guest/vireo-test-guest.elf \
    --file "$file" --runs "${1:-3}" --seconds "${2:-3}"
