#!/usr/bin/env bash
# Benchmarks vdisk against qemu-img on identical images: 4 KiB scattered reads and writes,
# allocating 4 KiB writes into an empty overlay (copy-on-write from a full base) at queue depth
# 1 and 16, 64 KiB sequential reads/writes, reads through a 2-deep chain, commit of a layer,
# and a CBT query. The machine is shared, so every comparison runs ROUNDS times (default 5)
# with the two tools interleaved (alternating which goes first) and reports medians.
# Times are process wall times: open, the requests, and the close (which flushes: both tools
# write back metadata and fdatasync). ratio = qemu time / vdisk time (> 1: vdisk is faster).
#
# The commands, for one request pattern (4 KiB, step STRIDE, N requests, depth D):
#   qemu-img bench -f qcow2 -t writeback -i threads -d D -c N -s 4k -S STRIDE [-w] IMAGE
#   vdisk bench                                     -d D -c N -s 4K -S STRIDE [-w] IMAGE
# Both open the image through the host page cache (qemu's -t writeback, its default; vdisk
# always), keep D requests in flight (qemu: thread-pool AIO, its default; vdisk: D worker
# threads), wrap offsets modulo the disk size, and write zeros (qemu's default pattern).
# qemu-img bench has no random mode: a step coprime with the number of 4 KiB blocks scatters
# the requests identically for both.
#
# Usage: scripts/bench/disk.sh [workdir] [rounds]   (needs ~3 GiB of scratch space)
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/vireo-disk-bench.XXXXXX)}
rounds=${2:-5}
mkdir -p "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p vireo-disk --bin vdisk --manifest-path "$root/Cargo.toml"
vdisk=$CARGO_TARGET_DIR/release/vdisk
cd "$work"

stride=$((4096 * 100003))

# shellcheck source=timing.sh
source "$root/scripts/bench/timing.sh"

report() { # name qemu_seconds vdisk_seconds [spread]
    printf '%-40s qemu %8.3f s   vdisk %8.3f s   ratio %5.2f%s\n' "$1" "$2" "$3" \
        "$(echo "$2 / $3" | bc -l)" "${4:-}"
}

spread() { # the lowest and highest of some times, "lo-hi"
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'
}

pair() { # name qemu_fn vdisk_fn: interleaved rounds, medians; each fn prints its seconds
    local name=$1 qemu_fn=$2 vdisk_fn=$3 q=() v=() r
    for ((r = 0; r < rounds; r++)); do
        if ((r % 2 == 0)); then
            q+=("$($qemu_fn)")
            v+=("$($vdisk_fn)")
        else
            v+=("$($vdisk_fn)")
            q+=("$($qemu_fn)")
        fi
    done
    report "$name (median of $rounds)" "$(median "${q[@]}")" "$(median "${v[@]}")" \
        "   (qemu $(spread "${q[@]}"), vdisk $(spread "${v[@]}"))"
}

# The request pattern of the current comparison.
depth=1 count=1 size=4k step=$stride write=() image=base.qcow2

qemu_bench() {
    seconds qemu-img bench -f qcow2 -t writeback -i threads -d "$depth" -c "$count" -s "$size" \
        -S "$step" "${write[@]}" "$image"
}
vdisk_bench() {
    seconds "$vdisk" bench -d "$depth" -c "$count" -s "${size^^}" -S "$step" "${write[@]}" "$image"
}

# Allocating writes: each run gets a fresh empty overlay (made by qemu-img for both tools).
fresh_overlay() {
    rm -f "$1"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1"
}
qemu_alloc() {
    fresh_overlay q-overlay.qcow2
    image=q-overlay.qcow2 qemu_bench
}
vdisk_alloc() {
    fresh_overlay v-overlay.qcow2
    image=v-overlay.qcow2 vdisk_bench
}

echo "== preparing a 1 GiB fully written base"
rm -f base.qcow2
qemu-img create -q -f qcow2 base.qcow2 1G
qemu-io -c "write -P 0x5a 0 1G" base.qcow2 >/dev/null

for depth in 1 16; do
    count=100000 size=4k step=$stride write=() image=base.qcow2
    pair "4K scattered read, depth $depth" qemu_bench vdisk_bench
    count=30000 write=(-w)
    pair "4K scattered write, depth $depth" qemu_bench vdisk_bench
    count=8192
    pair "4K allocating write, depth $depth" qemu_alloc vdisk_alloc
    qemu-img compare -q q-overlay.qcow2 v-overlay.qcow2
    qemu-img check -q v-overlay.qcow2
done

depth=16 count=16384 size=64k step=64k image=base.qcow2 write=()
pair "64K sequential read, depth 16" qemu_bench vdisk_bench
write=(-w)
pair "64K sequential write, depth 16" qemu_bench vdisk_bench

rm -f mid.qcow2 top.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c "write -P 0x11 0 256M" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 0x22 512M 128M" top.qcow2 >/dev/null
depth=16 count=100000 size=4k step=$stride image=top.qcow2 write=()
pair "4K scattered read (2-deep chain), d16" qemu_bench vdisk_bench

echo "== commit of a 1 GiB layer with 384 MiB of scattered data into a full base"
rm -f c-base.qcow2 c-top.qcow2
qemu-img create -q -f qcow2 c-base.qcow2 1G
qemu-io -c "write -P 0x33 0 1G" c-base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c-base.qcow2 -F qcow2 c-top.qcow2
for i in $(seq 0 2 767); do echo "write -P $((i % 250 + 1)) $((i * 1024 * 1024 + 4096 * (i % 7))) 1M"; done \
    | qemu-io c-top.qcow2 >/dev/null
commit_copy() { # tool folder: a fresh copy of the chain to commit
    rm -rf "$1" && mkdir "$1" && cp c-base.qcow2 c-top.qcow2 "$1/" && sync
}
qemu_commit() {
    commit_copy q
    seconds qemu-img commit -q q/c-top.qcow2
}
vdisk_commit() {
    commit_copy v
    seconds "$vdisk" commit v/c-top.qcow2
}
pair "commit (384 MiB)" qemu_commit vdisk_commit
qemu-img compare -q q/c-base.qcow2 v/c-base.qcow2
qemu-img check -q v/c-base.qcow2

echo "== CBT query on a 64 GiB disk with 1% of its 64 KiB blocks changed"
rm -f cbt.qcow2 cbt.qcow2.vtree
"$vdisk" create cbt.qcow2 64G
since=$("$vdisk" cbt enable cbt.qcow2)
# 10486 random 4 KiB writes: each dirties one of the disk's 1048576 tracking blocks (~1%)
"$vdisk" bench -w --random -c 10486 -s 4K cbt.qcow2 >/dev/null
times=()
for ((r = 0; r < rounds; r++)); do
    times+=("$(seconds "$vdisk" cbt changed --since "$since" cbt.qcow2)")
done
"$vdisk" cbt changed --since "$since" cbt.qcow2 >cbt.extents
printf '%-40s vdisk %8.3f s for %d extents (bar: < 0.050 s, includes process start)\n' \
    "cbt changed (64 GiB, 1%, median)" "$(median "${times[@]}")" "$(wc -l <cbt.extents)"
