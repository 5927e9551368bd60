"""Snapshot trees through pyVmomi on real test-guest VMs: memory snapshots that a revert resumes
(the guest carries on waiting for its power button instead of booting again), disk-only
snapshots that revert to powered off with the disk as it was, a depth-3 tree with a branch,
removing a middle snapshot, RemoveAll into one flat disk, the tree surviving a vireod restart,
and every disk file passing `qemu-img check`. Disk contents are written and verified from the
host with `vdisk` while the VM is off (the test guest's shell cannot be typed into through
vireod)."""
import json
import os
import re
import socket
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from test_vm_lifecycle import agent, BIN_DIR, console, create_vm, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

WAITING = "vireo-test-guest: waiting for the power button"
BOOTED = "vireo-test-guest: booted"


@pytest.fixture
def si(agent):
    connection = agent.vireod.connect()
    yield connection


def host_path(agent, datastore_path):
    return os.path.join(agent.data_dir, "datastore1", datastore_path.split("] ", 1)[1])


def disk(vm):
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def chain(backing):
    names = []
    while backing is not None:
        names.append(backing.fileName)
        backing = backing.parent
    return names


def vdisk(*args, check=True):
    return subprocess.run([os.path.join(BIN_DIR, "vdisk"), *args], capture_output=True, text=True, check=check)


def write(agent, vm, offset, pattern):
    vdisk("write", host_path(agent, disk(vm).backing.fileName), "--offset", str(offset), "--length", "65536",
          "--pattern", pattern)


def holds(agent, vm, offset, pattern):
    done = vdisk("read", host_path(agent, disk(vm).backing.fileName), "--offset", str(offset), "--length", "65536",
                 "--pattern", pattern, check=False)
    assert done.returncode in (0, 3), done.stderr
    return done.returncode == 0


def press_power_button(agent, vm):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "control.sock"))
        s.sendall(b'{"cmd":"power-button"}\n')
        assert json.loads(s.makefile().readline())["ok"]


def snapshot(vm, name, memory=False, quiesce=False):
    task = vm.CreateSnapshot_Task(name=name, description=f"about {name}", memory=memory, quiesce=quiesce)
    WaitForTask(task)
    return task.info.result


def qemu_img_check_all(agent, vm):
    folder = os.path.dirname(host_path(agent, vm.config.files.vmPathName))
    images = [f for f in os.listdir(folder) if f.endswith(".qcow2")]
    for image in images:
        done = subprocess.run(["qemu-img", "check", os.path.join(folder, image)], capture_output=True, text=True)
        assert done.returncode == 0, (image, done.stdout, done.stderr)
    return images


def test_memory_snapshot_revert_resumes_the_guest(si, agent):
    vm = create_vm(si, "snap-mem", scenario="wait", nic=False)
    assert vm.snapshot is None and vm.rootSnapshot == []
    assert vm.capability.memorySnapshotsSupported and vm.capability.revertToSnapshotSupported
    base = disk(vm).backing.fileName
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, vm), "the guest to wait for its power button")

    with pytest.raises(vim.fault.ToolsUnavailable):
        snapshot(vm, "quiet", quiesce=True)
    assert vm.snapshot is None

    s1 = snapshot(vm, "s1", memory=True)
    assert isinstance(s1, vim.vm.Snapshot)
    assert vm.runtime.powerState == "poweredOn"
    assert vm.snapshot.currentSnapshot == s1 and vm.rootSnapshot == [s1]
    node = vm.snapshot.rootSnapshotList[0]
    assert (node.name, node.description, node.state, node.quiesced, node.id) == ("s1", "about s1", "poweredOn", False, 1)
    assert s1.vm == vm and s1.childSnapshot == []
    layer = disk(vm).backing.fileName
    assert re.fullmatch(r"\[datastore1\] snap-mem/snap-mem-\d{6}\.qcow2", layer)
    assert chain(disk(vm).backing) == [disk(vm).backing.fileName, base]
    assert chain(disk(s1).backing) == [base]
    types = {f.type for f in vm.layoutEx.file}
    assert {"snapshotData", "snapshotMemory", "snapshotList"} <= types
    assert vm.layoutEx.snapshot[0].key == s1 and len(vm.layoutEx.disk[0].chain) == 2

    # the guest runs on after its memory snapshot: it still answers the power button
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to power off")
    write(agent, vm, 0, "0xaa")
    boots = console(agent, vm).count(BOOTED)

    WaitForTask(s1.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "poweredOn"
    assert disk(vm).backing.fileName not in (layer, base)
    # resumed where it was saved: no boot, still waiting, and it still answers the button
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the resumed guest to power off")
    log = console(agent, vm)
    assert log.count(BOOTED) == boots, log
    assert log.count("vireo-test-guest: power button pressed") == 2
    assert holds(agent, vm, 0, "0"), "the revert kept a write made after the snapshot"

    # suppressPowerOn leaves a memory snapshot's VM suspended; power-on resumes it
    WaitForTask(vm.RevertToCurrentSnapshot_Task(suppressPowerOn=True))
    assert vm.runtime.powerState == "suspended"
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the resumed guest to power off")
    assert console(agent, vm).count(BOOTED) == boots

    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None and vm.rootSnapshot == []
    assert disk(vm).backing.fileName == base and disk(vm).backing.parent is None
    assert qemu_img_check_all(agent, vm) == ["snap-mem.qcow2"]
    WaitForTask(vm.Destroy_Task())


def test_tree_with_branch_middle_removal_and_restart(si, agent):
    vm = create_vm(si, "snap-tree", scenario="wait", nic=False)
    write(agent, vm, 0, "0x11")
    s1 = snapshot(vm, "s1")
    assert vm.snapshot.rootSnapshotList[0].state == "poweredOff"
    write(agent, vm, 65536, "0x22")
    s2 = snapshot(vm, "s2")
    write(agent, vm, 0, "0x33")

    WaitForTask(s2.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "poweredOff"
    assert holds(agent, vm, 0, "0x11") and holds(agent, vm, 65536, "0x22")
    WaitForTask(s1.RevertToSnapshot_Task())
    assert holds(agent, vm, 0, "0x11") and holds(agent, vm, 65536, "0")

    # a branch under s1, then depth 3: s1 -> s3 -> s4
    write(agent, vm, 131072, "0x44")
    s3 = snapshot(vm, "s3")
    write(agent, vm, 196608, "0x55")
    s4 = snapshot(vm, "s4")
    assert sorted(s.name for s in vm.snapshot.rootSnapshotList[0].childSnapshotList) == ["s2", "s3"]
    assert s3.childSnapshot == [s4] and vm.snapshot.currentSnapshot == s4
    s3_node = next(s for s in vm.snapshot.rootSnapshotList[0].childSnapshotList if s.name == "s3")
    assert s3_node.childSnapshotList[0].name == "s4"

    s3.RenameSnapshot(name="s3-renamed", description="renamed")
    assert s3_node.snapshot.config is not None
    assert any(s.name == "s3-renamed" for s in vm.snapshot.rootSnapshotList[0].childSnapshotList)

    # vireod restarts: the tree is read back from the .vmsd
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    vm = si.content.searchIndex.FindByDatastorePath(si.content.rootFolder.childEntity[0],
                                                    "[datastore1] snap-tree/snap-tree.vmx")
    s3, s4 = vim.vm.Snapshot(s3._moId, si._stub), vim.vm.Snapshot(s4._moId, si._stub)
    s2 = vim.vm.Snapshot(s2._moId, si._stub)
    assert vm.snapshot.currentSnapshot == s4

    WaitForTask(s3.RemoveSnapshot_Task(removeChildren=False))
    root = vm.snapshot.rootSnapshotList[0]
    assert sorted(s.name for s in root.childSnapshotList) == ["s2", "s4"]
    WaitForTask(s4.RevertToSnapshot_Task())
    assert all(holds(agent, vm, off, p) for off, p in [(0, "0x11"), (131072, "0x44"), (196608, "0x55"), (65536, "0")])
    WaitForTask(s2.RevertToSnapshot_Task())
    assert holds(agent, vm, 65536, "0x22") and holds(agent, vm, 131072, "0")
    assert not vm.runtime.consolidationNeeded
    qemu_img_check_all(agent, vm)

    write(agent, vm, 262144, "0x66")
    task = vm.EstimateStorageForConsolidateSnapshots_Task()
    WaitForTask(task)
    assert task.info.result[0].datastore._moId == "datastore1"
    assert task.info.result[0].freeSpaceRequiredInKb > 0
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None
    assert holds(agent, vm, 65536, "0x22") and holds(agent, vm, 262144, "0x66") and holds(agent, vm, 0, "0x11")
    assert qemu_img_check_all(agent, vm) == ["snap-tree.qcow2"]
    WaitForTask(vm.ConsolidateVMDisks_Task())
    WaitForTask(vm.RevertToCurrentSnapshot_Task())  # no snapshot: nothing happens
    assert vm.runtime.powerState == "poweredOff"


def test_snapshot_of_a_suspended_vm_reverts_to_suspended(si, agent):
    vm = create_vm(si, "snap-susp", scenario="wait", nic=False)
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, vm), "the guest to wait for its power button")
    WaitForTask(vm.SuspendVM_Task())
    s1 = snapshot(vm, "suspended")
    assert vm.snapshot.rootSnapshotList[0].state == "suspended"
    WaitForTask(vm.PowerOnVM_Task())
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to power off")
    WaitForTask(s1.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "suspended"
    WaitForTask(vm.PowerOnVM_Task())
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the resumed guest to power off")
    assert console(agent, vm).count(BOOTED) == 1
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=True))
    assert vm.snapshot is None
    qemu_img_check_all(agent, vm)
