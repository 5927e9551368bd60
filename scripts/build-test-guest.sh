#!/usr/bin/env bash
# Builds the test guest (tests/guest, a freestanding PVH kernel) and installs the ELF as
# .cache/test-guest/vireo-test-guest.elf. Skips the build when the guest's sources (and the
# toolchain) hash the same as for the cached ELF.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
guest="$root/tests/guest"
cache="$root/.cache/test-guest"
elf="$cache/vireo-test-guest.elf"
target_dir="$root/target/test-guest"

source_hash() {
    (
        cd "$guest"
        rustc --version
        find . -path ./target -prune -o -type f -print | LC_ALL=C sort | xargs sha256sum
    ) | sha256sum | cut -d' ' -f1
}

hash="$(source_hash)"
if [ -f "$elf" ] && [ "$(cat "$cache/source.sha256" 2>/dev/null)" = "$hash" ]; then
    echo "test guest up to date: $elf"
    exit 0
fi

(cd "$guest" && cargo build --release --target-dir "$target_dir")
mkdir -p "$cache"
cp "$target_dir/x86_64-unknown-linux-gnu/release/vireo-test-guest" "$elf.tmp"
mv "$elf.tmp" "$elf"
echo "$hash" > "$cache/source.sha256"
echo "test guest built: $elf"
