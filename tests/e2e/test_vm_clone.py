"""VirtualMachine.CloneVM_Task through pyVmomi: a full clone of a powered-off VM (its own flat
disk, byte-identical and independent, new identities, spec.config applied, VmClonedEvent,
survives a vireod restart), deploying from a template with powerOn (the clone boots), a
clone of a running VM, a linked clone from a snapshot (a child disk of the snapshot's layer,
which the source keeps while the clone needs it) and the faults for bad requests."""
import hashlib
import os
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to
from test_vm_lifecycle import agent, console, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import (BOOTED, chain, disk, holds, host_path, press_power_button, qemu_img_check_all,
                               snapshot, write)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


si = connection_to("agent")


def vm_folder(si):
    return si.content.rootFolder.childEntity[0].vmFolder


def clone(si, source, name, **spec):
    location = vim.vm.RelocateSpec(diskMoveType=spec.pop("disk_move", None))
    task = source.CloneVM_Task(folder=vm_folder(si), name=name, spec=vim.vm.CloneSpec(location=location, **spec))
    WaitForTask(task)
    return task.info.result


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def power_off_by_button(agent, vm):
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to power off")


def test_full_clone_of_a_powered_off_vm(si, agent):
    src = create_vm(si, "full-src", scenario="wait")
    write(agent, src, 0, "0x5a")
    write(agent, src, 131072, "0x6b")
    config = vim.vm.ConfigSpec(numCPUs=1, memoryMB=96, annotation="a full clone")
    copy = clone(si, src, "full-copy", config=config)
    assert isinstance(copy, vim.VirtualMachine) and copy.name == "full-copy"
    assert copy.runtime.powerState == "poweredOff" and not copy.config.template
    assert copy.config.uuid != src.config.uuid and copy.config.instanceUuid != src.config.instanceUuid
    mac = [d.macAddress for d in copy.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    src_mac = [d.macAddress for d in src.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(mac) == 1 and mac != src_mac
    assert (copy.config.hardware.numCPU, copy.config.hardware.memoryMB) == (1, 96)
    assert copy.config.annotation == "a full clone"
    latest = si.content.eventManager.latestEvent
    assert isinstance(latest, vim.event.VmClonedEvent) and latest.sourceVm.vm == src

    # one flat file of its own, the same bytes as the source
    assert chain(disk(copy).backing) == ["[datastore1] full-copy/full-copy.qcow2"]
    own, theirs = host_path(agent, disk(copy).backing.fileName), host_path(agent, disk(src).backing.fileName)
    assert "backing file" not in qemu_img("info", own)
    assert qemu_img_check_all(agent, copy) == ["full-copy.qcow2"]
    qemu_img("compare", theirs, own)

    # independent: a write to either one is not seen by the other
    write(agent, copy, 65536, "0x11")
    write(agent, src, 196608, "0x22")
    assert holds(agent, copy, 65536, "0x11") and holds(agent, src, 65536, "0")
    assert holds(agent, src, 196608, "0x22") and holds(agent, copy, 196608, "0")
    assert holds(agent, copy, 0, "0x5a") and holds(agent, copy, 131072, "0x6b")

    with pytest.raises(vim.fault.DuplicateName):
        clone(si, src, "full-copy")

    # the clone is an ordinary VM: it survives a vireod restart
    moid = copy._moId
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    copy = vim.VirtualMachine(moid, si._stub)
    assert copy.name == "full-copy" and chain(disk(copy).backing) == ["[datastore1] full-copy/full-copy.qcow2"]
    for vm in (copy, vim.VirtualMachine(src._moId, si._stub)):
        WaitForTask(vm.Destroy_Task())


def test_deploy_from_a_template_and_clone_a_running_vm(si, agent):
    tmpl = create_vm(si, "tmpl-src", scenario="wait", nic=False)
    write(agent, tmpl, 0, "0x5a")
    tmpl.MarkAsTemplate()

    web = clone(si, tmpl, "web-1", powerOn=True)
    assert not web.config.template
    wait_for(lambda: BOOTED in console(agent, web) or web.runtime.powerState != "poweredOn", "the clone to boot")
    assert web.runtime.powerState == "poweredOn", console(agent, web)
    assert holds(agent, web, 0, "0x5a")

    # a template from a template
    gold = clone(si, tmpl, "tmpl-copy", template=True)
    assert gold.config.template and gold.runtime.powerState == "poweredOff"
    with pytest.raises(vmodl.fault.InvalidArgument):
        clone(si, tmpl, "tmpl-bad", template=True, powerOn=True)

    # a running VM is copied from a temporary snapshot, removed afterwards
    hot = clone(si, web, "web-2")
    assert web.runtime.powerState == "poweredOn" and web.snapshot is None
    assert chain(disk(web).backing) == ["[datastore1] web-1/web-1.qcow2"]
    assert chain(disk(hot).backing) == ["[datastore1] web-2/web-2.qcow2"]
    assert qemu_img_check_all(agent, hot) == ["web-2.qcow2"]
    assert holds(agent, hot, 0, "0x5a")
    power_on_booted(agent, hot)
    for vm in (web, hot):
        power_off_by_button(agent, vm)
    for vm in (web, hot, gold, tmpl):
        WaitForTask(vm.Destroy_Task())


def test_linked_clone_from_a_snapshot(si, agent):
    src = create_vm(si, "link-src", scenario="wait", nic=False)
    write(agent, src, 0, "0x5a")
    s1 = snapshot(src, "s1")
    write(agent, src, 131072, "0x6b")
    base = host_path(agent, "[datastore1] link-src/link-src.qcow2")
    frozen = sha256(base)

    with pytest.raises(vmodl.fault.InvalidArgument):
        clone(si, src, "link-bad", disk_move="createNewChildDiskBacking")
    with pytest.raises(vmodl.fault.InvalidArgument):
        clone(si, src, "link-bad", snapshot=vim.vm.Snapshot("999-snapshot-9", si._stub))

    linked = clone(si, src, "linked", disk_move="createNewChildDiskBacking", snapshot=s1)
    assert chain(disk(linked).backing) == ["[datastore1] linked/linked.qcow2", "[datastore1] link-src/link-src.qcow2"]
    info = qemu_img("info", host_path(agent, disk(linked).backing.fileName))
    assert "backing file: ../link-src/link-src.qcow2" in info, info
    assert qemu_img_check_all(agent, linked) == ["linked.qcow2"]
    assert holds(agent, linked, 0, "0x5a") and holds(agent, linked, 131072, "0")

    # the source removes (and consolidates) its snapshot: the layer the clone needs stays as it was
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
    assert src.snapshot is None and sha256(base) == frozen
    assert holds(agent, src, 131072, "0x6b") and holds(agent, linked, 131072, "0")
    power_on_booted(agent, linked)
    assert holds(agent, src, 0, "0x5a")
    power_off_by_button(agent, linked)
    assert holds(agent, linked, 0, "0x5a")

    # the source cannot be destroyed under its clone; once the clone is gone its layers merge
    with pytest.raises(vim.fault.ResourceInUse):
        WaitForTask(src.Destroy_Task())
    WaitForTask(linked.Destroy_Task())
    assert src.runtime.consolidationNeeded
    WaitForTask(src.ConsolidateVMDisks_Task())
    assert chain(disk(src).backing) == ["[datastore1] link-src/link-src.qcow2"]
    assert holds(agent, src, 0, "0x5a") and holds(agent, src, 131072, "0x6b")
    WaitForTask(src.Destroy_Task())
