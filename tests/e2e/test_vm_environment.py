"""What clients read before they create or change a VM, through pyVmomi: the environment browser
of the compute resource and of a VM (hardware versions, config options with guest OS
descriptors and the CPU/memory ranges ReconfigVM enforces, the datastores and networks a VM
may use)."""
import os

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from test_vm_lifecycle import agent, create_vm, si  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


def compute_resource(si):
    return si.content.rootFolder.childEntity[0].hostFolder.childEntity[0]


def test_the_environment_browser_lists_versions_and_options(si):
    browser = compute_resource(si).environmentBrowser
    assert browser is not None
    descriptors = browser.QueryConfigOptionDescriptor()
    keys = [d.key for d in descriptors]
    assert "vmx-21" in keys and "vmx-13" in keys
    [default] = [d for d in descriptors if d.defaultConfigOption]
    assert default.key == "vmx-21" and default.createSupported and not default.upgradeSupported

    option = browser.QueryConfigOption(key="vmx-21")
    assert option.version == "vmx-21"
    by_id = {g.id: g for g in option.guestOSDescriptor}
    assert option.guestOSDescriptor[option.guestOSDefaultIndex].id == "otherLinux64Guest"
    debian = by_id["debian12_64Guest"]
    assert debian.fullName == "Debian GNU/Linux 12 (64-bit)" and debian.family == "linuxGuest"
    assert by_id["windows2019srv_64Guest"].family == "windowsGuest"
    hardware = option.hardwareOptions
    assert hardware.hwVersion == 21 and hardware.memoryMB.min == 4
    assert max(hardware.numCPU) == debian.supportedMaxCPUs
    assert option.capabilities.snapshotOperationsSupported
    with pytest.raises(vmodl.fault.InvalidArgument):
        browser.QueryConfigOption(key="vmx-99")

    ex = browser.QueryConfigOptionEx(spec=vim.EnvironmentBrowser.ConfigOptionQuerySpec(
        key="vmx-19", guestId=["ubuntu64Guest"]))
    assert ex.version == "vmx-19" and [g.fullName for g in ex.guestOSDescriptor] == ["Ubuntu Linux (64-bit)"]

    target = browser.QueryConfigTarget()
    assert target.numCpus >= 1 and target.maxMemMBOptimalPerf > 0
    assert [d.name for d in target.datastore] == ["datastore1"]
    assert target.datastore[0].datastore.freeSpace > 0
    assert [n.name for n in target.network] == ["VM Network"]


def test_a_vm_s_limits_are_the_browser_s(si, agent):
    vm = create_vm(si, "env-1", disk_kb=0, nic=False)
    browser = vm.environmentBrowser
    assert browser == compute_resource(si).environmentBrowser
    hardware = browser.QueryConfigOption(key=vm.config.version).hardwareOptions
    # The largest CPU count offered is accepted, one more is refused; so for memory.
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(numCPUs=max(hardware.numCPU),
                                                          memoryMB=hardware.memoryMB.min)))
    assert vm.config.hardware.memoryMB == 4
    with pytest.raises(vmodl.fault.InvalidArgument):
        WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(numCPUs=max(hardware.numCPU) + 1)))
    with pytest.raises(vmodl.fault.InvalidArgument):
        WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(memoryMB=hardware.memoryMB.max + 4)))


def test_quick_stats_show_the_vmm_s_cpu_time(si, agent):
    from test_vm_lifecycle import power_on_booted, wait_for
    vm = create_vm(si, "env-cpu", disk_kb=0, nic=False)
    assert not vm.summary.quickStats.overallCpuUsage
    power_on_booted(agent, vm)
    pid = int(open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")).read().split()[0])
    ticks = lambda: sum(int(f) for f in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:13])  # noqa: E731
    before = ticks()
    wait_for(lambda: (vm.summary.quickStats.overallCpuUsage or 0) > 0, "a CPU usage sample", timeout=60)
    # The VMM really ran in that time (the figure is not made up from nothing).
    assert ticks() > before
    WaitForTask(vm.PowerOffVM_Task())
    wait_for(lambda: not vm.summary.quickStats.overallCpuUsage, "the usage to clear once powered off", timeout=60)


def test_layout_resource_config_and_the_pool_of_templates(si, agent):
    from test_vm_lifecycle import root_pool
    vm = create_vm(si, "env-layout", disk_kb=65536, nic=False)
    WaitForTask(vm.CreateSnapshot_Task(name="s1", description="", memory=False, quiesce=False))
    layout = vm.layout
    [disk] = layout.disk
    assert disk.key == vm.layoutEx.disk[0].key
    ex_files = {f.key: f.name for f in vm.layoutEx.file}
    assert disk.diskFile == [ex_files[u.fileKey[0]] for u in vm.layoutEx.disk[0].chain]
    assert disk.diskFile[0] == "[datastore1] env-layout/env-layout.qcow2" and len(disk.diskFile) == 2
    assert layout.configFile == ["env-layout.vmsd"]
    [snapshot] = layout.snapshot
    assert snapshot.key == vm.snapshot.rootSnapshotList[0].snapshot
    assert disk.diskFile[0] in snapshot.snapshotFile

    resources = vm.resourceConfig
    assert resources.entity == vm
    assert resources.cpuAllocation.limit == -1 and resources.cpuAllocation.shares.shares == 2000
    assert resources.memoryAllocation.shares.level == "normal"
    assert resources.memoryAllocation.shares.shares == 10 * vm.config.hardware.memoryMB
    assert vm.config.cpuAllocation.shares.shares == 2000

    pool = root_pool(si)
    assert vm.resourcePool == pool and vm in pool.vm
    vm.MarkAsTemplate()
    assert vm.resourcePool is None and vm not in pool.vm
    vm.MarkAsVirtualMachine(pool=pool)
    assert vm.resourcePool == pool and vm in pool.vm
