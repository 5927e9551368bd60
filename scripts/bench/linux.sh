#!/usr/bin/env bash
# Linux boot benchmark: Debian's cloud kernel + busybox initramfs (scripts/build-guest.sh) booted
# to init and to ACPI power-off under vireo-vmm and, as the reference, the same kernel and
# initramfs under QEMU with full emulation (TCG), in one run; with the instructions vireo-vmm
# completed per kind (kvm-pvm only, docs/kvm-pvm.md). Each boot takes minutes on kvm-pvm.
# Usage: scripts/bench/linux.sh [VCPUS [--only vireo-vmm|qemu-tcg]]   (installs qemu-system-x86 if
# missing: the installed qemu-utils' version, removing nothing)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v qemu-system-x86_64 >/dev/null; then
    # The installed qemu-utils' version, never removing anything (as scripts/bench/net.sh).
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    apt-get update -qq && apt-get install -y -qq --no-remove "qemu-system-x86${utils:+=$utils}" >/dev/null
fi
guest=$(scripts/build-guest.sh)
cargo build --release -q -p vireo-vmm
exec python3 scripts/bench/linux.py --vcpus "${1:-2}" --vmm target/release/vireo-vmm \
    --kernel "$guest/vmlinuz" --initrd "$guest/initramfs.cpio.gz" "${@:2}"
