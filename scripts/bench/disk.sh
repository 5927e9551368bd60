#!/usr/bin/env bash
# Benchmarks vdisk against qemu-img on identical images: 4 KiB scattered reads/writes,
# 64 KiB sequential reads, allocating writes into an empty overlay, reads through a 2-deep
# chain, commit of a layer, and a CBT query. One run each; prints times and ratios
# (ratio = qemu time / vdisk time, so > 1 means vdisk is faster).
# Usage: scripts/bench/disk.sh [workdir]   (needs ~3 GiB of scratch space)
set -euo pipefail
shopt -s inherit_errexit
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/vireo-disk-bench.XXXXXX)}
mkdir -p "$work"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -q -p vireo-disk --bin vdisk --manifest-path "$root/Cargo.toml"
vdisk=$CARGO_TARGET_DIR/release/vdisk
cd "$work"

# A stride that is coprime with the number of 4 KiB blocks scatters requests over the disk
# the same way for both tools (qemu-img bench has no random mode).
stride=$((4096 * 100003))
count=100000

seconds() { # run a command, print its wall time in seconds
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

report() { # name qemu_seconds vdisk_seconds
    printf '%-34s qemu %8.3f s   vdisk %8.3f s   ratio %5.2f\n' "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"
}

echo "== preparing a 1 GiB fully written base"
rm -f base.qcow2
qemu-img create -q -f qcow2 base.qcow2 1G
qemu-io -c "write -P 0x5a 0 1G" base.qcow2 >/dev/null

q=$(seconds qemu-img bench -f qcow2 -c $count -s 4k -S $stride base.qcow2)
v=$(seconds "$vdisk" bench -c $count -s 4K -S $stride base.qcow2)
report "4K scattered read" "$q" "$v"

q=$(seconds qemu-img bench -w -f qcow2 -c $count -s 4k -S $stride base.qcow2)
v=$(seconds "$vdisk" bench -w -c $count -s 4K -S $stride base.qcow2)
report "4K scattered write (allocated)" "$q" "$v"

q=$(seconds qemu-img bench -f qcow2 -c 16384 -s 64k base.qcow2)
v=$(seconds "$vdisk" bench -c 16384 -s 64K base.qcow2)
report "64K sequential read" "$q" "$v"

q=$(seconds qemu-img bench -w -f qcow2 -c 16384 -s 64k base.qcow2)
v=$(seconds "$vdisk" bench -w -c 16384 -s 64K base.qcow2)
report "64K sequential write" "$q" "$v"

rm -f q-overlay.qcow2 v-overlay.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 q-overlay.qcow2
"$vdisk" create -b base.qcow2 v-overlay.qcow2
q=$(seconds qemu-img bench -w -f qcow2 -c 16384 -s 4k -S $stride q-overlay.qcow2)
v=$(seconds "$vdisk" bench -w -c 16384 -s 4K -S $stride v-overlay.qcow2)
report "4K allocating write (overlay)" "$q" "$v"
qemu-img compare -q q-overlay.qcow2 v-overlay.qcow2

rm -f mid.qcow2 top.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c "write -P 0x11 0 256M" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 0x22 512M 128M" top.qcow2 >/dev/null
q=$(seconds qemu-img bench -f qcow2 -c $count -s 4k -S $stride top.qcow2)
v=$(seconds "$vdisk" bench -c $count -s 4K -S $stride top.qcow2)
report "4K scattered read (2-deep chain)" "$q" "$v"

echo "== commit of a 1 GiB layer with 384 MiB of scattered data into a full base"
rm -f c-base.qcow2 c-top.qcow2
qemu-img create -q -f qcow2 c-base.qcow2 1G
qemu-io -c "write -P 0x33 0 1G" c-base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b c-base.qcow2 -F qcow2 c-top.qcow2
for i in $(seq 0 2 767); do echo "write -P $((i % 250 + 1)) $((i * 1024 * 1024 + 4096 * (i % 7))) 1M"; done \
    | qemu-io c-top.qcow2 >/dev/null
for t in q v; do
    rm -rf "$t" && mkdir "$t" && cp c-base.qcow2 c-top.qcow2 "$t/"
done
sync
q=$(seconds qemu-img commit -q q/c-top.qcow2)
v=$(seconds "$vdisk" commit v/c-top.qcow2)
report "commit (384 MiB)" "$q" "$v"
qemu-img compare -q q/c-base.qcow2 v/c-base.qcow2
qemu-img check -q v/c-base.qcow2

echo "== CBT query on a 64 GiB disk with 1% of its 64 KiB blocks changed"
rm -f cbt.qcow2 cbt.qcow2.vtree
"$vdisk" create cbt.qcow2 64G
since=$("$vdisk" cbt enable cbt.qcow2)
# 10486 random 4 KiB writes: each dirties one of the disk's 1048576 tracking blocks (~1%)
"$vdisk" bench -w --random -c 10486 -s 4K cbt.qcow2 >/dev/null
start=$(date +%s.%N)
"$vdisk" cbt changed --since "$since" cbt.qcow2 >cbt.extents
end=$(date +%s.%N)
printf '%-34s vdisk %8.3f s for %d extents (bar: < 0.050 s, includes process start)\n' \
    "cbt changed (64 GiB, 1%)" "$(echo "$end - $start" | bc -l)" "$(wc -l <cbt.extents)"
