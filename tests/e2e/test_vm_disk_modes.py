"""Disk modes through pyVmomi on a real test-guest VM, each with its snapshot semantics as on
ESXi: a persistent disk is part of snapshots (revert brings its old contents back), an
independent_persistent disk is left out of them (what the guest wrote stays through a revert), and
an independent_nonpersistent disk is left out too and loses what the guest wrote when the VM
powers off (its writes go to a redo overlay beside it; a suspend keeps them). The guest writes and
verifies patterns through its shell; the disk files are checked with sha256 and qemu-img."""
import hashlib
import json
import os
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import host_path, connection_to
from test_vm_devices import devices, new_disk, reconfigure, refused, vmx, vmx_text  # noqa: F401
from test_vm_lifecycle import agent, create_vm, power_on_booted  # noqa: F401 (fixtures)
from test_vm_snapshots import snapshot, type_command

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

SECTORS = 64


si = connection_to("agent")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def backing_chain(path):
    info = json.loads(subprocess.run(["qemu-img", "info", "--backing-chain", "--output=json", path],
                                     capture_output=True, text=True, check=True).stdout)
    return [layer["filename"] for layer in info]


def write(agent, vm, disk, seed):
    assert type_command(agent, vm, f"blk write {disk} 0 {SECTORS} {seed}", "write ") == "write ok"


def holds(agent, vm, disk, seed):
    return type_command(agent, vm, f"blk verify {disk} 0 {SECTORS} {seed}", "verify ") == "verify ok"


def zeros(agent, vm, disk):
    line = type_command(agent, vm, f"blk sum {disk} 0 {SECTORS}", "sum=")
    value = 0xcbf29ce484222325
    for _ in range(SECTORS * 512):
        value = (value * 0x100000001b3) & 0xffffffffffffffff
    return int(line.split("=", 1)[1], 16) == value


def disk_files(agent, vm):
    return [host_path(agent, d.backing.fileName) for d in devices(vm, vim.vm.device.VirtualDisk)]


def test_modes_decide_what_snapshots_and_power_off_keep(si, agent):
    vm = create_vm(si, "modes", scenario="shell", disk_kb=8 * 1024, nic=False)
    reconfigure(vm, new_disk(8 * 1024, mode="independent_persistent"))
    reconfigure(vm, new_disk(8 * 1024, mode="independent_nonpersistent", unit=2))
    entries = vmx(agent, vm)
    assert "disk0.mode" not in entries
    assert entries["disk1.mode"] == "independent-persistent"
    assert entries["disk2.mode"] == "independent-nonpersistent"
    assert [d.backing.diskMode for d in devices(vm, vim.vm.device.VirtualDisk)] == \
        ["persistent", "independent_persistent", "independent_nonpersistent"]
    files = disk_files(agent, vm)
    nonpersistent_before = sha256(files[2])

    power_on_booted(agent, vm)
    redo = files[2] + "-redo.qcow2"
    assert os.path.isfile(redo) and backing_chain(redo) == [redo, files[2]]
    assert f"[datastore1] modes/{os.path.basename(redo)}" in {f.name for f in vm.layoutEx.file}
    assert vm.QueryUnownedFiles() == []
    for disk in range(3):
        write(agent, vm, disk, 1)
    snap = snapshot(vm, "before-two")
    # Only the persistent disk got a new layer; the independent ones run on their own files.
    chains = [d.backing for d in devices(vm, vim.vm.device.VirtualDisk)]
    assert chains[0].parent is not None and chains[0].parent.fileName.endswith(os.path.basename(files[0]))
    assert chains[1].parent is None and chains[2].parent is None
    for disk in range(3):
        write(agent, vm, disk, 2)
    assert sha256(files[2]) == nonpersistent_before, "the guest's writes go to the overlay"

    # A suspend keeps the nonpersistent disk's overlay: the guest still reads what it wrote.
    WaitForTask(vm.SuspendVM_Task())
    assert os.path.isfile(redo)
    WaitForTask(vm.PowerOnVM_Task())
    assert holds(agent, vm, 2, 2)

    # Power-off: the overlay is gone, the disk reads as before the VM ran.
    WaitForTask(vm.PowerOffVM_Task())
    assert not os.path.exists(redo)
    assert sha256(files[2]) == nonpersistent_before

    # Revert: the persistent disk is back at pattern 1, the independent_persistent one keeps
    # pattern 2, the nonpersistent one is as it always was.
    WaitForTask(snap.RevertToSnapshot_Task())
    power_on_booted(agent, vm)
    assert holds(agent, vm, 0, 1)
    assert holds(agent, vm, 1, 2)
    assert zeros(agent, vm, 2)

    # Modes change only while the VM is off and has no snapshots; refusals change nothing.
    before = vmx_text(agent, vm)
    disk = devices(vm, vim.vm.device.VirtualDisk)[1]
    disk.backing.diskMode = "persistent"
    edit = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    refused(vm, vim.fault.InvalidPowerState, edit)
    WaitForTask(vm.PowerOffVM_Task())
    fault = refused(vm, vim.fault.InvalidDeviceOperation, edit)
    assert fault.deviceIndex == 0
    assert vmx_text(agent, vm) == before
    WaitForTask(vm.RemoveAllSnapshots_Task())
    reconfigure(vm, edit)
    assert vmx(agent, vm).get("disk1.mode") is None
    assert devices(vm, vim.vm.device.VirtualDisk)[1].backing.diskMode == "persistent"
