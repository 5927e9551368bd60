"""ReconfigVM_Task's deviceChange through pyVmomi on real test-guest VMs: disks added (new qcow2
or an existing file), removed (kept or destroyed), grown while off and while the guest runs (the
guest announces its new size from the configuration-change interrupt and writes past the old
end), disk modes; NICs added, removed and edited (manual MACs inside ESXi's range only,
generated MACs, startConnected) and unplugged/plugged while the guest runs (its link goes down
and up). Faults carry the change's index, and a failing change leaves the .vmx and the files as
they were; datastore paths that leave the datastore are refused. Effects are read in the guest
(its shell, over the serial console), the .vmx and qemu-img."""
import json
import os
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import host_path, connection_to
from test_vm_lifecycle import agent, console, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import type_command

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

MIB = 1 << 20


si = connection_to("agent")


def vm_folder(agent, vm):
    return os.path.dirname(host_path(agent, vm.config.files.vmPathName))


def vmx_text(agent, vm):
    with open(host_path(agent, vm.config.files.vmPathName)) as f:
        return f.read()


def vmx(agent, vm):
    entries = {}
    for line in vmx_text(agent, vm).splitlines():
        key, _, value = line.partition(" = ")
        entries[key.lower()] = value.strip('"')
    return entries


def devices(vm, kind):
    return [d for d in vm.config.hardware.device if isinstance(d, kind)]


def virtual_size(path):
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)
    return info["virtual-size"]


def qemu_img_check(path):
    done = subprocess.run(["qemu-img", "check", path], capture_output=True, text=True)
    assert done.returncode == 0, (path, done.stdout, done.stderr)


def reconfigure(vm, *changes):
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=list(changes))))


def refused(vm, fault, *changes):
    """Runs a reconfigure that must fail with `fault`; returns the fault."""
    with pytest.raises(fault) as raised:
        reconfigure(vm, *changes)
    return raised.value


def new_disk(size_kb, file_name="", mode="persistent", unit=1):
    disk = vim.vm.device.VirtualDisk(
        key=-10, controllerKey=1000, unitNumber=unit, capacityInKB=size_kb,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=file_name, diskMode=mode,
                                                              thinProvisioned=True))
    return vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)


def existing_disk(file_name):
    disk = vim.vm.device.VirtualDisk(
        key=-11, controllerKey=1000, unitNumber=2,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=file_name, diskMode="persistent"))
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=disk)


def grown(disk, size_kb):
    disk.capacityInKB = size_kb
    return vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)


def guest_sectors(agent, vm, disk):
    line = type_command(agent, vm, "blk list", f"blk{disk} capacity=")
    return int(line.split("capacity=", 1)[1].split()[0])


def test_disks_are_added_grown_live_and_removed(si, agent):
    vm = create_vm(si, "dev-disks", scenario="shell", disk_kb=64 * 1024, nic=False)
    folder = vm_folder(agent, vm)
    reconfigure(vm, new_disk(32 * 1024))
    disks = devices(vm, vim.vm.device.VirtualDisk)
    assert [d.capacityInKB for d in disks] == [64 * 1024, 32 * 1024]
    second = host_path(agent, disks[1].backing.fileName)
    assert os.path.dirname(second) == folder and vmx(agent, vm)["disk1.filename"] == os.path.basename(second)
    assert virtual_size(second) == 32 * MIB

    # Grow while powered off; a shrink is refused with the change's index and changes nothing.
    reconfigure(vm, grown(disks[0], 96 * 1024))
    first = host_path(agent, disks[0].backing.fileName)
    assert virtual_size(first) == 96 * MIB
    before = vmx_text(agent, vm)
    fault = refused(vm, vim.fault.InvalidDeviceSpec, grown(devices(vm, vim.vm.device.VirtualDisk)[1], 16 * 1024))
    assert fault.deviceIndex == 0
    assert virtual_size(second) == 32 * MIB and vmx_text(agent, vm) == before

    power_on_booted(agent, vm)
    assert guest_sectors(agent, vm, 0) == 96 * MIB // 512
    assert guest_sectors(agent, vm, 1) == 32 * MIB // 512
    # Grow while the guest runs: it is told through the configuration-change interrupt.
    reconfigure(vm, grown(devices(vm, vim.vm.device.VirtualDisk)[1], 48 * 1024))
    wait_for(lambda: f"blk1: capacity changed to {48 * MIB // 512}" in console(agent, vm),
             "the guest to see the new size")
    assert guest_sectors(agent, vm, 1) == 48 * MIB // 512
    assert devices(vm, vim.vm.device.VirtualDisk)[1].capacityInKB == 48 * 1024
    old_end = 32 * MIB // 512
    assert type_command(agent, vm, f"blk write 1 {old_end + 100} 64 9", "write") == "write ok"
    assert type_command(agent, vm, f"blk verify 1 {old_end + 100} 64 9", "verify") == "verify ok"
    # Devices come and go only while the VM is off.
    fault = refused(vm, vim.fault.DeviceHotPlugNotSupported, new_disk(1024))
    assert fault.deviceIndex == 0
    WaitForTask(vm.PowerOffVM_Task())
    assert virtual_size(second) == 48 * MIB
    qemu_img_check(second)

    # Removed without destroy: the file stays and can be added back as an existing disk.
    name = devices(vm, vim.vm.device.VirtualDisk)[1].backing.fileName
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="remove",
                                                    device=devices(vm, vim.vm.device.VirtualDisk)[1]))
    assert len(devices(vm, vim.vm.device.VirtualDisk)) == 1 and os.path.exists(second)
    assert "disk1.filename" not in vmx(agent, vm)
    reconfigure(vm, existing_disk(name))
    assert devices(vm, vim.vm.device.VirtualDisk)[1].capacityInKB == 48 * 1024
    # Removed with destroy: the file goes.
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="remove", fileOperation="destroy",
                                                    device=devices(vm, vim.vm.device.VirtualDisk)[1]))
    assert not os.path.exists(second) and len(devices(vm, vim.vm.device.VirtualDisk)) == 1


def test_failing_disk_changes_leave_the_vm_and_its_files_as_they_were(si, agent):
    vm = create_vm(si, "dev-faults", disk_kb=8 * 1024, nic=False)
    folder = vm_folder(agent, vm)
    before, files = vmx_text(agent, vm), sorted(os.listdir(folder))
    disk = devices(vm, vim.vm.device.VirtualDisk)[0]

    # A new disk on an existing file: FileAlreadyExists.
    refused(vm, vim.fault.FileAlreadyExists, new_disk(1024, disk.backing.fileName))
    # A good change then a bad one: the good one's new file is gone again.
    fault = refused(vm, vim.fault.InvalidDeviceSpec, new_disk(1024, "[datastore1] dev-faults/extra.qcow2"),
                    grown(disk, 1024))
    assert fault.deviceIndex == 1
    # Unknown devices, unsupported disk modes.
    ghost = vim.vm.device.VirtualDisk(key=2042, controllerKey=1000, unitNumber=5, capacityInKB=1024)
    assert refused(vm, vim.fault.InvalidDeviceSpec,
                   vim.vm.device.VirtualDeviceSpec(operation="remove", device=ghost)).deviceIndex == 0
    disk.backing.diskMode = "undoable"
    refused(vm, vim.fault.InvalidDeviceSpec, vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk))
    # Paths that leave the datastore, by name or through a symlink, are refused.
    outside = os.path.join(agent.data_dir, "outside")
    os.makedirs(outside)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(outside, "o.qcow2"), "1M"], check=True)
    os.symlink(os.path.join(outside, "o.qcow2"), os.path.join(agent.data_dir, "datastore1", "escape.qcow2"))
    os.symlink(outside, os.path.join(agent.data_dir, "datastore1", "escape-dir"))
    for name in ["[datastore1] ../outside/o.qcow2", "[datastore1] escape.qcow2", "[datastore1] escape-dir/o.qcow2",
                 "[datastore1] /etc/hostname", "[nosuchstore] x.qcow2"]:
        with pytest.raises(vmodl.MethodFault):
            reconfigure(vm, existing_disk(name))
    for name in ["[datastore1] ../outside/new.qcow2", "[datastore1] escape-dir/new.qcow2", "[datastore1] escape.qcow2",
                 "[nosuchstore] new.qcow2"]:
        with pytest.raises(vmodl.MethodFault):
            reconfigure(vm, new_disk(1024, name))
    assert os.listdir(outside) == ["o.qcow2"]
    assert vmx_text(agent, vm) == before and sorted(os.listdir(folder)) == files
    assert len(devices(vm, vim.vm.device.VirtualDisk)) == 1

    # Disk modes are recorded and shown.
    disk = devices(vm, vim.vm.device.VirtualDisk)[0]
    disk.backing.diskMode = "independent_persistent"
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk))
    assert devices(vm, vim.vm.device.VirtualDisk)[0].backing.diskMode == "independent_persistent"
    assert vmx(agent, vm)["disk0.mode"] == "independent-persistent"


def nic_spec(operation, card=None, mac=None, address_type=None, start_connected=None, connected=None):
    card = card or vim.vm.device.VirtualVmxnet3(
        key=-20, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))
    if mac is not None:
        card.macAddress = mac
    if address_type is not None:
        card.addressType = address_type
    if start_connected is not None or connected is not None:
        card.connectable = card.connectable or vim.vm.device.VirtualDevice.ConnectInfo(allowGuestControl=True)
        if start_connected is not None:
            card.connectable.startConnected = start_connected
        if connected is not None:
            card.connectable.connected = connected
    return vim.vm.device.VirtualDeviceSpec(operation=operation, device=card)


def test_nics_are_added_edited_and_unplugged_live(si, agent):
    vm = create_vm(si, "dev-nics", scenario="shell", disk_kb=1024, nic=True)
    nic = devices(vm, vim.vm.device.VirtualEthernetCard)[0]

    # Manual MACs: only inside the range ESXi allows by hand.
    before = vmx_text(agent, vm)
    fault = refused(vm, vim.fault.InvalidDeviceSpec, nic_spec("edit", nic, mac="00:0c:29:12:34:56",
                                                              address_type="manual"))
    assert fault.deviceIndex == 0 and vmx_text(agent, vm) == before
    reconfigure(vm, nic_spec("edit", nic, mac="00:50:56:3f:01:02", address_type="manual"))
    assert vmx(agent, vm)["ethernet0.address"] == "00:50:56:3f:01:02"
    # A second NIC with a generated MAC, unplugged at power-on.
    reconfigure(vm, nic_spec("add", address_type="generated", start_connected=False))
    nics = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert [n.macAddress for n in nics][0] == "00:50:56:3f:01:02"
    assert nics[1].addressType == "generated" and nics[1].macAddress.startswith("00:50:56:")
    assert nics[1].connectable.startConnected is False
    config = vmx(agent, vm)
    assert config["ethernet1.addresstype"] == "generated" and config["ethernet1.startconnected"] == "FALSE"

    power_on_booted(agent, vm)
    nics = devices(vm, vim.vm.device.VirtualEthernetCard)
    assert [n.connectable.connected for n in nics] == [True, False]
    info = type_command(agent, vm, "net info", "net mac=")
    assert info.startswith("net mac=00:50:56:3f:01:02 ") and " link=up " in info
    # Unplugged while the guest runs: its link goes down, then up again.
    reconfigure(vm, nic_spec("edit", nics[0], connected=False))
    wait_for(lambda: "eth0: link down" in console(agent, vm), "the guest to lose its link")
    assert " link=down " in type_command(agent, vm, "net info", "net mac=")
    assert devices(vm, vim.vm.device.VirtualEthernetCard)[0].connectable.connected is False
    reconfigure(vm, nic_spec("edit", devices(vm, vim.vm.device.VirtualEthernetCard)[0], connected=True))
    wait_for(lambda: "eth0: link up" in console(agent, vm), "the guest to get its link back")
    assert " link=up " in type_command(agent, vm, "net info", "net mac=")
    assert devices(vm, vim.vm.device.VirtualEthernetCard)[0].connectable.connected is True
    # A running VM keeps its NICs and their addresses.
    nics = devices(vm, vim.vm.device.VirtualEthernetCard)
    refused(vm, vim.fault.DeviceHotPlugNotSupported, nic_spec("remove", nics[1]))
    refused(vm, vim.fault.InvalidPowerState, nic_spec("edit", nics[0], mac="00:50:56:00:00:07",
                                                      address_type="manual"))
    WaitForTask(vm.PowerOffVM_Task())

    reconfigure(vm, nic_spec("remove", devices(vm, vim.vm.device.VirtualEthernetCard)[1]))
    assert len(devices(vm, vim.vm.device.VirtualEthernetCard)) == 1
    assert "ethernet1.present" not in vmx(agent, vm)
