"""Linked clones and PromoteDisks_Task through pyVmomi: two VMs made with CreateVM_Task whose
disks are child disks (backing.parent set, fileOperation create, as govc's `-link` makes them)
of a third VM's disk; PromoteDisks(unlink=false) collapses only a clone's own redo layers,
PromoteDisks(unlink=true) copies the shared parent's data into the clone's disk (one flat file,
`qemu-img check` clean, the same data as before); the parent and the other clone are untouched;
InvalidPowerState for a running VM with snapshots."""
import hashlib
import os
import subprocess
import tempfile

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to
from test_vm_lifecycle import agent, config_spec, console, create_vm, root_pool, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import (WAITING, chain, disk, holds, host_path, press_power_button, qemu_img_check_all,
                               snapshot, write)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

GUEST_DATA = [(0, "0x5a"), (65536, "0x11"), (131072, "0x6b"), (196608, "0x22")]


si = connection_to("agent")


def create_linked_clone(si, name, parent):
    """A VM whose one disk is a new child disk of `parent` (a VirtualDisk of another VM)."""
    spec = config_spec(name, disk_kb=0, nic=False)
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName="[datastore1]", diskMode="persistent", thinProvisioned=True,
        parent=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=parent.backing.fileName,
                                                             diskMode="persistent"))
    child = vim.vm.device.VirtualDisk(key=-1, controllerKey=1000, unitNumber=0,
                                      capacityInKB=parent.capacityInKB, backing=backing)
    spec.deviceChange.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=child))
    task = si.content.rootFolder.childEntity[0].vmFolder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def test_promote_disks_collapses_and_unlinks_a_linked_clone(si, agent):
    golden = create_vm(si, "golden", scenario="wait", nic=False)
    write(agent, golden, 0, "0x5a")
    write(agent, golden, 131072, "0x6b")
    parent = disk(golden)
    parent_file = host_path(agent, parent.backing.fileName)
    a = create_linked_clone(si, "clone-a", parent)
    b = create_linked_clone(si, "clone-b", parent)
    for clone, name in [(a, "clone-a"), (b, "clone-b")]:
        assert chain(disk(clone).backing) == [f"[datastore1] {name}/{name}.qcow2", parent.backing.fileName]
        assert disk(clone).backing.deltaDiskFormat == "redoLogFormat"
        assert holds(agent, clone, 0, "0x5a") and holds(agent, clone, 131072, "0x6b")
    with pytest.raises(vim.fault.FileNotFound):
        create_linked_clone(si, "clone-c", vim.vm.device.VirtualDisk(
            capacityInKB=parent.capacityInKB,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName="[datastore1] nowhere/none.qcow2")))
    golden_sum = sha256(parent_file)

    # a redo layer of clone-a's own, left behind by a removal without consolidation
    write(agent, a, 65536, "0x11")
    s1 = snapshot(a, "s1")
    write(agent, a, 196608, "0x22")
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False, consolidate=False))
    assert a.runtime.consolidationNeeded and len(chain(disk(a).backing)) == 3

    # unlink=false: clone-a's own layers collapse, the shared parent stays its parent
    WaitForTask(a.PromoteDisks_Task(unlink=False))
    assert chain(disk(a).backing) == ["[datastore1] clone-a/clone-a.qcow2", parent.backing.fileName]
    assert not a.runtime.consolidationNeeded
    assert all(holds(agent, a, off, p) for off, p in GUEST_DATA)
    own = host_path(agent, disk(a).backing.fileName)
    scratch = tempfile.mkdtemp(prefix="promote-")
    before = os.path.join(scratch, "before.raw")
    qemu_img("convert", "-O", "raw", own, before)

    # a running VM with snapshots cannot be promoted
    s2 = snapshot(a, "s2")
    WaitForTask(a.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, a), "the guest to wait for its power button")
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(a.PromoteDisks_Task(unlink=True))
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False))

    # unlink=true on the running VM: the shared data is copied into clone-a's own disk
    WaitForTask(a.PromoteDisks_Task(unlink=True, disks=[disk(a)]))
    assert chain(disk(a).backing) == ["[datastore1] clone-a/clone-a.qcow2"]
    assert disk(a).backing.parent is None
    press_power_button(agent, a)
    wait_for(lambda: a.runtime.powerState == "poweredOff", "the guest to power off")
    assert "backing file" not in qemu_img("info", own)
    assert qemu_img_check_all(agent, a) == ["clone-a.qcow2"]
    qemu_img("compare", "-F", "raw", own, before)
    assert all(holds(agent, a, off, p) for off, p in GUEST_DATA)

    # the parent and the other clone are as they were
    assert sha256(parent_file) == golden_sum
    assert chain(disk(b).backing) == ["[datastore1] clone-b/clone-b.qcow2", parent.backing.fileName]
    assert holds(agent, b, 0, "0x5a") and holds(agent, b, 65536, "0")
    with pytest.raises(vmodl.fault.InvalidArgument):
        WaitForTask(b.PromoteDisks_Task(unlink=True, disks=[vim.vm.device.VirtualDisk(key=2007)]))
    for vm in (a, b, golden):
        WaitForTask(vm.Destroy_Task())
