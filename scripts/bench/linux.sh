#!/usr/bin/env bash
# Linux boot benchmark: Debian's cloud kernel + busybox initramfs (scripts/build-guest.sh) booted
# to init and to ACPI power-off under vireo-vmm and, as the reference, the same kernel and
# initramfs under QEMU with full emulation (TCG), in one run; with the instructions vireo-vmm
# completed per kind (kvm-pvm only, docs/kvm-pvm.md). Each boot takes minutes on kvm-pvm.
# Usage: scripts/bench/linux.sh [VCPUS [--only vireo-vmm|qemu-tcg]]   (installs qemu-system-x86 if
# missing: the installed qemu-utils' version, removing nothing)
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/bench/qemu-system.sh
guest=$(scripts/build-guest.sh)
cargo build --release -q -p vireo-vmm
exec python3 scripts/bench/linux.py --vcpus "${1:-2}" --vmm target/release/vireo-vmm \
    --kernel "$guest/vmlinuz" --initrd "$guest/initramfs.cpio.gz" "${@:2}"
