#!/usr/bin/env bash
# Benchmarks VMDK export and import, vdisk against qemu-img, on one 1 GiB qcow2 chain holding
# 512 MiB of data (a base with every other MiB written, half random bytes and half text-like
# compressible bytes, plus an overlay rewriting some of it).
#   export: qemu-img convert -O vmdk -o subformat=streamOptimized top.qcow2 q.vmdk
#           vdisk convert -O vmdk,subformat=streamOptimized top.qcow2 v.vmdk
#   import: qemu-img convert -f vmdk -O qcow2 q.vmdk back.qcow2
#           vdisk import q.vmdk back.qcow2   (the streaming importer, reading the same file)
# Each pair runs ROUNDS times (default 3) interleaved, medians reported; MB/s counts the
# chain's 512 MiB of data (MB = 10^6 bytes); ratio = qemu time / vdisk time (> 1: vdisk is
# faster). The results are checked with qemu-img compare (not timed). Both tools compress
# with zlib's default level 6.
# Usage: scripts/bench/vmdk.sh [workdir] [rounds]   (needs ~3 GiB of scratch space)
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/vireo-vmdk-bench.XXXXXX)}
rounds=${2:-3}
mkdir -p "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p vireo-disk --bin vdisk --manifest-path "$root/Cargo.toml"
vdisk=$CARGO_TARGET_DIR/release/vdisk
cd "$work"

data_bytes=$((512 << 20))

make_chain() { # base: every other MiB holds data; top: an overlay rewriting some of it
    local i text
    rm -f base.raw base.qcow2 top.qcow2
    truncate -s 1G base.raw
    text=$(mktemp)
    for ((i = 0; i < 4096; i++)); do
        printf 'block %08d: the quick brown fox jumps over the lazy dog %d\n' "$i" $((i * 7919))
    done | head -c $((1 << 20)) >"$text"
    for ((i = 0; i < 1024; i += 2)); do
        if ((i % 4 == 0)); then
            head -c $((1 << 20)) /dev/urandom
        else
            cat "$text"
        fi | dd of=base.raw bs=1M seek="$i" conv=notrunc status=none
    done
    rm -f "$text"
    qemu-img convert -f raw -O qcow2 base.raw base.qcow2
    rm -f base.raw
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    qemu-io -c "write -P 0x5a 0 64M" -c "write -P 0xa5 512M 32M" top.qcow2 >/dev/null
}

# shellcheck source=timing.sh
source "$root/scripts/bench/timing.sh"

qemu_export() { rm -f q.vmdk; seconds qemu-img convert -O vmdk -o subformat=streamOptimized top.qcow2 q.vmdk; }
vdisk_export() { rm -f v.vmdk; seconds "$vdisk" convert -O vmdk,subformat=streamOptimized top.qcow2 v.vmdk 2>/dev/null; }
qemu_import() { rm -f qb.qcow2; seconds qemu-img convert -f vmdk -O qcow2 q.vmdk qb.qcow2; }
vdisk_import() { rm -f vb.qcow2; seconds "$vdisk" import q.vmdk vb.qcow2 2>/dev/null; }

pair() { # name qemu_fn vdisk_fn: interleaved rounds, medians
    local name=$1 qemu_fn=$2 vdisk_fn=$3 q=() v=() r qm vm
    for ((r = 0; r < rounds; r++)); do
        if ((r % 2 == 0)); then
            q+=("$($qemu_fn)")
            v+=("$($vdisk_fn)")
        else
            v+=("$($vdisk_fn)")
            q+=("$($qemu_fn)")
        fi
    done
    qm=$(median "${q[@]}")
    vm=$(median "${v[@]}")
    printf '%-8s qemu-img %7.2f s %7.1f MB/s   vdisk %7.2f s %7.1f MB/s   ratio %5.2f\n' "$name" \
        "$qm" "$(echo "$data_bytes / $qm / 1000000" | bc -l)" \
        "$vm" "$(echo "$data_bytes / $vm / 1000000" | bc -l)" "$(echo "$qm / $vm" | bc -l)"
}

echo "== building the chain in $work"
make_chain
echo "== $rounds interleaved rounds, medians"
pair export qemu_export vdisk_export
pair import qemu_import vdisk_import
for f in q.vmdk v.vmdk qb.qcow2 vb.qcow2; do
    qemu-img compare -q top.qcow2 "$f" || { echo "$f differs from the chain" >&2; exit 1; }
done
printf 'stream sizes: qemu-img %d bytes, vdisk %d bytes (vdisk/qemu %.3f)\n' \
    "$(stat -c %s q.vmdk)" "$(stat -c %s v.vmdk)" \
    "$(echo "$(stat -c %s v.vmdk) / $(stat -c %s q.vmdk)" | bc -l)"
rm -f base.qcow2 top.qcow2 q.vmdk v.vmdk qb.qcow2 vb.qcow2
