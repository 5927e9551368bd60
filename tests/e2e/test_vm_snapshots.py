"""Snapshot trees through pyVmomi on real test-guest VMs: memory snapshots that a revert resumes
(the guest carries on waiting for its power button instead of booting again), disk-only
snapshots that revert to powered off with the disk as it was, a depth-3 tree with a branch,
removing a middle snapshot, RemoveAll into one flat disk, the tree surviving a vireod restart,
and every disk file passing `qemu-img check`. Disk contents are written and verified from the
host with `vdisk` while the VM is off; the guest's in-memory state is read through its shell,
typed into over the VMM's serial input. Also removals without consolidation (the redo logs stay,
runtime.consolidationNeeded, ConsolidateVMDisks merges them later)."""
import json
import os
import re
import socket
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import host_path, connection_to
from test_vm_lifecycle import agent, BIN_DIR, console, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

WAITING = "vireo-test-guest: waiting for the power button"
PROMPT = "vireo> "
BOOTED = "vireo-test-guest: booted"


si = connection_to("agent")


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


def control(agent, vm, request):
    """One request on the VM's VMM control socket (the protocol vireod drives it with)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "control.sock"))
        s.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(s.makefile().readline())
        assert reply["ok"], reply


def press_power_button(agent, vm):
    control(agent, vm, {"cmd": "power-button"})


def type_command(agent, vm, command, answer, timeout=60):
    """Types `command` into the test guest's shell (the VMM's serial input) and returns the first
    whole console line after it that starts with `answer` (waiting up to `timeout` seconds)."""
    before = len(console(agent, vm))
    control(agent, vm, {"cmd": "serial-input", "text": command + "\n"})
    pattern = re.compile(rf"^({re.escape(answer)}.*)\n", re.M)
    found = []

    def answered():
        match = pattern.search(console(agent, vm)[before:])
        return bool(match and not found.append(match.group(1)))

    wait_for(answered, f"the guest's answer to {command!r}", timeout)
    return found[0]


def ticks(agent, vm):
    return int(type_command(agent, vm, "ticks", "ticks=").split("=", 1)[1])


def snapshot(vm, name, memory=False, quiesce=False):
    task = vm.CreateSnapshot_Task(name=name, description=f"about {name}", memory=memory, quiesce=quiesce)
    WaitForTask(task)
    return task.info.result


def qemu_img_check_all(agent, vm):
    folder = os.path.dirname(host_path(agent, vm.config.files.vmPathName))
    images = sorted(f for f in os.listdir(folder) if f.endswith(".qcow2"))
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


def test_memory_snapshot_revert_restores_guest_ram_and_ticks(si, agent):
    vm = create_vm(si, "snap-ram", scenario="shell", nic=False)
    power_on_booted(agent, vm)
    wait_for(lambda: console(agent, vm).endswith(PROMPT), "the guest's shell prompt")
    assert type_command(agent, vm, "mark get", "mark=") == "mark="
    type_command(agent, vm, "mark set before the snapshot", "mark set")
    t1 = ticks(agent, vm)

    s1 = snapshot(vm, "ram", memory=True)
    assert vm.runtime.powerState == "poweredOn"
    type_command(agent, vm, "mark set after the snapshot", "mark set")
    assert type_command(agent, vm, "mark get", "mark=") == "mark=after the snapshot"
    after_snapshot = ticks(agent, vm)
    # let the guest's clock run well past the snapshot (100 ticks a second)
    wait_for(lambda: ticks(agent, vm) > after_snapshot + 300, "the guest's ticks to advance")
    before_revert = ticks(agent, vm)
    boots = console(agent, vm).count(BOOTED)

    WaitForTask(s1.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "poweredOn"
    # the same guest resumed at the snapshot: its RAM marker and its tick counter went back
    assert type_command(agent, vm, "mark get", "mark=") == "mark=before the snapshot"
    t2 = ticks(agent, vm)
    assert t1 <= t2 < before_revert, (t1, t2, before_revert)
    assert console(agent, vm).count(BOOTED) == boots

    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert qemu_img_check_all(agent, vm) == ["snap-ram.qcow2"]
    WaitForTask(vm.Destroy_Task())


def test_removal_without_consolidation_keeps_redo_logs_until_consolidated(si, agent):
    vm = create_vm(si, "snap-keep", scenario="wait", nic=False)
    base = disk(vm).backing.fileName
    write(agent, vm, 0, "0x11")
    s1 = snapshot(vm, "s1")
    write(agent, vm, 65536, "0x22")
    s2 = snapshot(vm, "s2")
    write(agent, vm, 131072, "0x33")
    s3 = snapshot(vm, "s3")
    write(agent, vm, 196608, "0x44")
    layers = chain(disk(vm).backing)
    assert len(layers) == 4 and not vm.runtime.consolidationNeeded
    files = qemu_img_check_all(agent, vm)

    # s2 leaves the tree, its redo log stays in the chain
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False, consolidate=False))
    assert [n.name for n in vm.snapshot.rootSnapshotList] == ["s1"]
    assert [n.name for n in vm.snapshot.rootSnapshotList[0].childSnapshotList] == ["s3"]
    assert vm.runtime.consolidationNeeded
    assert chain(disk(vm).backing) == layers
    assert qemu_img_check_all(agent, vm) == files
    assert chain(disk(s3).backing) == layers[1:]

    # what needs consolidating survives a vireod restart (.vmsd and disk-tree sidecars)
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    vm = si.content.searchIndex.FindByDatastorePath(si.content.rootFolder.childEntity[0],
                                                    "[datastore1] snap-keep/snap-keep.vmx")
    assert vm.runtime.consolidationNeeded
    assert chain(disk(vm).backing) == layers
    assert [n.name for n in vm.snapshot.rootSnapshotList] == ["s1"]

    WaitForTask(vm.RemoveAllSnapshots_Task(consolidate=False))
    assert vm.snapshot is None and vm.rootSnapshot == []
    assert vm.runtime.consolidationNeeded
    assert chain(disk(vm).backing) == layers
    assert qemu_img_check_all(agent, vm) == files
    assert all(holds(agent, vm, off, p) for off, p in [(0, "0x11"), (65536, "0x22"), (131072, "0x33"),
                                                       (196608, "0x44")])

    # consolidated while the guest runs: the VM is stunned around the merge
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, vm), "the guest to wait for its power button")
    WaitForTask(vm.ConsolidateVMDisks_Task())
    assert not vm.runtime.consolidationNeeded
    assert chain(disk(vm).backing) == [base]
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to power off")
    assert qemu_img_check_all(agent, vm) == ["snap-keep.qcow2"]
    assert all(holds(agent, vm, off, p) for off, p in [(0, "0x11"), (65536, "0x22"), (131072, "0x33"),
                                                       (196608, "0x44")])
    WaitForTask(vm.Destroy_Task())
