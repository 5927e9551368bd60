#!/usr/bin/env bash
# Builds the Linux test guest from Debian's packages (apt-get download + dpkg-deb -x only):
# Debian's generic kernel (bzImage) and a busybox initramfs whose /init reports the CPUs,
# starts vireo-tools (the guest tools daemon, built here as a static binary) on the tools
# channel /dev/hvc0, and runs the scenario named by `vireo.scenario=` (power-off, reboot, shell).
# Output: .cache/linux-guest/{vmlinuz,initramfs.cpio.gz}. Cached: re-runs are no-ops.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/.cache/linux-guest"
[ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ] && { echo "$out"; exit 0; }

# vireo-tools, statically linked so it runs on busybox with no libc.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p vireo-tools \
    --target x86_64-unknown-linux-gnu --target-dir "$PWD/target/static"
tools_bin="$PWD/target/static/x86_64-unknown-linux-gnu/release/vireo-tools"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-cache show busybox-static >/dev/null 2>&1; then
    apt-get update -qq
fi
# The metapackage names the current kernel package.
kernel_pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
apt-get download -qq "$kernel_pkg" busybox-static
for deb in *.deb; do dpkg-deb -x "$deb" root; done

mkdir -p "$out" initramfs/{bin,dev,proc,sys}
cp root/boot/vmlinuz-* "$out/vmlinuz.tmp"
cp root/bin/busybox initramfs/bin/busybox
cp "$tools_bin" initramfs/bin/vireo-tools
cat > initramfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "vireo-linux-guest: booted cpus=$(grep -c ^processor /proc/cpuinfo)"
# The guest tools on the tools channel (virtio-console), when the VM has one.
[ -e /dev/hvc0 ] && /bin/vireo-tools --device /dev/hvc0 \
    --shutdown-command "poweroff -f" --reboot-command "reboot -f" &
case " $(cat /proc/cmdline) " in
    *" vireo.scenario=power-off "*) echo "vireo-linux-guest: powering off"; poweroff -f ;;
    *" vireo.scenario=reboot "*) echo "vireo-linux-guest: rebooting"; reboot -f ;;
esac
exec setsid cttyhack sh
INIT
chmod +x initramfs/init
# newc archive, written with busybox's own cpio (no host cpio needed).
(cd initramfs && find . | ../root/bin/busybox cpio -o -H newc) | gzip -9 > "$out/initramfs.cpio.gz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$out"
