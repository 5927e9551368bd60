#!/usr/bin/env bash
# Fuzzes the disk formats (disk/fuzz) with cargo-fuzz; nothing may panic, hang or allocate
# absurdly. Target qcow2_image: arbitrary bytes are opened as a qcow2 image, read, mapped,
# checked, written and closed; its corpus starts from small images qemu-img makes (cluster
# sizes, refcount widths, compressed clusters, zero clusters, bitmaps, backing files). Target
# vmdk_image: arbitrary bytes are opened as a VMDK, read, and imported as a stream into a
# qcow2; its corpus starts from qemu-img's monolithicSparse/streamOptimized files, a
# descriptor and our own streamOptimized file. Corpora are kept in .cache/fuzz/TARGET between
# runs; crashes land in disk/fuzz/artifacts/.
# Usage: scripts/fuzz-disk.sh [SECONDS] [TARGET]   (default 60 s, qcow2_image)
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
target=${2:-qcow2_image}
corpus=$root/.cache/fuzz/$target
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# One seed: 8 selector bytes (request offsets), then the image file.
add_seed() { # name image
    { printf '\x00\x10\x40\x7f\x80\xc0\xf0\xff'; cat "$2"; } >"$corpus/seed-$1"
}

make_vmdk_seeds() {
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        qemu-img create -q -f qcow2 src.qcow2 1M
        qemu-io -c "write -P 0x11 0 100k" -c "write -P 0x22 700k 4k" src.qcow2 >/dev/null
        qemu-img convert -O vmdk -o subformat=monolithicSparse src.qcow2 sparse.vmdk
        qemu-img convert -O vmdk -o subformat=streamOptimized src.qcow2 qstream.vmdk
        "$root/target/debug/vdisk" convert -O vmdk,subformat=streamOptimized src.qcow2 ours.vmdk 2>/dev/null
        printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 64 FLAT "flat.vmdk" 0\nRW 64 ZERO\n' >desc.vmdk
    )
    for image in "$work"/*.vmdk; do
        add_seed "$(basename "$image" .vmdk)" "$image"
    done
    rm -rf "$work"
}

make_seeds() {
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        qemu-img create -q -f qcow2 -o cluster_size=512 c512.qcow2 256K
        qemu-io -c "write -P 0x11 0 20K" -c "write -z 64K 8K" c512.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=1 r1.qcow2 1M
        qemu-io -c "write -P 0x22 4k 12k" -c "discard 4k 4k" r1.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=64 r64.qcow2 1M
        qemu-io -c "write -P 0x33 0 8k" r64.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o cluster_size=4k,compat=0.10 v2.qcow2 1M
        qemu-io -c "write -P 0x44 0 8k" v2.qcow2 >/dev/null
        head -c 65536 /dev/urandom >data.raw
        qemu-img convert -c -f raw -O qcow2 -o cluster_size=4k data.raw comp.qcow2
        qemu-img create -q -f qcow2 -o cluster_size=4k bm.qcow2 1M
        qemu-io -c "write -P 0x55 0 4k" bm.qcow2 >/dev/null
        qemu-img bitmap --add -g 64k bm.qcow2 b0
        qemu-img bitmap --add bm.qcow2 b1
        qemu-io -c "write -P 0x66 128k 4k" bm.qcow2 >/dev/null
        qemu-img create -q -u -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 ovl.qcow2 1M
        qemu-img create -q -u -f qcow2 -o cluster_size=4k -b base.raw -F raw ovl-raw.qcow2 1M
        qemu-img create -q -f qcow2 big.qcow2 64K
        qemu-io -c "write -P 0x88 0 64k" big.qcow2 >/dev/null
    )
    for image in "$work"/*.qcow2; do
        add_seed "$(basename "$image" .qcow2)" "$image"
    done
    rm -rf "$work"
}

mkdir -p "$corpus"
if ! compgen -G "$corpus/seed-*" >/dev/null; then
    case $target in
    vmdk_image) (cd "$root" && cargo build -q -p vireo-disk --bin vdisk) && make_vmdk_seeds ;;
    *) make_seeds ;;
    esac
fi
# Scratch images live in memory when /dev/shm exists; removed when the run ends.
VIREO_DISK_FUZZ_DIR=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)/vireo-disk-fuzz.XXXXXX")
export VIREO_DISK_FUZZ_DIR
trap 'rm -rf "$VIREO_DISK_FUZZ_DIR"' EXIT
cd "$root/disk/fuzz"
# Long lines are cut: on a crash cargo-fuzz prints the whole input as a byte list.
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$root/target/fuzz cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=524288 2>&1 | cut -c1-400
