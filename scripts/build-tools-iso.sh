#!/usr/bin/env bash
# Builds the tools installer ISO that vireod mounts for MountToolsInstaller and
# UpgradeTools_Task: an ISO 9660 image (Rock Ridge and Joliet names) holding `vireo-tools`
# (statically linked, so it runs on any x86-64 Linux guest) and `install.sh`
# (scripts/tools-iso/install.sh); its application identifier is "VIREO-TOOLS <version>", which
# vireod reads as the tools version it offers. Output: .cache/tools-iso/vireo-tools.iso
# (vireod's default `tools_iso`), rebuilt only when the binary or the installer changed.
# Needs xorriso (scripts/setup/35-iso-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.cache/tools-iso
iso="$out/vireo-tools.iso"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p vireo-tools \
    --target x86_64-unknown-linux-gnu --target-dir "$PWD/target/static"
binary="$PWD/target/static/x86_64-unknown-linux-gnu/release/vireo-tools"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
if [ -s "$iso" ] && [ "$iso" -nt "$binary" ] && [ "$iso" -nt scripts/tools-iso/install.sh ] \
    && [ "$iso" -nt Cargo.toml ]; then
    echo "$iso"
    exit 0
fi
mkdir -p "$out"
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp "$binary" "$staging/vireo-tools"
cp scripts/tools-iso/install.sh "$staging/install.sh"
chmod 0755 "$staging/vireo-tools" "$staging/install.sh"
xorriso -as mkisofs -quiet -R -J -iso-level 3 -V VIREOTOOLS -A "VIREO-TOOLS $version" \
    -o "$iso.new" "$staging"
mv -f "$iso.new" "$iso"
echo "$iso"
