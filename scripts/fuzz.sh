#!/usr/bin/env bash
# Fuzzes the virtio-blk request path and queue handling with cargo-fuzz (libFuzzer).
# Usage: scripts/fuzz.sh [SECONDS]   (default 60; the test suite runs it briefly)
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cd vmm/fuzz
mkdir -p ../../.cache/fuzz/virtio_block_queue
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=../../target/fuzz cargo fuzz run virtio_block_queue \
    ../../.cache/fuzz/virtio_block_queue -- -max_total_time="$seconds" -rss_limit_mb=1024
