"""cpuAllocation and memoryAllocation are enforced on a running VM's vireo-vmm through Linux control
groups: at power-on the VMM sits in a cgroup of its own holding the CPU limit as a CFS quota
(MHz over the host's MHz per core), the shares as cpu.shares / cpu.weight and the memory limit
(plus the VMM's overhead); a live ReconfigVM changes them, and the cgroup goes when the VM
powers off. Read from /proc/<vmm pid>/cgroup and the cgroup's own files (v2, or the v1
hierarchies of a hybrid host); skipped loudly where this machine has neither."""
import os

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from test_vm_lifecycle import agent, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

MIB = 1 << 20
VMM_OVERHEAD = 64 * MIB


@pytest.fixture
def si(agent):
    yield agent.vireod.connect()


def mounts():
    """cgroup mount points: {"cgroup2": path, "cpu": path, "memory": path} as present."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            kind, _, options = right.split()[:3]
            point = left.split()[4]
            if kind == "cgroup2":
                found.setdefault("cgroup2", point)
            elif kind == "cgroup":
                for controller in ("cpu", "memory"):
                    if controller in options.split(","):
                        found[controller] = point
    return found


def vmm_groups(pid):
    """The VMM's cgroup directories: {"cpu": dir, "memory": dir} (the same dir on v2)."""
    where = mounts()
    groups = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            names = names.split(",")
            if names == [""] and "cgroup2" in where:
                v2 = os.path.join(where["cgroup2"], path.lstrip("/"))
                if os.path.exists(os.path.join(v2, "cpu.max")):
                    return {"cpu": v2, "memory": v2}
            for controller in ("cpu", "memory"):
                if controller in names and controller in where:
                    groups[controller] = os.path.join(where[controller], path.lstrip("/"))
    return groups


def read(directory, name):
    with open(os.path.join(directory, name)) as f:
        return f.read().strip()


def cpu_limit(groups):
    """(quota µs or None, period µs)."""
    if os.path.exists(os.path.join(groups["cpu"], "cpu.max")):
        quota, period = read(groups["cpu"], "cpu.max").split()
        return (None if quota == "max" else int(quota)), int(period)
    quota = int(read(groups["cpu"], "cpu.cfs_quota_us"))
    return (None if quota < 0 else quota), int(read(groups["cpu"], "cpu.cfs_period_us"))


def memory_limit(groups):
    if os.path.exists(os.path.join(groups["memory"], "memory.max")):
        value = read(groups["memory"], "memory.max")
        return None if value == "max" else int(value)
    value = int(read(groups["memory"], "memory.limit_in_bytes"))
    return None if value >= 1 << 62 else value


def shares(groups):
    """cpu.shares (v1), or cpu.weight scaled to the same 1024-per-normal-vCPU measure (v2)."""
    if os.path.exists(os.path.join(groups["cpu"], "cpu.weight")):
        return int(read(groups["cpu"], "cpu.weight")) * 1024 // 100
    return int(read(groups["cpu"], "cpu.shares"))


def allocation(limit=None, shares=None):
    info = vim.ResourceAllocationInfo(limit=limit)
    if shares is not None:
        info.shares = vim.SharesInfo(level="custom", shares=shares)
    return info


def test_allocations_are_enforced_on_the_vmm_and_follow_live_changes(si, agent):
    usable = mounts()
    if not ("cgroup2" in usable or {"cpu", "memory"} <= usable.keys()):
        pytest.skip("SKIPPED: no cgroup hierarchy with cpu and memory here; allocations are recorded only")
    vm = create_vm(si, "alloc", scenario="shell", disk_kb=0, nic=False)
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(
        cpuAllocation=allocation(limit=500, shares=3000), memoryAllocation=allocation(limit=200))))
    power_on_booted(agent, vm)
    [pid] = agent.vmm_pids()
    # The VMM's watch thread moves it into its cgroup after the VM counts as running (a move
    # waits for an RCU grace period on cgroup v1, kept off the power-on's path).
    wait_for(lambda: all(os.path.basename(d).startswith("vireo-vm-") for d in vmm_groups(pid).values()),
             "the VMM to join its cgroup", timeout=10)
    groups = vmm_groups(pid)
    mhz = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0].summary.hardware.cpuMhz
    quota, period = cpu_limit(groups)
    assert quota == max(500 * period // mhz, 1000), (quota, period, mhz)
    assert shares(groups) == 3000 * 1024 // 1000
    assert memory_limit(groups) == 200 * MIB + VMM_OVERHEAD
    with open(os.path.join(groups["cpu"], "cgroup.procs")) as f:
        assert str(pid) in f.read().split()

    # Live: the limits go (unlimited) and the shares change; the VMM stays in its cgroup.
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(
        cpuAllocation=allocation(limit=-1, shares=1500), memoryAllocation=allocation(limit=-1))))
    assert cpu_limit(groups)[0] is None and memory_limit(groups) is None
    assert shares(groups) == 1500 * 1024 // 1000
    assert vm.config.cpuAllocation.limit == -1 and vm.config.cpuAllocation.shares.shares == 1500

    WaitForTask(vm.PowerOffVM_Task())
    wait_for(lambda: not any(os.path.exists(d) for d in groups.values()), "the VM's cgroup to go")
