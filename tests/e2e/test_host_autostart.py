"""HostAutoStartManager as auto-start scripts drive it: the defaults and per-VM power info set by
ReconfigureAutostart and read back (kept across a vireod restart), bad settings refused, and
the real thing: a clean stop of vireod stops the marked VMs in reverse start order by their
stop actions (one suspended, one powered off; an unmarked VM keeps running as before), and
the next start powers them on in order, the second only after the first's start delay."""
import datetime

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import Agent, create_vm, power_on_booted, wait_for

DELAY = 3


@pytest.fixture(scope="module")
def agent():
    a = Agent()
    yield a
    a.close()


def manager(si):
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    return host.configManager.autoStartManager


def power_info(vm, order, start_delay=-1, start="powerOn", stop="systemDefault"):
    return vim.host.AutoStartManager.AutoPowerInfo(key=vm, startOrder=order, startDelay=start_delay,
                                                   waitForHeartbeat="no", startAction=start, stopDelay=-1,
                                                   stopAction=stop)


def events(si, vm, kind):
    spec = vim.event.EventFilterSpec(entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
                                     type=[kind])
    return si.content.eventManager.QueryEvents(spec)


def test_settings_are_kept_checked_and_ordered(agent):
    si = agent.vireod.connect()
    mgr = manager(si)
    defaults = mgr.config.defaults
    assert (defaults.enabled, defaults.startDelay, defaults.stopDelay, defaults.stopAction) == \
        (False, 120, 120, "powerOff")
    assert not mgr.config.powerInfo
    a = create_vm(si, "order-a", disk_kb=0, nic=False)
    b = create_vm(si, "order-b", disk_kb=0, nic=False)
    spec = vim.host.AutoStartManager.Config(defaults=vim.host.AutoStartManager.SystemDefaults(startDelay=7),
                                           powerInfo=[power_info(a, 1), power_info(b, 1, stop="guestShutdown")])
    mgr.ReconfigureAutostart(spec=spec)
    # b went in at position 1: a moved down to 2.
    got = [(p.key._moId, p.startOrder, p.stopAction) for p in mgr.config.powerInfo]
    assert got == [(b._moId, 1, "guestShutdown"), (a._moId, 2, "systemDefault")]
    assert mgr.config.defaults.startDelay == 7 and mgr.config.defaults.enabled is False
    for bad in [power_info(a, 0), power_info(a, 1, stop="explode"), power_info(a, 1, start="suspend"),
                power_info(a, 1, start_delay=-5)]:
        with pytest.raises(vmodl.fault.InvalidArgument):
            mgr.ReconfigureAutostart(spec=vim.host.AutoStartManager.Config(powerInfo=[bad]))
    ghost = vim.VirtualMachine("9999", si._stub)
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        mgr.ReconfigureAutostart(spec=vim.host.AutoStartManager.Config(powerInfo=[power_info(ghost, 1)]))
    moids = (a._moId, b._moId)
    Disconnect(si)
    agent.stop()  # auto-start is disabled: nothing to start or stop
    agent.start()
    si = agent.vireod.connect()
    mgr = manager(si)
    assert [(p.key._moId, p.startOrder) for p in mgr.config.powerInfo] == [(moids[1], 1), (moids[0], 2)]
    assert mgr.config.defaults.startDelay == 7
    for moid in moids:
        WaitForTask(vim.VirtualMachine(moid, si._stub).Destroy_Task())
    Disconnect(si)


def test_vms_stop_and_start_with_vireod_in_order(agent):
    si = agent.vireod.connect()
    first = create_vm(si, "auto-first", disk_kb=0, nic=False)
    second = create_vm(si, "auto-second", disk_kb=0, nic=False)
    bystander = create_vm(si, "bystander", disk_kb=0, nic=False)
    defaults = vim.host.AutoStartManager.SystemDefaults(enabled=True, startDelay=DELAY, stopAction="powerOff")
    manager(si).ReconfigureAutostart(spec=vim.host.AutoStartManager.Config(
        defaults=defaults, powerInfo=[power_info(first, 1), power_info(second, 2, stop="suspend")]))
    for vm in (first, second, bystander):
        power_on_booted(agent, vm)
    moids = [vm._moId for vm in (first, second, bystander)]
    Disconnect(si)

    agent.stop()  # a clean stop: second is suspended, then first powered off
    agent.start()
    si = agent.vireod.connect()
    first, second, bystander = (vim.VirtualMachine(moid, si._stub) for moid in moids)
    suspended = events(si, second, vim.event.VmSuspendedEvent)
    off = events(si, first, vim.event.VmPoweredOffEvent)
    assert len(suspended) == 1 and len(off) == 1
    assert suspended[0].createdTime <= off[0].createdTime
    assert not events(si, bystander, vim.event.VmPoweredOffEvent)
    assert bystander.runtime.powerState == "poweredOn"

    # The start sequence: first booted, then second resumed once first's delay had passed.
    wait_for(lambda: second.runtime.powerState == "poweredOn", "the second VM to be started", timeout=120)
    assert first.runtime.powerState == "poweredOn"
    gap = second.runtime.bootTime - first.runtime.bootTime
    assert gap >= datetime.timedelta(seconds=DELAY)
    assert len(events(si, second, vim.event.VmResumingEvent)) == 1
    for vm in (first, second, bystander):
        WaitForTask(vm.PowerOffVM_Task())
    Disconnect(si)
