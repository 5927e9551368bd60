#!/usr/bin/env bash
# Snapshot benchmark through SOAP (pyVmomi) on a fresh release vireod: CreateSnapshot with and
# without memory and RevertToSnapshot for 256 MiB and 1 GiB test-guest VMs, RemoveAllSnapshots
# (consolidate) of a 3-deep chain holding 1 GiB of changes vs `qemu-img commit` of copies of the
# same files, QueryChangedDiskAreas latency, resume/revert of guests with 75% of their RAM filled
# (first answer, working set back) and the pause of a busy guest during a memory snapshot.
# Prints a table with ratios (see snapshots.py, working_set.py).
# Usage: scripts/bench/snapshots.sh [RUNS] [QUERIES] [MiB...]   (needs /dev/kvm, qemu-img and .cache/venv;
# MiB: guest sizes of the working-set rows, default 256 1024; VIREO_TEST_GUEST: another guest ELF;
# VIREO_BENCH_WORKING_SET_ONLY=1: only the working-set rows)
set -euo pipefail
cd "$(dirname "$0")/../.."
guest="${VIREO_TEST_GUEST:-$PWD/.cache/test-guest/vireo-test-guest.elf}"
[ -n "${VIREO_TEST_GUEST:-}" ] || scripts/setup/10-test-guest.sh >/dev/null
cargo build --release -q --bins -p vireo-agent -p vireo-vmm -p vireo-disk
bin="$PWD/target/release"
data=$(mktemp -d /var/tmp/vireo-snapshot-bench-XXXXXX)
mkdir -p "$data/datastore1/images"
cp "$guest" "$data/datastore1/images/vireo-test-guest.elf"
port=$(.cache/venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
VIREO_ROOT_PASSWORD=bench VIREO_VMM="$bin/vireo-vmm" "$bin/vireod" --data-dir "$data" --listen "127.0.0.1:$port" \
    >"$data/vireod.log" 2>&1 &
vireod=$!
# VMMs outlive vireod (a restarted vireod adopts them): a bench that failed midway ends its own.
end_vmms() { for pid in "$data"/run/vm-*/vmm.pid; do [ -f "$pid" ] && kill -9 "$(cat "$pid")" 2>/dev/null; done; true; }
trap 'kill $vireod 2>/dev/null; wait $vireod 2>/dev/null; end_vmms; rm -rf "$data"' EXIT
echo "load average before: $(cut -d" " -f1-3 /proc/loadavg)"
.cache/venv/bin/python scripts/bench/snapshots.py --port "$port" --data "$data" --vdisk "$bin/vdisk" \
    --runs "${1:-3}" --queries "${2:-50}" ${3:+--working-set "${@:3}"} ${VIREO_BENCH_WORKING_SET_ONLY:+--working-set-only}
echo "load average after: $(cut -d" " -f1-3 /proc/loadavg)"
