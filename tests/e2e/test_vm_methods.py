"""The rest of the VirtualMachine methods a single host answers, through pyVmomi: UpgradeVM_Task,
ExtractOvfEnvironment, ResetVM_Task and ResetGuestInformation's power-state rules, SendNMI
(seen by the guest), PutUsbScanCodes (keys typed at the guest's console), and the sample VM of
scripts/run.sh, whose guest tools answer ShutdownGuest and RebootGuest out of the box."""
import os
import shutil
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import (GUEST, REPO, agent, console, create_vm, power_on_booted, root_pool, si,  # noqa: F401
                               wait_for)
from test_vm_reconfig import refused, vmx

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


def test_upgrade_records_the_version_once(si, agent):
    vm = create_vm(si, "m-upgrade", disk_kb=0, nic=False)
    folder = si.content.rootFolder.childEntity[0].vmFolder
    spec = vm.config
    assert spec.version == "vmx-21"
    with pytest.raises(vim.fault.AlreadyUpgraded):
        WaitForTask(vm.UpgradeVM_Task())
    # An older VM: created at vmx-13, upgraded step by step.
    from test_vm_lifecycle import config_spec
    old = config_spec("m-old", disk_kb=0, nic=False)
    old.version = "vmx-13"
    task = folder.CreateVM_Task(config=old, pool=root_pool(si))
    WaitForTask(task)
    old_vm = task.info.result
    assert old_vm.config.version == "vmx-13"
    with pytest.raises(vmodl.fault.InvalidArgument):
        WaitForTask(old_vm.UpgradeVM_Task(version="vmx-99"))
    with pytest.raises(vim.fault.AlreadyUpgraded):
        WaitForTask(old_vm.UpgradeVM_Task(version="vmx-10"))
    WaitForTask(old_vm.UpgradeVM_Task(version="vmx-19"))
    assert old_vm.config.version == "vmx-19" and vmx(agent, old_vm)["virtualhw.version"] == "19"
    power_on_booted(agent, old_vm)
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(old_vm.UpgradeVM_Task())
    WaitForTask(old_vm.PowerOffVM_Task())
    WaitForTask(old_vm.UpgradeVM_Task())
    assert old_vm.config.version == "vmx-21"
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=old_vm, recursion="self")))
    assert sorted(e.version for e in events if isinstance(e, vim.event.VmUpgradeCompleteEvent)) == ["vmx-19", "vmx-21"]
    # The upgraded VM still boots.
    power_on_booted(agent, old_vm)
    WaitForTask(old_vm.PowerOffVM_Task())


def test_power_state_rules_of_reset_ovf_and_guest_information(si, agent):
    vm = create_vm(si, "m-rules", disk_kb=0, nic=False)
    assert vm.ExtractOvfEnvironment() == ""
    with pytest.raises(vim.fault.InvalidPowerState) as raised:
        WaitForTask(vm.ResetVM_Task())
    assert raised.value.existingState == "poweredOff" and raised.value.requestedState == "poweredOn"
    vm.ResetGuestInformation()
    power_on_booted(agent, vm)
    with pytest.raises(vim.fault.InvalidPowerState) as raised:
        vm.ResetGuestInformation()
    assert raised.value.existingState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    folder = si.content.rootFolder.childEntity[0].vmFolder
    from test_vm_lifecycle import config_spec
    spec = config_spec("m-vapp", disk_kb=0, nic=False)
    spec.vAppConfig = vim.vApp.VmConfigSpec(ovfEnvironmentTransport=["com.vmware.guestInfo"])
    with pytest.raises(vmodl.fault.NotSupported):
        WaitForTask(folder.CreateVM_Task(config=spec, pool=root_pool(si)))
    refused(agent, vm, vmodl.fault.NotSupported, vAppConfig=vim.vApp.VmConfigSpec(ovfEnvironmentTransport=["iso"]))


def key(usage, shift=False):
    return vim.UsbScanCodeSpecKeyEvent(usbHidCode=(usage << 16) | 7,
                                       modifiers=vim.UsbScanCodeSpecModifierType(leftShift=shift))


def test_usb_scan_codes_type_on_the_console_and_nmi_reaches_the_guest(si, agent):
    vm = create_vm(si, "m-keys", scenario="shell", disk_kb=0, nic=False)
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.PutUsbScanCodes(vim.UsbScanCodeSpec(keyEvents=[key(0x04)]))
    power_on_booted(agent, vm)
    wait_for(lambda: "vireo> " in console(agent, vm), "the shell prompt")
    # "echo Hi!" then Return; an arrow key (0x52) has no console byte and is not counted.
    events = [key(0x08), key(0x06), key(0x0b), key(0x12), key(0x2c), key(0x0b, shift=True), key(0x0c),
              key(0x1e, shift=True), key(0x52), key(0x28)]
    assert vm.PutUsbScanCodes(vim.UsbScanCodeSpec(keyEvents=events)) == 9
    wait_for(lambda: "\nHi!" in console(agent, vm).replace("\r", ""), "the echoed line")

    vm.SendNMI()
    wait_for(lambda: "panic: NMI" in console(agent, vm), "the guest to see the NMI")
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    with pytest.raises(vim.fault.InvalidPowerState):
        vm.SendNMI()


def register_sample_vm(si, agent):
    """Registers scripts/run.sh's sample VM (its .vmx, the test guest, a new 64 MiB disk)."""
    folder_dir = os.path.join(agent.data_dir, "datastore1", "sample-vm")
    os.makedirs(folder_dir)
    shutil.copy(os.path.join(REPO, "scripts", "sample-vm.vmx"), folder_dir)
    shutil.copy(GUEST, folder_dir)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(folder_dir, "sample-vm.qcow2"), "64M"],
                   check=True)
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.RegisterVM_Task(path="[datastore1] sample-vm/sample-vm.vmx", asTemplate=False, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def test_the_sample_vm_runs_its_guest_tools(si, agent):
    vm = register_sample_vm(si, agent)
    assert vm.name == "sample-vm"
    power_on_booted(agent, vm)
    wait_for(lambda: vm.guest.toolsRunningStatus == "guestToolsRunning", "the sample VM's tools", timeout=60)
    assert vm.guest.toolsStatus == "toolsOk"
    wait_for(lambda: vm.guest.hostName == "vireo-test-guest", "guest identity")
    assert vm.guest.guestFullName == "Vireo test guest 0.1.0"
    vm.RebootGuest()
    wait_for(lambda: console(agent, vm).count("vireo-test-guest: booted") == 2, "the sample VM to reboot")
    wait_for(lambda: vm.guest.toolsRunningStatus == "guestToolsRunning", "the tools after the reboot")
    vm.ShutdownGuest()
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the sample VM to shut down")


def test_query_unowned_files_lists_only_what_is_not_the_vms(si, agent):
    """QueryUnownedFiles: the files of the VM's folder that are none of its own; its .vmx,
    disks (their snapshot layers and tree sidecars), logs and snapshot list never are."""
    vm = create_vm(si, "unowned", scenario="shell")
    folder = os.path.join(agent.data_dir, "datastore1", "unowned")
    assert vm.QueryUnownedFiles() == []
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("left here by hand\n")
    os.makedirs(os.path.join(folder, "extra"))
    with open(os.path.join(folder, "extra", "stray.bin"), "wb") as f:
        f.write(b"\0" * 512)
    expected = ["[datastore1] unowned/extra/stray.bin", "[datastore1] unowned/notes.txt"]
    assert sorted(vm.QueryUnownedFiles()) == expected
    power_on_booted(agent, vm)
    WaitForTask(vm.CreateSnapshot_Task(name="s", memory=True, quiesce=False))
    WaitForTask(vm.PowerOffVM_Task())
    owned = {f.name for f in vm.layoutEx.file}
    assert len(owned) > 4 and not owned & set(expected)
    assert sorted(vm.QueryUnownedFiles()) == expected
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
