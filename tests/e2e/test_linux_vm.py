"""A Linux VM through vireod: Debian's stock cloud kernel and the busybox initramfs of
scripts/build-guest.sh as the VM's boot source (extraConfig vireo.boot.kernel / .initrd /
.cmdline), on vireod's NAT "VM Network" inside network namespaces of our own (tests/e2e/netns.py).
One boot serves every check: the guest reaches userspace on both CPUs, vireo-tools on /dev/hvc0
shows tools running with a heartbeat, the guest's host name and OS, and the address it leased
through virtio-net from vireod's dnsmasq (guest.ipAddress, guest.net, the lease file), with the
host's bridge as its gateway; the guest pings the bridge and the host pings the guest;
CreateScreenshot shows the text the guest wrote on its framebuffer console (efifb, fbcon);
RebootGuest through vireo-tools resets it (Linux's `reboot -f`: the FADT reset register, the
i8042 reset line, vireo-vmm's "reset" exit) and vireod starts it again as ESXi would, powered on
all along, with a VmGuestRebootEvent, and the guest boots to userspace and its tools again;
SuspendVM and PowerOn resume the rebooted guest with its clocks sane and still answering (at
the address it leased again); and ShutdownGuest through vireo-tools ends poweredOff.

Long: it boots Linux twice, each boot ~6 minutes on an idle kvm-pvm host (guest ring 0 is
interpreted, docs/kvm-pvm.md) and up to an hour on a loaded one; `-m "not slow"` leaves it out."""
import ipaddress
import os
import re
import time
import shutil
import subprocess
import sys

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import REPO
from netns import Lan
from test_networking import NAT, bridge_of, subnet_of
from test_vm_lifecycle import Agent, config_spec, console, root_pool, wait_for
from test_vm_screenshot import pixels

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests"),
    pytest.mark.skipif(os.geteuid() != 0, reason="SKIPPED: network namespaces need root"),
]

# A guard against a hung boot, not a speed bar.
BOOT_TIMEOUT = 75 * 60
# Work inside the booted guest (a shell command, DHCP, a power-off), interpreted on kvm-pvm.
GUEST_TIMEOUT = 10 * 60
CMDLINE = "console=ttyS0 panic=-1 vireo.scenario=vm"
# The guest's line once its modules are loaded (userspace on both CPUs).
BOOTED = "vireo-linux-guest: booted cpus=2"
# What the guest's init writes at the top left of its framebuffer console (scripts/build-guest.sh).
SCREEN_TEXT = "vireo-linux-guest: hello, framebuffer"


def linux_guest():
    """The kernel and initramfs, built (or found cached) by scripts/build-guest.sh."""
    out = subprocess.run([os.path.join(REPO, "scripts", "build-guest.sh")], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def create_linux_vm(agent, si, name):
    """A 2-CPU, 256 MiB VM with a disk and a NIC that boots the Linux guest from datastore1."""
    images = os.path.join(agent.data_dir, "datastore1", "images")
    guest = linux_guest()
    for file in ("vmlinuz", "initramfs.cpio.gz"):
        shutil.copy(os.path.join(guest, file), os.path.join(images, file))
    spec = config_spec(name, disk_kb=16384, memory=256)
    spec.guestId = "debian12_64Guest"
    spec.extraConfig = [
        vim.option.OptionValue(key="vireo.boot.kernel", value="[datastore1] images/vmlinuz"),
        vim.option.OptionValue(key="vireo.boot.initrd", value="[datastore1] images/initramfs.cpio.gz"),
        vim.option.OptionValue(key="vireo.boot.cmdline", value=CMDLINE),
    ]
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def wait_line(agent, vm, text, timeout):
    """Waits for `text` on the serial console while the VM runs; returns the console."""
    wait_for(lambda: text in console(agent, vm) or vm.runtime.powerState != "poweredOn",
             f"{text!r} on the console", timeout=timeout)
    log = console(agent, vm)
    assert text in log, log
    return log


def wait_tools(agent, vm):
    wait_for(lambda: vm.guest.toolsRunningStatus == "guestToolsRunning"
             and vm.guestHeartbeatStatus == "green"
             or vm.runtime.powerState != "poweredOn", "the guest's tools to run", timeout=GUEST_TIMEOUT)
    assert vm.runtime.powerState == "poweredOn", console(agent, vm)


def check_network(agent, lan, vm):
    """The DHCP lease from vireod's dnsmasq on virtio-net, reported through the tools, the host's
    bridge as the gateway, pings both ways. Returns the guest's address."""
    log = wait_line(agent, vm, "vireo-linux-guest: eth0 ", GUEST_TIMEOUT)
    [eth0] = [line.split() for line in log.splitlines() if line.startswith("vireo-linux-guest: eth0 ")]
    address, gateway = ipaddress.ip_interface(eth0[2]), eth0[4]
    bridge = lan.host.run("ip", "-4", "-o", "addr", "show", bridge_of(agent)).stdout.split()
    assert ipaddress.ip_interface(bridge[3]).ip == ipaddress.ip_address(gateway), bridge
    assert address.ip in subnet_of(agent)
    wait_for(lambda: vm.guest.ipAddress == str(address.ip), "guest.ipAddress", timeout=GUEST_TIMEOUT)
    card = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    [nic] = vm.guest.net
    # Linux adds its IPv6 link-local address beside the leased one.
    assert nic.macAddress == card.macAddress and str(address.ip) in nic.ipAddress, nic
    with open(os.path.join(agent.data_dir, "network", f"dnsmasq-{bridge_of(agent)}.leases")) as f:
        assert f"{card.macAddress} {address.ip} " in f.read()
    log = wait_line(agent, vm, f"vireo-linux-guest: ping {gateway}: ", GUEST_TIMEOUT)
    assert f"vireo-linux-guest: ping {gateway}: 3 packets transmitted, 3 packets received" in log, log
    assert_answers_ping(lan, address.ip)
    return address.ip


# ICMP echo from the host's namespace (this machine has no ping command): three requests to
# argv[1], each waiting up to 10 s for its reply; prints how many were answered.
PING = """
import os, socket, struct, sys
def checksum(data):
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xffff)
    return ~(total + (total >> 16)) & 0xffff
ident, answered = os.getpid() & 0xffff, 0
with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
    s.settimeout(10)
    for seq in range(3):
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vireo-echo-data!"
        s.sendto(body[:2] + struct.pack("!H", checksum(body)) + body[4:], (sys.argv[1], 0))
        try:
            while True:
                reply, (source, _) = s.recvfrom(2048)
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", reply[(reply[0] & 0xf) * 4:][:8])
                if (source, kind, rid, rseq) == (sys.argv[1], 0, ident, seq):
                    answered += 1
                    break
        except socket.timeout:
            pass
print(f"{answered} of 3 answered")
"""


def assert_answers_ping(lan, address):
    """The guest's kernel answers the host's echo requests (through the bridge and its TAP)."""
    ping = lan.host.run(sys.executable, "-c", PING, str(address))
    assert ping.stdout.strip() == "3 of 3 answered", ping.stdout + ping.stderr


def text_cells(rows, width, height, text):
    """For each character of `text` on the screen's top text line, which pixels of its
    character cell differ from the background (the bottom-right pixel, never text)."""
    background = rows[-1][-1]
    return [tuple(tuple(rows[y][x] != background for x in range(i * width, (i + 1) * width))
                  for y in range(height)) for i in range(len(text))]


def check_screenshot(agent, vm):
    """CreateScreenshot of the framebuffer console shows the guest's line of text: each cell
    of a space is blank, every other cell has text pixels, and two cells look alike exactly
    when they hold the same character (glyphs of one font, drawn on the character grid)."""
    log = wait_line(agent, vm, "vireo-linux-guest: screen ", GUEST_TIMEOUT)
    [mode] = re.findall(r"Console: switching to colour frame buffer device (\d+)x(\d+)", log)
    task = vm.CreateScreenshot_Task()
    WaitForTask(task)
    datastore, path = task.info.result[1:].split("] ", 1)
    with open(os.path.join(agent.data_dir, datastore, path), "rb") as f:
        width, height, rows = pixels(f.read())
    cell_width, cell_height = width // int(mode[0]), height // int(mode[1])
    cells = text_cells(rows, cell_width, cell_height, SCREEN_TEXT)
    for i, (char, cell) in enumerate(zip(SCREEN_TEXT, cells)):
        assert any(any(line) for line in cell) == (char != " "), (i, char)
        for other_char, other in zip(SCREEN_TEXT[i + 1:], cells[i + 1:]):
            assert (cell == other) == (char == other_char), (char, other_char)


def clocks(log):
    """The guest's clock lines since its last boot: (seconds since the epoch, uptime in seconds)."""
    log = log[log.rfind("vireo-linux-guest: init at"):]
    return [(int(wall), float(up)) for wall, up in re.findall(r"vireo-linux-guest: clock (\d+) ([\d.]+)s?", log)]


def check_suspend_resume(agent, lan, vm, address):
    """SuspendVM saves the running guest and PowerOn resumes it: it answers pings and its tools
    again, its uptime goes on from where it was (no reboot), its wall clock and uptime move
    together (no jump of one against the other) and the wall clock is never ahead of the host's."""
    wait_for(lambda: clocks(console(agent, vm)), "the guest's clock line", timeout=GUEST_TIMEOUT)
    wall, up = clocks(console(agent, vm))[-1]
    assert abs(wall - time.time()) < GUEST_TIMEOUT, (wall, time.time())
    WaitForTask(vm.SuspendVM_Task())
    assert vm.runtime.powerState == "suspended"
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    seen = len(clocks(console(agent, vm)))
    assert_answers_ping(lan, address)
    wait_tools(agent, vm)
    wait_for(lambda: len(clocks(console(agent, vm))) > seen, "a clock line after the resume",
             timeout=GUEST_TIMEOUT)
    wall_after, up_after = clocks(console(agent, vm))[-1]
    assert up_after > up and wall_after <= time.time() + 1, ((wall, up), (wall_after, up_after), time.time())
    assert abs((wall_after - up_after) - (wall - up)) < 2, ((wall, up), (wall_after, up_after))


def check_reboot(agent, si, vm):
    """RebootGuest: the guest resets itself, vireod starts the VM again (it stays poweredOn,
    with a VmGuestRebootEvent) and the guest boots anew (its /init runs again) to userspace on
    both CPUs, to its tools and to a DHCP lease. Returns the address leased after the reboot."""
    log = console(agent, vm)
    boots, inits = log.count(BOOTED), log.count("vireo-linux-guest: init at")
    leases = log.count("vireo-linux-guest: eth0 ")
    vm.RebootGuest()
    wait_for(lambda: console(agent, vm).count(BOOTED) > boots or vm.runtime.powerState != "poweredOn",
             "the guest to boot again", timeout=BOOT_TIMEOUT)
    log = console(agent, vm)
    assert vm.runtime.powerState == "poweredOn", log
    assert log.count("vireo-linux-guest: init at") == inits + 1, log
    query = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
                                      type=[vim.event.VmGuestRebootEvent])
    assert len(si.content.eventManager.QueryEvents(query)) == 1
    wait_tools(agent, vm)
    wait_for(lambda: console(agent, vm).count("vireo-linux-guest: eth0 ") > leases, "the lease after the reboot",
             timeout=GUEST_TIMEOUT)
    eth0 = [line.split() for line in console(agent, vm).splitlines() if line.startswith("vireo-linux-guest: eth0 ")]
    return ipaddress.ip_interface(eth0[-1][2]).ip


def test_linux_vm_networks_shows_its_console_reboots_suspends_and_shuts_down():
    lan = Lan(f"{os.getpid() % 0x10000:04x}")
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        vm = create_linux_vm(agent, si, "linux")
        WaitForTask(vm.PowerOnVM_Task())
        log = wait_line(agent, vm, BOOTED, BOOT_TIMEOUT)
        print("boot timeline:", *[line for line in log.splitlines() if "vireo-linux-guest:" in line], sep="\n")

        # Tools: running, a heartbeat, the guest's own identity.
        wait_tools(agent, vm)
        assert vm.guest.toolsStatus == "toolsOk"
        wait_for(lambda: vm.guest.hostName == "vireo-linux-guest", "guest.hostName", timeout=GUEST_TIMEOUT)
        assert vm.guest.guestFullName.startswith("Vireo Linux test guest (linux-image-")

        address = check_network(agent, lan, vm)
        check_screenshot(agent, vm)
        started = time.monotonic()
        address = check_reboot(agent, si, vm)
        print(f"reboot to userspace and tools: {time.monotonic() - started:.0f} s")
        check_suspend_resume(agent, lan, vm, address)

        vm.ShutdownGuest()
        wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to shut down", timeout=GUEST_TIMEOUT)
        WaitForTask(vm.Destroy_Task())
    finally:
        agent.close()
        lan.close()
