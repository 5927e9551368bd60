#!/usr/bin/env bash
# The main job: builds vireo-vmm and the test guest, then boots the guest with 2 vCPUs on
# /dev/kvm with its serial console on this terminal. Type `help` at the `vireo>` prompt;
# `poweroff` (or Ctrl-C) ends it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup/10-test-guest.sh
cargo build --release -p vireo-vmm
exec target/release/vireo-vmm --kernel .cache/test-guest/vireo-test-guest.elf \
    --vcpus 2 --memory-mib 128 --cmdline "scenario=shell"
