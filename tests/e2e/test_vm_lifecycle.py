"""Real VMs through the VirtualMachine API: pyVmomi creates test-guest VMs on a fresh vireod
(its own data dir), powers them on /dev/kvm, suspends/resumes, resets, powers off, destroys;
a guest that powers itself off, a SIGKILLed VMM, a vireod restart with a running VM, racing
tasks, templates and bad ConfigSpecs."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from conftest import (INTERNAL_NETWORK, REPO, ROOT_PASSWORD, Vireod, check_network_removed, connection_to, free_port,
                      wait_ready)

BIN_DIR = os.environ.get("VIREO_BIN_DIR", os.path.join(REPO, "target", "debug"))
GUEST = os.environ.get("VIREO_TEST_GUEST", os.path.join(REPO, ".cache", "test-guest", "vireo-test-guest.elf"))
KERNEL = "[datastore1] images/vireo-test-guest.elf"

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


class Agent:
    """A vireod of our own that can be restarted on the same data dir. `config` is its TOML;
    `netns` (test_networking's namespaces) runs it in a network namespace, reached through a
    forwarded loopback port."""

    def __init__(self, config=INTERNAL_NETWORK, netns=None, relative_data_dir=False):
        self.data_dir = tempfile.mkdtemp(prefix="vireo-vm-")
        # As scripts/run.sh does: the data directory named relative to vireod's working directory.
        self.relative_data_dir = relative_data_dir
        os.makedirs(os.path.join(self.data_dir, "datastore1", "images"))
        shutil.copy(GUEST, os.path.join(self.data_dir, "datastore1", "images", "vireo-test-guest.elf"))
        self.config_file = os.path.join(self.data_dir, "vireod.toml")
        with open(self.config_file, "w") as f:
            f.write(config)
        self.port = free_port()
        self.netns = netns
        self.client_port = netns.forward(self.port) if netns else self.port
        self.process = None
        self.start()

    def start(self, extra_env=None):
        log = open(os.path.join(self.data_dir, "vireod.log"), "a")
        env = dict(os.environ, VIREO_ROOT_PASSWORD=ROOT_PASSWORD, VIREO_LOG="info",
                   VIREO_VMM=os.path.join(BIN_DIR, "vireo-vmm"))
        env.pop("VIREO_CRASH_AT", None)
        env.update(extra_env or {})
        given_dir, cwd = ((os.path.basename(self.data_dir), os.path.dirname(self.data_dir))
                          if self.relative_data_dir else (self.data_dir, None))
        command = [os.path.join(BIN_DIR, "vireod"), "--listen", f"127.0.0.1:{self.port}",
                   "--data-dir", given_dir, "--config", self.config_file]
        if self.netns:
            command = self.netns.command(command)
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        wait_ready(self.client_port, self.process)
        self.vireod = Vireod(self.client_port, self.data_dir, self.process)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)

    def vmm_pids(self):
        pids = []
        run = os.path.join(self.data_dir, "run")
        for entry in os.listdir(run) if os.path.isdir(run) else []:
            try:
                with open(os.path.join(run, entry, "vmm.pid")) as f:
                    pids.append(int(f.read().split()[0]))
            except (OSError, ValueError):
                pass
        return pids

    def close(self):
        """Ends the VMMs, then stops vireod, which removes its host network objects (checked)."""
        pids = self.vmm_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Gone, not just a zombie leader whose other threads may still be exiting.
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), "the VMMs to end")
        if self.process.poll() is None:
            self.stop()
        try:
            check_network_removed(self.data_dir, self.netns)
        except AssertionError:
            with open(os.path.join(self.data_dir, "vireod.log")) as f:
                print("vireod.log ends:", *f.readlines()[-20:], sep="")
            raise
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def agent():
    a = Agent()
    yield a
    a.close()


si = connection_to("agent")


def config_spec(name, scenario="wait", disk_kb=65536, nic=True, memory=64):
    spec = vim.vm.ConfigSpec(name=name, guestId="otherLinux64Guest", numCPUs=2, memoryMB=memory,
                             annotation=f"e2e {name}",
                             files=vim.vm.FileInfo(vmPathName="[datastore1]"),
                             extraConfig=[vim.option.OptionValue(key="vireo.boot.kernel", value=KERNEL),
                                          vim.option.OptionValue(key="vireo.boot.cmdline", value=f"scenario={scenario}")])
    changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
        key=1000, busNumber=0, sharedBus="noSharing"))]
    if disk_kb:
        disk = vim.vm.device.VirtualDisk(key=-1, controllerKey=1000, unitNumber=0, capacityInKB=disk_kb,
                                         backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent",
                                                                                              thinProvisioned=True))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    if nic:
        card = vim.vm.device.VirtualVmxnet3(key=-2, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName="VM Network"))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=card))
    spec.deviceChange = changes
    return spec


def root_pool(si):
    return si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].resourcePool


def create_vm(si, name, **kwargs):
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.CreateVM_Task(config=config_spec(name, **kwargs), pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def console(agent, vm):
    datastore, path = vm.config.files.vmPathName[1:].split("] ", 1)
    try:
        with open(os.path.join(agent.data_dir, datastore, path.rsplit("/", 1)[0], "serial.log")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def power_on_booted(agent, vm):
    """Powers on and waits for the guest's boot line (a crash here is the guest's known
    reset-vector bug, reported by the VM's poweredOff state and its log)."""
    before = console(agent, vm).count("vireo-test-guest: booted")
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    wait_for(lambda: console(agent, vm).count("vireo-test-guest: booted") > before
             or vm.runtime.powerState != "poweredOn", "the guest to boot")
    assert vm.runtime.powerState == "poweredOn", console(agent, vm)


def test_create_vm_builds_folder_disk_and_devices(si, agent):
    vm = create_vm(si, "create-1")
    assert isinstance(vm, vim.VirtualMachine)
    assert vm.name == "create-1"
    assert vm.runtime.powerState == "poweredOff"
    assert vm.config.files.vmPathName == "[datastore1] create-1/create-1.vmx"
    assert vm.config.hardware.numCPU == 2 and vm.config.hardware.memoryMB == 64
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert len(disks) == 1 and disks[0].capacityInKB == 65536
    assert disks[0].backing.fileName == "[datastore1] create-1/create-1.qcow2"
    nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(nics) == 1 and nics[0].macAddress.startswith("00:50:56:")
    assert nics[0].backing.deviceName == "VM Network"
    extra = {o.key: o.value for o in vm.config.extraConfig}
    assert extra["vireo.boot.kernel"] == KERNEL
    assert vm.summary.config.numVirtualDisks == 1 and vm.summary.config.numEthernetCards == 1
    assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"
    assert vm.resourcePool is not None and vm.parent._moId == "ha-folder-vm"
    image = os.path.join(agent.data_dir, "datastore1", "create-1", "create-1.qcow2")
    info = subprocess.run(["qemu-img", "info", image], capture_output=True, text=True, check=True).stdout
    assert "file format: qcow2" in info and "64 MiB" in info
    assert any(f.type == "diskExtent" for f in vm.layoutEx.file)
    found = si.content.searchIndex.FindByDatastorePath(si.content.rootFolder.childEntity[0],
                                                       "[datastore1] create-1/create-1.vmx")
    assert found == vm


def test_bad_config_specs_get_the_listed_faults(si):
    create_vm(si, "dup-1", disk_kb=0, nic=False)
    with pytest.raises(vim.fault.DuplicateName):
        create_vm(si, "dup-1", disk_kb=0, nic=False)
    folder = si.content.rootFolder.childEntity[0].vmFolder
    spec = config_spec("nowhere", disk_kb=0, nic=False)
    spec.files = vim.vm.FileInfo(vmPathName="[nosuchstore]")
    with pytest.raises(vim.fault.InvalidDatastore):
        WaitForTask(folder.CreateVM_Task(config=spec, pool=root_pool(si)))
    spec = config_spec("dup-2", disk_kb=0, nic=False)
    spec.files = vim.vm.FileInfo(vmPathName="[datastore1] dup-1/dup-1.vmx")
    with pytest.raises(vim.fault.FileAlreadyExists):
        WaitForTask(folder.CreateVM_Task(config=spec, pool=root_pool(si)))
    with pytest.raises(vmodl_fault("InvalidArgument")):
        WaitForTask(folder.CreateVM_Task(config=vim.vm.ConfigSpec(numCPUs=1), pool=root_pool(si)))


def vmodl_fault(name):
    from pyVmomi import vmodl
    return getattr(vmodl.fault, name)


def test_power_suspend_resume_reset_off_destroy(si, agent):
    vm = create_vm(si, "cycle-1")
    power_on_booted(agent, vm)
    assert vm.runtime.bootTime is not None
    with pytest.raises(vim.fault.InvalidPowerState) as raised:
        WaitForTask(vm.PowerOnVM_Task())
    assert raised.value.existingState == "poweredOn"
    with pytest.raises(vim.fault.ToolsUnavailable):
        vm.ShutdownGuest()

    WaitForTask(vm.SuspendVM_Task())
    assert vm.runtime.powerState == "suspended"
    vm_dir = os.path.join(agent.data_dir, "datastore1", "cycle-1")
    assert os.path.exists(os.path.join(vm_dir, "suspend", "vm.mem"))
    with pytest.raises(vim.fault.InvalidPowerState):
        WaitForTask(vm.SuspendVM_Task())
    WaitForTask(vm.PowerOnVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    time.sleep(0.5)
    assert console(agent, vm).count("vireo-test-guest: booted") == 1, "resumed, not rebooted"
    assert not os.path.exists(os.path.join(vm_dir, "suspend"))

    WaitForTask(vm.ResetVM_Task())
    assert vm.runtime.powerState == "poweredOn"
    wait_for(lambda: console(agent, vm).count("vireo-test-guest: booted") == 2, "the reboot after reset")

    WaitForTask(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"
    with pytest.raises(vim.fault.InvalidPowerState) as raised:
        WaitForTask(vm.PowerOffVM_Task())
    assert raised.value.existingState == "poweredOff"
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(vm_dir)
    assert "cycle-1" not in [v.name for v in si.content.rootFolder.childEntity[0].vmFolder.childEntity]


def test_guest_power_off_and_vmm_kill_are_seen(si, agent):
    vm = create_vm(si, "self-off", scenario="power-off", disk_kb=0, nic=False)
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the guest's own power-off")
    assert "powering off" in console(agent, vm)

    victim = create_vm(si, "victim", disk_kb=0, nic=False)
    power_on_booted(agent, victim)
    pid = int(open(os.path.join(agent.data_dir, "run", f"vm-{victim._moId}", "vmm.pid")).read().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: victim.runtime.powerState == "poweredOff", "the killed VM to be powered off")
    events = si.content.eventManager.QueryEvents(vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=victim, recursion="self")))
    messages = [e.fullFormattedMessage for e in events if isinstance(e, vim.event.VmMessageErrorEvent)]
    assert any("without an exit record" in m or "signal 9" in m for m in messages), messages
    assert vm.runtime.powerState == "poweredOff"


def test_vireod_restart_keeps_a_running_vm(agent):
    si = agent.vireod.connect()
    vm = create_vm(si, "survivor", disk_kb=0)
    power_on_booted(agent, vm)
    moid = vm._moId
    Disconnect(si)
    agent.stop()
    agent.start()
    si = agent.vireod.connect()
    vm = vim.VirtualMachine(moid, si._stub)
    assert vm.name == "survivor"
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"
    Disconnect(si)


def test_racing_tasks_and_templates(si, agent):
    vm = create_vm(si, "race", disk_kb=0, nic=False)
    outcomes = []

    def power_on():
        try:
            WaitForTask(vm.PowerOnVM_Task())
            outcomes.append("ok")
        except (vim.fault.TaskInProgress, vim.fault.InvalidPowerState) as fault:
            outcomes.append(type(fault).__name__)

    threads = [threading.Thread(target=power_on) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    assert vm.runtime.powerState == "poweredOn"
    vm.TerminateVM()
    assert vm.runtime.powerState == "poweredOff"

    vm.MarkAsTemplate()
    assert vm.config.template and vm.summary.config.template
    with pytest.raises(vmodl_fault("NotSupported")):
        WaitForTask(vm.PowerOnVM_Task())
    vm.MarkAsVirtualMachine(pool=root_pool(si))
    assert not vm.config.template

    path = vm.config.files.vmPathName
    vm.UnregisterVM()
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.RegisterVM_Task(path=path, asTemplate=False, pool=root_pool(si))
    WaitForTask(task)
    again = task.info.result
    assert again.name == "race" and again.config.files.vmPathName == path


def test_power_on_is_observed_running_by_wait_for_updates(si, agent):
    vm = create_vm(si, "watched", disk_kb=0, nic=False)
    from pyVmomi import vmodl
    pc = si.content.propertyCollector.CreatePropertyCollector()
    task = vm.PowerOnVM_Task()
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.Task, pathSet=["info.state"])])
    pc.CreateFilter(spec, partialUpdates=False)
    seen, version = [], ""
    while "success" not in seen and "error" not in seen:
        update = pc.WaitForUpdatesEx(version, vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=30))
        assert update is not None
        version = update.version
        for f in update.filterSet:
            for o in f.objectSet:
                seen += [c.val for c in o.changeSet]
    assert seen[-1] == "success", seen
    pc.Destroy()
    WaitForTask(vm.PowerOffVM_Task())


# Security attack 15: interface names are host-global, so each vireod names its bridge and
# TAPs with its own instance id; two fresh vireods (whose first VMs have the same id) both
# power on a VM with a NIC, each TAP on its own instance's bridge.
def vmm_processes(data_dir, standby_only=False):
    """The live vireo-vmm processes of the vireod of `data_dir` (with `standby_only`, those
    started as standbys: `--standby`, ahead of a resume)."""
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            with open(f"/proc/{entry}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        ours = argv[0].endswith("vireo-vmm") and any(a.startswith(data_dir) for a in argv)
        if ours and not zombie and ("--standby" in argv or not standby_only):
            pids.append(int(entry))
    return pids


def standby_pids(data_dir):
    """The live standby VMMs of the vireod of `data_dir`."""
    return vmm_processes(data_dir, standby_only=True)


def test_standby_vmms_are_each_vireods_own_and_end_with_it():
    """A suspended VM gets a VMM started ahead of its resume (docs/memory.md). Two vireods whose
    suspended VMs have the same id each get their own; a resume goes through it and brings the
    guest back without a reboot; one still waiting ends when its vireod stops, and the restarted
    vireod starts another, which resumes its VM."""
    agents = [Agent(), Agent()]
    try:
        vms = []
        for a in agents:
            vm = create_vm(a.vireod.connect(), "standby", nic=False)
            power_on_booted(a, vm)
            WaitForTask(vm.SuspendVM_Task())
            vms.append(vm)
        assert vms[0]._moId == vms[1]._moId, "the same VM id in both"
        standbys = [standby_pids(a.data_dir) for a in agents]
        assert [len(s) for s in standbys] == [1, 1], standbys
        assert standbys[0] != standbys[1]

        WaitForTask(vms[0].PowerOnVM_Task())
        assert agents[0].vmm_pids() == standbys[0], "resumed by its standby"
        assert standby_pids(agents[1].data_dir) == standbys[1], "the other vireod's is untouched"

        agents[1].stop()
        wait_for(lambda: not standby_pids(agents[1].data_dir), "the standby to end with its vireod")
        agents[1].start()
        folder = agents[1].vireod.connect().content.rootFolder.childEntity[0].vmFolder
        vm = next(v for v in folder.childEntity if v.name == "standby")
        again = standby_pids(agents[1].data_dir)
        assert len(again) == 1 and again != standbys[1], "a restarted vireod starts another"
        WaitForTask(vm.PowerOnVM_Task())
        assert agents[1].vmm_pids() == again

        for a, vm in zip(agents, [vms[0], vm]):
            time.sleep(0.5)
            assert vm.runtime.powerState == "poweredOn"
            assert console(a, vm).count("vireo-test-guest: booted") == 1, "resumed, not rebooted"
        # Suspended again, then powered off: the standby goes with the saved state.
        WaitForTask(vms[0].SuspendVM_Task())
        assert len(standby_pids(agents[0].data_dir)) == 1
        WaitForTask(vms[0].PowerOffVM_Task())
        wait_for(lambda: not standby_pids(agents[0].data_dir), "the unused standby to end")
    finally:
        for a in agents:
            a.close()


def test_two_vireods_power_on_vms_with_nics_side_by_side():
    agents = [Agent(), Agent()]
    try:
        vms = []
        for a in agents:
            connection = a.vireod.connect()
            vm = create_vm(connection, "side-by-side")
            power_on_booted(a, vm)
            vms.append(vm)
        assert vms[0]._moId == vms[1]._moId, "the same VM id in both: the case that collided"
        bridges = []
        for a in agents:
            with open(os.path.join(a.data_dir, "network-instance")) as f:
                instance = f.read().strip()
            bridge = f"vbr{instance}"
            members = os.listdir(f"/sys/class/net/{bridge}/brif")
            assert members == [f"vt{instance}{int(vms[0]._moId):x}n0"], members
            bridges.append(bridge)
        assert bridges[0] != bridges[1]
        for vm in vms:
            WaitForTask(vm.PowerOffVM_Task())
        for bridge in bridges:
            assert os.listdir(f"/sys/class/net/{bridge}/brif") == []
    finally:
        for a in agents:
            a.close()


def test_a_vm_boots_when_vireod_was_given_its_data_directory_relative():
    """scripts/run.sh names ./vireo-data relative to vireod's working directory; the VMM must
    still get absolute paths (its jail refuses others)."""
    relative = Agent(relative_data_dir=True)
    try:
        si = relative.vireod.connect()
        vm = create_vm(si, "relative-1")
        power_on_booted(relative, vm)
        WaitForTask(vm.PowerOffVM_Task())
        assert vm.runtime.powerState == "poweredOff"
    finally:
        relative.close()
