"""Per-host MAC uniqueness: no two NICs of the VMs on one host share a MAC. A manual MAC another
VM has is refused (CreateVM, ReconfigVM add or edit: InvalidDeviceSpec); generated MACs are
drawn among those free. A clone, and a copy registered and answered "I Copied It", get new
generated MACs; a manual MAC stays with a copy only when no other VM on the host has it (as
ESXi keeps manual MACs)."""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_clone import clone
from test_vm_lifecycle import agent, config_spec, create_vm, root_pool  # noqa: F401 (fixture)
from test_vm_moved_or_copied import power_on_asked, register

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; the copy test powers on")
RACE_ROUNDS = 4


@pytest.fixture
def si(agent):
    return agent.vireod.connect()


def cards(vm):
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def all_macs(si):
    folder = si.content.rootFolder.childEntity[0].vmFolder
    return [c.macAddress for vm in folder.childEntity for c in cards(vm)]


def spec_with_mac(name, mac):
    """The config spec of a VM whose one NIC has the manual MAC `mac`."""
    spec = config_spec(name)
    for change in spec.deviceChange:
        if isinstance(change.device, vim.vm.device.VirtualEthernetCard):
            change.device.addressType = "manual"
            change.device.macAddress = mac
    return spec


def create_with_mac(si, name, mac):
    """A powered-off VM whose one NIC has the manual MAC `mac`."""
    task = si.content.rootFolder.childEntity[0].vmFolder.CreateVM_Task(config=spec_with_mac(name, mac),
                                                                       pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def nic_change(operation, mac, device=None):
    card = device or vim.vm.device.VirtualVmxnet3(
        key=-5, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))
    card.addressType = "manual" if mac else "generated"
    card.macAddress = mac
    return vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation=operation, device=card)])


def test_a_manual_mac_in_use_is_refused_and_generated_ones_are_free(si, agent):
    taken = "00:50:56:01:02:03"
    first = create_with_mac(si, "mac-first", taken)
    [card] = cards(first)
    assert (card.addressType, card.macAddress) == ("manual", taken)

    with pytest.raises(vim.fault.InvalidDeviceSpec) as refused:
        create_with_mac(si, "mac-twin", taken)
    assert "in use by the virtual machine mac-first" in refused.value.msg
    assert "mac-twin" not in [vm.name for vm in si.content.rootFolder.childEntity[0].vmFolder.childEntity]

    second = create_vm(si, "mac-second")
    [card] = cards(second)
    assert card.addressType == "generated" and card.macAddress.startswith("00:50:56:")
    own_mac = card.macAddress
    with pytest.raises(vim.fault.InvalidDeviceSpec):
        WaitForTask(second.ReconfigVM_Task(spec=nic_change("edit", taken, device=card)))
    with pytest.raises(vim.fault.InvalidDeviceSpec):
        WaitForTask(second.ReconfigVM_Task(spec=nic_change("add", taken)))
    assert [c.macAddress for c in cards(second)] == [own_mac]

    WaitForTask(second.ReconfigVM_Task(spec=nic_change("add", None)))
    # Setting a NIC's own MAC again changes nothing and is no conflict.
    [own, _] = cards(second)
    WaitForTask(second.ReconfigVM_Task(spec=nic_change("edit", own.macAddress, device=own)))
    macs = all_macs(si)
    assert len(macs) == len(set(macs)), macs


def test_clones_and_copies_get_new_macs_and_keep_a_manual_one_only_when_free(si, agent):
    manual = "00:50:56:01:02:04"
    origin = create_with_mac(si, "origin", manual)  # the folder register() copies
    WaitForTask(origin.ReconfigVM_Task(spec=nic_change("add", None)))
    [_, generated] = [c.macAddress for c in cards(origin)]
    WaitForTask(origin.PowerOnVM_Task())  # records where it lives: copies are asked
    WaitForTask(origin.PowerOffVM_Task())

    cloned = clone(si, origin, "mac-clone")
    clone_macs = [c.macAddress for c in cards(cloned)]
    assert not {manual, generated} & set(clone_macs)
    assert [c.addressType for c in cards(cloned)] == ["generated", "generated"]

    copy = register(si, agent, "origin", "mac-copied")
    task, question = power_on_asked(copy)
    copy.AnswerVM(questionId=question.id, answerChoice="2")
    WaitForTask(task)
    WaitForTask(copy.PowerOffVM_Task())
    assert not {manual, generated} & {c.macAddress for c in cards(copy)}
    macs = all_macs(si)
    assert len(macs) == len(set(macs)), macs

    # With the original gone its manual MAC is free: a copy keeps it, its generated one is new.
    origin.UnregisterVM()
    kept = register(si, agent, "origin", "mac-kept")
    task, question = power_on_asked(kept)
    kept.AnswerVM(questionId=question.id, answerChoice="2")
    WaitForTask(task)
    WaitForTask(kept.PowerOffVM_Task())
    [first, second] = cards(kept)
    assert (first.addressType, first.macAddress) == ("manual", manual)
    assert second.macAddress != generated
    macs = all_macs(si)
    assert len(macs) == len(set(macs)), macs


def race(starts):
    """Calls each task-starting function at the same moment, each on its own thread; returns
    what each task gave: its result, or the fault it failed with."""
    barrier = threading.Barrier(len(starts))

    def run(start):
        barrier.wait()
        task = start()
        try:
            WaitForTask(task)
        except vmodl.MethodFault as fault:
            return fault
        return task.info.result

    with ThreadPoolExecutor(len(starts)) as pool:
        return list(pool.map(run, starts))


def one_won(outcomes):
    """Exactly one outcome is a success; the other is the MAC's refusal."""
    refused = [o for o in outcomes if isinstance(o, vmodl.MethodFault)]
    assert len(refused) == len(outcomes) - 1, outcomes
    for fault in refused:
        assert isinstance(fault, vim.fault.InvalidDeviceSpec) and "is in use by the virtual machine" in fault.msg


def test_concurrent_changes_giving_one_manual_mac_leave_it_to_exactly_one(si, agent):
    """Two CreateVM_Task, and two ReconfigVM_Task adding a NIC to two VMs, each pair started at
    once on two sessions with one manual MAC: exactly one of each pair gets it, the other is
    refused. Repeated so that the two tasks overlap (a CreateVM makes a disk between choosing
    the MAC and registering the VM)."""
    sessions = [agent.vireod.connect() for _ in range(2)]
    folders = [s.content.rootFolder.childEntity[0].vmFolder for s in sessions]
    for round in range(RACE_ROUNDS):
        mac = f"00:50:56:02:00:{round:02x}"
        one_won(race([lambda n=n: folders[n].CreateVM_Task(config=spec_with_mac(f"race{round}-{n}", mac),
                                                           pool=root_pool(sessions[n]))
                      for n in range(2)]))
        mac = f"00:50:56:02:01:{round:02x}"
        vms = [create_vm(si, f"grow{round}-{n}", nic=False, disk_kb=0) for n in range(2)]
        own = [vim.VirtualMachine(vm._moId, sessions[n]._stub) for n, vm in enumerate(vms)]
        one_won(race([lambda n=n: own[n].ReconfigVM_Task(spec=nic_change("add", mac)) for n in range(2)]))
        assert sorted(len(cards(vm)) for vm in vms) == [0, 1]
    macs = all_macs(si)
    assert len(macs) == len(set(macs)), macs
