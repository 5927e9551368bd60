"""Guest tools through the VirtualMachine API: test-guest VMs booted with `vireo.tools=on` speak
the tools protocol on their tools channel; pyVmomi sees tools running, a green heartbeat and the
guest's identity and address, ShutdownGuest / RebootGuest / StandbyGuest reach the guest (a
guest that accepts standby ends suspended), and
quiesced snapshots freeze (flush the guest's disks) and thaw it."""
import os

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import host_path
from test_vm_lifecycle import agent, config_spec, console, power_on_booted, root_pool, si, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

GUEST_IP = "10.77.0.5"
TOOLS_CMDLINE = f"scenario=shell vireo.tools=on vireo.ip={GUEST_IP}/24"


def create_tools_vm(si, name, cmdline=TOOLS_CMDLINE):
    """A test-guest VM (one disk, one NIC) whose guest runs the shell with `cmdline`."""
    spec = config_spec(name, scenario="shell")
    for option in spec.extraConfig:
        if option.key == "vireo.boot.cmdline":
            option.value = cmdline
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def wait_tools_running(agent, vm):
    wait_for(lambda: vm.guest.toolsRunningStatus == "guestToolsRunning"
             and vm.guestHeartbeatStatus == "green"
             or vm.runtime.powerState != "poweredOn", "the guest's tools to run", timeout=60)
    assert vm.runtime.powerState == "poweredOn", console(agent, vm)


def test_tools_report_heartbeat_identity_and_address(si, agent):
    vm = create_tools_vm(si, "tools-facts")
    assert vm.guest.toolsStatus == "toolsNotInstalled"
    assert vm.guestHeartbeatStatus == "gray"
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    assert "vireo-test-guest: tools: protocol on" in console(agent, vm)
    assert vm.guest.toolsStatus == "toolsOk"
    wait_for(lambda: vm.guest.hostName == "vireo-test-guest", "guest.hostName")
    assert vm.guest.guestFullName == "Vireo test guest 0.1.0"
    assert vm.guest.ipAddress == GUEST_IP
    card = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    [nic] = vm.guest.net
    assert nic.macAddress == card.macAddress
    assert nic.deviceConfigId == card.key
    assert list(nic.ipAddress) == [GUEST_IP]

    with pytest.raises(vmodl.fault.SystemError) as raised:
        vm.StandbyGuest()
    assert "standby is not supported by this guest" in raised.value.reason
    assert vm.runtime.powerState == "poweredOn"

    WaitForTask(vm.PowerOffVM_Task())
    wait_for(lambda: vm.guestHeartbeatStatus == "gray", "the heartbeat to turn gray")
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert vm.guest.toolsStatus == "toolsNotRunning"
    WaitForTask(vm.Destroy_Task())


def test_shutdown_guest_powers_the_vm_off(si, agent):
    vm = create_tools_vm(si, "tools-shutdown")
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    vm.ShutdownGuest()
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest to power off")
    assert "vireo-test-guest: powering off" in console(agent, vm)
    WaitForTask(vm.Destroy_Task())


def test_standby_guest_ends_with_the_vm_suspended(si, agent):
    """A guest that accepts standby (vireo.standby=ok: it flushes its disks and says ok) ends
    suspended; powered on again, it carries on where it was (its mark survives)."""
    from test_vm_snapshots import type_command
    vm = create_tools_vm(si, "tools-standby", cmdline=TOOLS_CMDLINE + " vireo.standby=ok")
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    type_command(agent, vm, "mark set before-standby", "mark set")
    assert type_command(agent, vm, "mark get", "mark=") == "mark=before-standby"
    vm.StandbyGuest()
    wait_for(lambda: vm.runtime.powerState == "suspended", "the VM to be suspended")
    assert os.path.isfile(os.path.join(os.path.dirname(host_path(agent, vm.config.files.vmPathName)),
                                       "suspend", "vm.state"))
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")))
    assert any(isinstance(e, vim.event.VmSuspendedEvent) for e in events)
    WaitForTask(vm.PowerOnVM_Task())
    assert type_command(agent, vm, "mark get", "mark=") == "mark=before-standby"
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_reboot_guest_boots_it_again(si, agent):
    vm = create_tools_vm(si, "tools-reboot")
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    vm.RebootGuest()
    wait_for(lambda: console(agent, vm).count("vireo-test-guest: booted") == 2
             or vm.runtime.powerState != "poweredOn", "the guest to boot again")
    log = console(agent, vm)
    assert "vireo-test-guest: rebooting" in log
    assert log.count("vireo-test-guest: booted") == 2, log
    assert vm.runtime.powerState == "poweredOn"
    wait_tools_running(agent, vm)
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_quiesced_snapshots_freeze_and_thaw_the_guest(si, agent):
    vm = create_tools_vm(si, "tools-quiesce")
    power_on_booted(agent, vm)
    wait_tools_running(agent, vm)
    # The second freeze would fail had the first snapshot not thawed the guest.
    for name in ("quiet-1", "quiet-2"):
        WaitForTask(vm.CreateSnapshot_Task(name=name, description=name, memory=False, quiesce=True))
    assert console(agent, vm).count("vireo-test-guest: tools: freeze: 1 disk(s) flushed") == 2
    first = vm.snapshot.rootSnapshotList[0]
    assert first.quiesced and first.childSnapshotList[0].quiesced
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())


def test_guest_requests_without_the_protocol_find_no_tools(si, agent):
    vm = create_tools_vm(si, "tools-off", cmdline="scenario=shell")
    power_on_booted(agent, vm)
    for request in (vm.ShutdownGuest, vm.RebootGuest, vm.StandbyGuest):
        with pytest.raises(vim.fault.ToolsUnavailable):
            request()
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert vm.guest.toolsStatus == "toolsNotInstalled"
    assert vm.guestHeartbeatStatus == "gray"
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
