#!/usr/bin/env bash
# Builds the Linux test guest from Debian's packages (apt-get download + dpkg-deb -x only):
# Debian's cloud kernel (linux-image-cloud-amd64, unmodified: a bzImage) and a busybox
# initramfs whose /init loads the kernel's own virtio and ACPI button modules (the cloud kernel
# builds them as modules and finds virtio-mmio devices through the DSDT), reports the CPUs,
# starts vireo-tools (the guest tools daemon, built here as a static binary) on the tools
# channel /dev/hvc0, and runs the scenario named by `vireo.scenario=`:
#   power-off  power off at once;   reboot  reboot at once;
#   checks     the Linux test's checks (disk write/read-back on /dev/vda, /dev/hvc0), then wait
#              for the ACPI power button and power off when it is pressed;
#   vm         a VM run by vireod: eth0's address by DHCP (udhcpc), a ping of the gateway that
#              leased it, a line of text on the framebuffer console (tty1, efifb), the clock
#              every 20 s, then a shell on the serial console (vireo-tools serves the host);
#   anything else: a shell on the console.
# In every scenario after the modules, the ACPI power button (button.ko's input device, read
# through evdev) powers the guest off.
# /dev comes from devtmpfs alone (no mdev scan: it cost 75 s of interpreted vCPU time on kvm-pvm).
# Output: .cache/linux-guest/RECIPE/{vmlinuz,initramfs.cpio.gz}, RECIPE a hash of this script (so
# worktrees sharing .cache never swap guests under each other); the folder is printed last.
# Cached: re-runs are no-ops until this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=$(sha256sum "$0" | cut -c1-16)
out="$PWD/.cache/linux-guest/$recipe"
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
    echo "$out"
    exit 0
fi

# vireo-tools, statically linked so it runs on busybox with no libc.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -q -p vireo-tools \
    --target x86_64-unknown-linux-gnu --target-dir "$PWD/target/static"
tools_bin="$PWD/target/static/x86_64-unknown-linux-gnu/release/vireo-tools"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-cache show busybox-static linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt-get update -qq
fi
# The metapackage names the current kernel package.
kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
apt-get download -qq "$kernel_pkg" busybox-static 2>&1 | grep -v 'unsandboxed' || true
for deb in *.deb; do dpkg-deb -x "$deb" root; done

# Modules in load order (each after what it depends on).
modules="virtio_ring virtio virtio_mmio virtio_blk failover net_failover virtio_net virtio_console button evdev"
mkdir -p "$out" initramfs/{bin,dev,proc,sys,etc,tmp,lib/modules}
cp root/boot/vmlinuz-* "$out/vmlinuz.tmp"
cp root/bin/busybox initramfs/bin/busybox
cp "$tools_bin" initramfs/bin/vireo-tools
for m in $modules; do
    find root/lib/modules -name "$m.ko" -exec cp {} initramfs/lib/modules/ \;
    [ -e "initramfs/lib/modules/$m.ko" ] || { echo "module $m not in $kernel_pkg" >&2; exit 1; }
done
echo "$modules" > initramfs/lib/modules/order
cat > initramfs/etc/os-release <<OS
NAME="Vireo Linux test guest"
PRETTY_NAME="Vireo Linux test guest ($kernel_pkg)"
OS
# udhcpc's event script: configure the leased address, remember the first router.
cat > initramfs/bin/udhcpc-event <<'EVENT'
#!/bin/busybox sh
case "$1" in
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
        set -- $router
        [ -n "$1" ] && echo "$1" > /tmp/gateway
        ;;
esac
exit 0
EVENT
chmod +x initramfs/bin/udhcpc-event
cat > initramfs/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
hostname vireo-linux-guest
uptime() { cut -d' ' -f1 /proc/uptime; }
echo "vireo-linux-guest: init at $(uptime)s"
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m.ko" || echo "vireo-linux-guest: insmod $m failed"
    echo "vireo-linux-guest: module $m at $(uptime)s"
done
echo "vireo-linux-guest: booted cpus=$(grep -c ^processor /proc/cpuinfo) at $(uptime)s"
# The guest tools on the tools channel (virtio-console), when the VM has one.
[ -e /dev/hvc0 ] && /bin/vireo-tools --device /dev/hvc0 \
    --shutdown-command "poweroff -f" --reboot-command "reboot -f" &
# The ACPI power button: button.ko's input device sends events only when it is pressed.
power_button() {
    for event in /sys/class/input/event*; do
        grep -q "Power Button" "$event/device/name" 2>/dev/null || continue
        (head -c 24 "/dev/input/${event##*/}" >/dev/null
         echo "vireo-linux-guest: power button pressed at $(uptime)s"; sync; poweroff -f) &
        echo "vireo-linux-guest: waiting for the power button"
        return
    done
    echo "vireo-linux-guest: no power button"
}
# A line on the framebuffer console (efifb + fbcon on tty1), at its top left corner; the
# cursor does not blink (each blink is a glyph drawn in interpreted ring 0 on kvm-pvm).
screen() {
    echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null
    if [ -e /dev/fb0 ]; then
        printf '\033[H\033[J%s\n' "vireo-linux-guest: hello, framebuffer" > /dev/tty1
        echo "vireo-linux-guest: screen $(cat /sys/class/graphics/fb0/name) $(cat /sys/class/graphics/fb0/virtual_size)"
    else
        echo "vireo-linux-guest: no framebuffer"
    fi
}
# The guest's clocks every 20 s: wall clock (seconds since the epoch) and uptime.
clock() {
    while sleep 20; do echo "vireo-linux-guest: clock $(date +%s) $(uptime)"; done
}
checks() {
    [ -e /dev/hvc0 ] && echo "vireo-linux-guest: hvc0 present" || echo "vireo-linux-guest: hvc0 missing"
    if [ -b /dev/vda ]; then
        # The host wrote a token in sector 0; read it, then write it back, marked, at 4 KiB.
        token=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | tr -d '\000' | head -c 64)
        echo "vireo-linux-guest: disk token read: $token"
        printf 'written-by-linux:%s' "$token" | dd of=/dev/vda bs=4096 seek=1 conv=fsync 2>/dev/null
        sync
        echo 3 > /proc/sys/vm/drop_caches
        back=$(dd if=/dev/vda bs=4096 skip=1 count=1 2>/dev/null | tr -d '\000')
        echo "vireo-linux-guest: disk read back: $back"
    else
        echo "vireo-linux-guest: no /dev/vda"
    fi
    dmesg | grep -i -E 'ACPI (Error|BIOS Error)' | sed 's/^/vireo-linux-guest: acpi: /'
}
network() {
    ip link set lo up
    ip link set eth0 up || { echo "vireo-linux-guest: no eth0"; return; }
    udhcpc -i eth0 -s /bin/udhcpc-event -n -q -t 20 -T 3 >/dev/null 2>&1
    gateway=$(cat /tmp/gateway 2>/dev/null)
    echo "vireo-linux-guest: eth0 $(ip -4 -o addr show eth0 | awk '{print $4}') gateway ${gateway:-none}"
    [ -n "$gateway" ] && echo "vireo-linux-guest: ping $gateway: $(ping -c 3 -W 10 "$gateway" | grep 'packets transmitted')"
}
case " $(cat /proc/cmdline) " in
    *" vireo.scenario=power-off "*) echo "vireo-linux-guest: powering off"; poweroff -f ;;
    *" vireo.scenario=reboot "*) echo "vireo-linux-guest: rebooting"; reboot -f ;;
    *" vireo.scenario=checks "*) checks; power_button ;;
    *" vireo.scenario=vm "*) power_button; network; screen; clock & ;;
esac
exec setsid cttyhack sh
INIT
chmod +x initramfs/init
# newc archive, written with busybox's own cpio (no host cpio needed).
(cd initramfs && find . | ../root/bin/busybox cpio -o -H newc) | gzip -9 > "$out/initramfs.cpio.gz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "$out"
