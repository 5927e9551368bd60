"""A Linux VM through vireod: Debian's stock cloud kernel and the busybox initramfs of
scripts/build-guest.sh as the VM's boot source (extraConfig vireo.boot.kernel / .initrd /
.cmdline), on vireod's NAT "VM Network" inside network namespaces of our own (tests/e2e/netns.py).
One boot serves every check: the guest reaches userspace on both CPUs, vireo-tools on /dev/hvc0
shows tools running with a heartbeat, the guest's host name and OS, and the address it leased
through virtio-net from vireod's dnsmasq (guest.ipAddress, guest.net, the lease file), with the
host's bridge as its gateway.

Long: one Linux boot takes ~8 minutes on an idle kvm-pvm host (guest ring 0 is interpreted,
docs/kvm-pvm.md) and up to an hour on a loaded one; `-m "not slow"` leaves it out."""
import ipaddress
import os
import shutil
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import REPO
from netns import Lan
from test_networking import NAT, bridge_of, subnet_of
from test_vm_lifecycle import Agent, config_spec, console, root_pool, wait_for

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


def test_linux_vm_reports_tools_and_its_leased_address():
    lan = Lan(f"{os.getpid() % 0x10000:04x}")
    agent = Agent(config=NAT, netns=lan.host)
    try:
        si = agent.vireod.connect()
        vm = create_linux_vm(agent, si, "linux")
        WaitForTask(vm.PowerOnVM_Task())
        log = wait_line(agent, vm, "vireo-linux-guest: booted cpus=2", BOOT_TIMEOUT)
        print("boot timeline:", *[line for line in log.splitlines() if "vireo-linux-guest:" in line], sep="\n")

        # Tools: running, a heartbeat, the guest's own identity.
        wait_tools(agent, vm)
        assert vm.guest.toolsStatus == "toolsOk"
        wait_for(lambda: vm.guest.hostName == "vireo-linux-guest", "guest.hostName", timeout=GUEST_TIMEOUT)
        assert vm.guest.guestFullName.startswith("Vireo Linux test guest (linux-image-")

        # Network: a DHCP lease from vireod's dnsmasq on virtio-net, reported through the tools,
        # the host's bridge as the gateway.
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
        WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())
    finally:
        agent.close()
        lan.close()
