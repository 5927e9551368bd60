"""ReconfigVM_Task and Rename_Task field by field, as a vSphere admin's pyVmomi script uses them:
each change is checked in the API, in the .vmx, and (for CPUs and memory) in the guest at its
next boot; each refused change leaves the VM and its .vmx as they were."""
import os
import re

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import agent, console, create_vm, power_on_booted, si, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


def vmx_path(agent, vm):
    return os.path.join(agent.data_dir, "datastore1", vm.config.files.vmPathName.split("] ", 1)[1])


def vmx(agent, vm):
    """The .vmx as a dict (keys lower-cased)."""
    with open(vmx_path(agent, vm)) as f:
        return {k.strip().lower(): v.strip().strip('"') for k, v in
                (line.split("=", 1) for line in f if "=" in line)}


def vmx_bytes(agent, vm):
    with open(vmx_path(agent, vm), "rb") as f:
        return f.read()


def reconfigure(vm, **fields):
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(**fields)))


def boot_lines(agent, vm):
    return re.findall(r"vireo-test-guest: booted cpus=(\d+) mem=(\d+)MiB", console(agent, vm))


def refused(agent, vm, fault, **fields):
    """Asserts that the spec fails with `fault` and changes nothing."""
    before = (vmx_bytes(agent, vm), vm.config.annotation, vm.config.hardware.numCPU, vm.config.hardware.memoryMB)
    with pytest.raises(fault) as raised:
        reconfigure(vm, annotation="must not stick", **fields)
    after = (vmx_bytes(agent, vm), vm.config.annotation, vm.config.hardware.numCPU, vm.config.hardware.memoryMB)
    assert after == before
    return raised.value


def test_cpus_and_memory_take_effect_at_the_next_boot(si, agent):
    vm = create_vm(si, "rc-size", disk_kb=0, nic=False)
    power_on_booted(agent, vm)
    assert boot_lines(agent, vm)[-1][0] == "2"
    first_mem = int(boot_lines(agent, vm)[-1][1])
    WaitForTask(vm.PowerOffVM_Task())

    reconfigure(vm, numCPUs=1, memoryMB=96)
    assert vm.config.hardware.numCPU == 1 and vm.config.hardware.memoryMB == 96
    assert vmx(agent, vm)["numvcpus"] == "1" and vmx(agent, vm)["memsize"] == "96"
    power_on_booted(agent, vm)
    cpus, mem = boot_lines(agent, vm)[-1]
    assert cpus == "1"
    assert int(mem) - first_mem == 96 - 64, "the guest sees 32 MiB more than before"
    WaitForTask(vm.PowerOffVM_Task())


def test_hardware_changes_of_a_running_vm_get_esxi_s_faults(si, agent):
    vm = create_vm(si, "rc-live", disk_kb=0, nic=False)
    power_on_booted(agent, vm)
    # Without hot add, CPUs and memory get ESXi's hot-plug faults; other hardware needs the VM off.
    refused(agent, vm, vim.fault.CpuHotPlugNotSupported, numCPUs=1)
    refused(agent, vm, vim.fault.MemoryHotPlugNotSupported, memoryMB=128)
    for fields in ({"cpuHotAddEnabled": True}, {"guestId": "debian12_64Guest"}, {"numCoresPerSocket": 2}):
        fault = refused(agent, vm, vim.fault.InvalidPowerState, **fields)
        assert fault.existingState == "poweredOn" and fault.requestedState == "poweredOff"
    reconfigure(vm, annotation="noted while running", extraConfig=[vim.option.OptionValue(key="guestinfo.a", value="1")])
    assert vm.config.annotation == "noted while running"
    assert vmx(agent, vm)["guestinfo.a"] == "1"
    WaitForTask(vm.PowerOffVM_Task())

    reconfigure(vm, cpuHotAddEnabled=True, memoryHotAddEnabled=True)
    assert vm.config.cpuHotAddEnabled and vm.config.memoryHotAddEnabled
    assert vmx(agent, vm)["vcpu.hotadd"] == "TRUE" and vmx(agent, vm)["mem.hotadd"] == "TRUE"
    power_on_booted(agent, vm)
    # Hot add is recorded, but this host's VMM does not add CPUs or memory to a running guest.
    refused(agent, vm, vmodl.fault.NotSupported, numCPUs=1)
    refused(agent, vm, vmodl.fault.NotSupported, memoryMB=128)
    assert vm.config.hardware.numCPU == 2 and vm.config.hardware.memoryMB == 64
    WaitForTask(vm.PowerOffVM_Task())


def test_bad_values_are_refused_and_change_nothing(si, agent):
    vm = create_vm(si, "rc-bad", disk_kb=0, nic=False)
    invalid = vmodl.fault.InvalidArgument
    assert refused(agent, vm, invalid, memoryMB=3).invalidProperty == "memoryMB"
    assert refused(agent, vm, invalid, memoryMB=66).invalidProperty == "memoryMB"
    assert refused(agent, vm, invalid, memoryMB=64 * 1024 * 1024).invalidProperty == "memoryMB"
    assert refused(agent, vm, invalid, numCPUs=0).invalidProperty == "numCPUs"
    assert refused(agent, vm, invalid, numCPUs=4096).invalidProperty == "numCPUs"
    assert refused(agent, vm, invalid, numCoresPerSocket=3).invalidProperty == "numCoresPerSocket"
    assert refused(agent, vm, invalid, guestId="notAnOsGuest").invalidProperty == "guestId"
    assert refused(agent, vm, invalid, uuid="not-a-uuid").invalidProperty == "uuid"
    for key in ("numvcpus", "memsize", "disk0.fileName", "uuid.bios", "displayName"):
        refused(agent, vm, invalid, extraConfig=[vim.option.OptionValue(key=key, value="1")])
    refused(agent, vm, invalid, tools=vim.vm.ToolsConfigInfo(toolsUpgradePolicy="sometimes"))
    refused(agent, vm, invalid, version="vmx-13")
    refused(agent, vm, vmodl.fault.NotSupported,
            latencySensitivity=vim.LatencySensitivity(level="high"))
    refused(agent, vm, vim.fault.ConcurrentAccess, changeVersion="1")


def test_notes_guest_os_identities_and_extra_config(si, agent):
    vm = create_vm(si, "rc-notes", disk_kb=0, nic=False)
    reconfigure(vm, annotation='line 1\nsays "hi" | bye', guestId="debian12_64Guest",
                extraConfig=[vim.option.OptionValue(key="guestinfo.role", value="web")])
    assert vm.config.annotation == 'line 1\nsays "hi" | bye'
    assert vm.config.guestId == "debian12_64Guest"
    assert vm.config.guestFullName == "Debian GNU/Linux 12 (64-bit)"
    assert vm.summary.config.guestFullName == "Debian GNU/Linux 12 (64-bit)"
    extra = {o.key: o.value for o in vm.config.extraConfig}
    assert extra["guestinfo.role"] == "web"
    assert vmx(agent, vm)["guestinfo.role"] == "web"
    reconfigure(vm, extraConfig=[vim.option.OptionValue(key="guestinfo.role", value="")])
    assert "guestinfo.role" not in {o.key for o in vm.config.extraConfig}
    assert "guestinfo.role" not in vmx(agent, vm)

    version = vm.config.changeVersion
    reconfigure(vm, changeVersion=version, uuid="42004200-1111-2222-3333-444455556666",
                instanceUuid="52005200-1111-2222-3333-444455556666")
    assert vm.config.uuid == "42004200-1111-2222-3333-444455556666"
    assert vm.config.instanceUuid == "52005200-1111-2222-3333-444455556666"
    assert vmx(agent, vm)["uuid.bios"] == "42 00 42 00 11 11 22 22-33 33 44 44 55 55 66 66"
    other = create_vm(si, "rc-notes-2", disk_kb=0, nic=False)
    assert refused(agent, other, vmodl.fault.InvalidArgument,
                   instanceUuid="52005200-1111-2222-3333-444455556666").invalidProperty == "instanceUuid"
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self")))
    assert any(isinstance(e, vim.event.VmReconfiguredEvent) for e in events)


def test_tools_boot_options_topology_and_change_tracking(si, agent):
    vm = create_vm(si, "rc-flags", disk_kb=0, nic=False)
    assert vm.config.tools.syncTimeWithHost is False and vm.config.tools.afterPowerOn is True
    assert vm.config.hardware.numCoresPerSocket == 1
    reconfigure(vm, numCoresPerSocket=2, changeTrackingEnabled=True,
                tools=vim.vm.ToolsConfigInfo(syncTimeWithHost=True, afterPowerOn=False, afterResume=False,
                                             toolsUpgradePolicy="upgradeAtPowerCycle"),
                bootOptions=vim.vm.BootOptions(bootDelay=1500, enterBIOSSetup=True),
                powerOpInfo=vim.vm.DefaultPowerOpInfo(powerOffType="soft"))
    config = vm.config
    assert config.hardware.numCoresPerSocket == 2 and config.hardware.numCPU == 2
    assert config.changeTrackingEnabled is True
    assert config.tools.syncTimeWithHost and not config.tools.afterPowerOn and not config.tools.afterResume
    assert config.tools.beforeGuestShutdown is True
    assert config.tools.toolsUpgradePolicy == "upgradeAtPowerCycle"
    assert config.bootOptions.bootDelay == 1500 and config.bootOptions.enterBIOSSetup is True
    assert config.defaultPowerOps.powerOffType == "soft"
    keys = vmx(agent, vm)
    assert keys["cpuid.corespersocket"] == "2" and keys["tools.synctime"] == "TRUE"
    assert keys["toolscripts.afterpoweron"] == "FALSE" and keys["bios.bootdelay"] == "1500"
    assert keys["ctkenabled"] == "TRUE" and keys["powertype.poweroff"] == "soft"
    # Fewer vCPUs than a socket's cores is refused; the topology moves with them.
    refused(agent, vm, vmodl.fault.InvalidArgument, numCPUs=1)
    reconfigure(vm, numCPUs=1, numCoresPerSocket=1)
    assert vm.config.hardware.numCPU == 1


def test_cpu_and_memory_allocations_are_recorded(si, agent):
    vm = create_vm(si, "rc-alloc", disk_kb=0, nic=False)
    assert vm.config.cpuAllocation.shares.level == "normal" and vm.config.cpuAllocation.limit == -1
    reconfigure(vm, cpuAllocation=vim.ResourceAllocationInfo(
                    reservation=500, limit=2000, shares=vim.SharesInfo(level="high", shares=0)),
                memoryAllocation=vim.ResourceAllocationInfo(
                    reservation=32, shares=vim.SharesInfo(level="custom", shares=4242)))
    for info in (vm.config, vm.resourceConfig):
        cpu, memory = info.cpuAllocation, info.memoryAllocation
        assert (cpu.reservation, cpu.limit, cpu.shares.level, cpu.shares.shares) == (500, 2000, "high", 4000)
        assert (memory.reservation, memory.limit, memory.shares.level, memory.shares.shares) == \
            (32, -1, "custom", 4242)
    keys = vmx(agent, vm)
    assert (keys["sched.cpu.min"], keys["sched.cpu.max"], keys["sched.cpu.shares"]) == ("500", "2000", "high")
    assert (keys["sched.mem.min"], keys["sched.mem.shares"]) == ("32", "4242") and "sched.mem.max" not in keys
    # A limit below the reservation, a negative reservation: refused, nothing changes.
    before = vmx_bytes(agent, vm)
    refused(agent, vm, vmodl.fault.InvalidArgument, cpuAllocation=vim.ResourceAllocationInfo(limit=100))
    refused(agent, vm, vmodl.fault.InvalidArgument, memoryAllocation=vim.ResourceAllocationInfo(reservation=-5))
    assert vmx_bytes(agent, vm) == before
    # Back to no limit and normal shares.
    reconfigure(vm, cpuAllocation=vim.ResourceAllocationInfo(limit=-1, shares=vim.SharesInfo(level="normal", shares=0)))
    cpu = vm.config.cpuAllocation
    assert (cpu.reservation, cpu.limit, cpu.shares.level, cpu.shares.shares) == (500, -1, "normal", 2000)


def test_guest_sees_cores_per_socket(si, agent):
    """numCoresPerSocket is applied through CPUID (cores per package in leaves 1, 4 and 0xB,
    sockets on the APIC id bits above the cores)."""
    from test_vm_snapshots import type_command

    def topology():
        fields = dict(f.split("=") for f in type_command(agent, vm, "topology", "topology ").split()[1:])
        return int(fields["cores_per_socket"]), int(fields["core_bits"]), int(fields["sockets"])

    vm = create_vm(si, "rc-topology", scenario="shell", disk_kb=0, nic=False)
    reconfigure(vm, numCPUs=2, numCoresPerSocket=1)
    power_on_booted(agent, vm)
    assert topology() == (1, 0, 2)
    WaitForTask(vm.PowerOffVM_Task())
    reconfigure(vm, numCoresPerSocket=2)
    power_on_booted(agent, vm)
    assert topology() == (2, 1, 1)
    WaitForTask(vm.PowerOffVM_Task())


def test_rename_keeps_files_and_refuses_duplicates(si, agent):
    vm = create_vm(si, "rc-old", disk_kb=65536, nic=False)
    create_vm(si, "rc-taken", disk_kb=0, nic=False)
    path = vm.config.files.vmPathName
    WaitForTask(vm.Rename_Task(newName="rc-new"))
    assert vm.name == "rc-new" and vm.config.name == "rc-new" and vm.summary.config.name == "rc-new"
    assert vm.config.files.vmPathName == path == "[datastore1] rc-old/rc-old.vmx"
    assert vmx(agent, vm)["displayname"] == "rc-new"
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert disks[0].backing.fileName == "[datastore1] rc-old/rc-old.qcow2"
    with pytest.raises(vim.fault.DuplicateName):
        WaitForTask(vm.Rename_Task(newName="rc-taken"))
    refused(agent, vm, vim.fault.DuplicateName, name="rc-taken")
    refused(agent, vm, vmodl.fault.InvalidArgument, name="a/b")
    reconfigure(vm, name="rc-newer")
    assert vm.name == "rc-newer"
    found = si.content.searchIndex.FindByInventoryPath("ha-datacenter/vm/rc-newer")
    assert found == vm
    power_on_booted(agent, vm)
    WaitForTask(vm.Rename_Task(newName="rc-running"))
    assert vm.name == "rc-running"
    WaitForTask(vm.PowerOffVM_Task())
