"""\"Moved or copied?\" (msg.uuid.altered): a VM's folder copied (or moved) on the datastore and
registered again asks at its power-on, which waits for AnswerVM. "I Copied It" gives the VM a new
BIOS UUID and new MACs (written to its .vmx); "I Moved It" keeps them; Cancel fails the power-on.
A VM powered on where it was created, or a clone, is never asked."""
import os
import shutil

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to
from test_vm_lifecycle import agent, create_vm, root_pool, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


si = connection_to("agent")


def identity(vm):
    macs = [d.macAddress for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return vm.config.uuid, macs


def register(si, agent, source, folder):
    """Copies the folder `source` to `folder` and registers the copy's .vmx under that name."""
    datastore = os.path.join(agent.data_dir, "datastore1")
    shutil.copytree(os.path.join(datastore, source), os.path.join(datastore, folder))
    vmx = f"[datastore1] {folder}/origin.vmx"
    dc = si.content.rootFolder.childEntity[0]
    task = dc.vmFolder.RegisterVM_Task(path=vmx, name=folder, asTemplate=False, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def power_on_asked(vm):
    """Starts a power-on and returns the task and the question it waits on."""
    task = vm.PowerOnVM_Task()
    wait_for(lambda: vm.runtime.question is not None, "the moved-or-copied question")
    assert task.info.state in ("queued", "running")
    return task, vm.runtime.question


def test_a_copied_vm_gets_a_new_identity_a_moved_one_keeps_it_and_cancel_stays_off(si, agent):
    origin = create_vm(si, "origin")
    WaitForTask(origin.PowerOnVM_Task())
    WaitForTask(origin.PowerOffVM_Task())
    WaitForTask(origin.PowerOnVM_Task())  # where it was made: never asked
    WaitForTask(origin.PowerOffVM_Task())
    original = identity(origin)

    copy = register(si, agent, "origin", "copied")
    assert identity(copy) == original
    task, question = power_on_asked(copy)
    assert question.message[0].id == "msg.uuid.altered"
    assert question.text.startswith("msg.uuid.altered:This virtual machine might have been moved or copied.")
    assert [(c.key, c.label) for c in question.choice.choiceInfo] == [
        ("0", "Cancel"), ("1", "I Moved It"), ("2", "I Copied It")]
    assert question.choice.defaultIndex == 2
    assert copy.runtime.powerState == "poweredOff" and not copy.runtime.paused
    copy.AnswerVM(questionId=question.id, answerChoice="2")
    WaitForTask(task)
    assert copy.runtime.powerState == "poweredOn" and copy.runtime.question is None
    uuid, macs = identity(copy)
    assert uuid != original[0] and len(macs) == 1 and macs[0] != original[1][0]
    with open(os.path.join(agent.data_dir, "datastore1", "copied", "origin.vmx")) as f:
        vmx = f.read()
    assert macs[0] in vmx and original[1][0] not in vmx
    WaitForTask(copy.PowerOffVM_Task())
    WaitForTask(copy.PowerOnVM_Task())  # its new place is recorded: not asked again
    assert identity(copy) == (uuid, macs)
    WaitForTask(copy.PowerOffVM_Task())

    origin.UnregisterVM()
    datastore = os.path.join(agent.data_dir, "datastore1")
    moved = register(si, agent, "origin", "moved")
    shutil.rmtree(os.path.join(datastore, "origin"))
    task, question = power_on_asked(moved)
    moved.AnswerVM(questionId=question.id, answerChoice="1")
    WaitForTask(task)
    assert identity(moved) == original
    WaitForTask(moved.PowerOffVM_Task())

    refused = register(si, agent, "moved", "refused")
    task, question = power_on_asked(refused)
    refused.AnswerVM(questionId=question.id, answerChoice="0")
    with pytest.raises(vmodl.fault.RequestCanceled):
        WaitForTask(task)
    assert refused.runtime.powerState == "poweredOff" and refused.runtime.question is None
    assert identity(refused) == original

    for vm in (copy, moved, refused):
        WaitForTask(vm.Destroy_Task())
