"""The VMM gets its files open (issue 12, deliver 4): vireod opens every layer of each disk's
chain, the boot files, the serial log and its older files, and a saved VM's state and memory
beneath their datastore and hands the descriptors to `vireo-vmm` (`--file FD:PATH` at start,
SCM_RIGHTS with each reattach and each save), so the VMM follows qcow2 backing names only to
files vireod resolved, and no folder of a datastore — not even the VM's own — is in its mount
view."""
import os
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from test_security_paths import (Canary, assert_data_dir_survives, datastore, register, si,  # noqa: F401
                                 write_vmx)
from test_vm_lifecycle import KERNEL, agent, console, create_vm, wait_for  # noqa: F401 (fixture)
from test_vm_snapshots import BOOTED, WAITING, press_power_button, snapshot

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True)


def vmm_pid(agent, vm):
    with open(os.path.join(agent.data_dir, "run", f"vm-{vm._moId}", "vmm.pid")) as f:
        return int(f.read().split()[0])


def handed_files(pid):
    """{path: fd} of the `--file FD:PATH` arguments of the VMM `pid`."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    handed = {}
    for option, value in zip(argv, argv[1:]):
        if option == "--file":
            fd, path = value.split(":", 1)
            handed[path] = int(fd)
    return handed


def standby_started(pid):
    """Whether VMM `pid` was started ahead of its restore (`--standby`)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return "--standby" in f.read().decode().split("\0")


def mapped_paths(pid):
    """The files mapped by `pid` (a resumed VM's memory file is deleted once it runs)."""
    with open(f"/proc/{pid}/maps") as f:
        paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    return {p.removesuffix(" (deleted)") for p in paths}


def open_paths(pid):
    fds = f"/proc/{pid}/fd"
    return {os.readlink(os.path.join(fds, fd)) for fd in os.listdir(fds)}


def visible_to(pid, path):
    """Whether `path` exists in the mount namespace of process `pid` (seen through its root)."""
    return os.path.exists(f"/proc/{pid}/root{path}")


def test_the_vmm_gets_its_chain_open_and_cannot_see_its_folders(si, agent):
    store = os.path.realpath(datastore(agent))
    base_dir = os.path.join(store, "handed-base")
    os.makedirs(base_dir)
    base = os.path.join(base_dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "4M")
    vm_dir = write_vmx(agent, "handed-vm", [("disk0.present", "TRUE"), ("disk0.fileName", "handed-vm.qcow2"),
                                            ("vireo.boot.kernel", KERNEL),
                                            ("vireo.boot.cmdline", "scenario=wait")])
    top = os.path.join(vm_dir, "handed-vm.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "../handed-base/base.qcow2", "-F", "qcow2", top)
    vm = register(si, "[datastore1] handed-vm/handed-vm.vmx", "handed-vm")
    WaitForTask(vm.PowerOnVM_Task())
    pid = vmm_pid(agent, vm)
    handed = handed_files(pid)
    kernel = os.path.join(store, "images", "vireo-test-guest.elf")
    for path in (top, base, kernel):
        assert path in handed, f"{path} handed over ({handed})"
        assert os.readlink(f"/proc/{pid}/fd/{handed[path]}") == path
    if os.geteuid() == 0:
        # Jailed: neither the VM folder nor the chain's or the kernel's folders are there, nor
        # is the rest of the datastore.
        for hidden in (vm_dir, base_dir, os.path.join(store, "images"), "/etc/passwd"):
            assert not visible_to(pid, hidden), f"{hidden} is in the VMM's view"
    # A snapshot of the running VM reattaches a new chain: its layers are sent open too.
    WaitForTask(vm.CreateSnapshot_Task(name="s", memory=False, quiesce=False))
    layers = [os.path.join(vm_dir, n) for n in os.listdir(vm_dir) if n.endswith(".qcow2")]
    assert len(layers) == 2
    assert set(layers) | {base} <= open_paths(pid)
    assert vm.runtime.powerState == "poweredOn"
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
    assert os.path.exists(base), "a parent disk outside the VM's folder is not the VM's to delete"
    assert_data_dir_survives(agent, si)


def test_backing_names_leaving_the_datastore_are_refused_at_power_on(si, agent):
    canary = Canary("secret.raw", b"canary\n" * 4096)
    try:
        store = os.path.realpath(datastore(agent))
        climb = "../" * (store.count("/") + 2) + canary.path.lstrip("/")
        for n, backing in enumerate([canary.path, climb, "link.raw"]):
            name = f"escape-{n}"
            vm_dir = write_vmx(agent, name, [("disk0.present", "TRUE"), ("disk0.fileName", f"{name}.qcow2")])
            os.symlink(canary.path, os.path.join(vm_dir, "link.raw"))
            qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "raw",
                     os.path.join(vm_dir, f"{name}.qcow2"), "1M")
            vm = register(si, f"[datastore1] {name}/{name}.vmx", name)
            with pytest.raises(vim.fault.FileFault) as refused:
                WaitForTask(vm.PowerOnVM_Task())
            assert "backing file" in refused.value.msg, refused.value.msg
            assert vm.runtime.powerState == "poweredOff"
            assert not agent.vmm_pids()
        canary.assert_untouched()
        assert canary.path not in open_paths(agent.process.pid)
    finally:
        canary.remove()
    assert_data_dir_survives(agent, si)


def assert_folder_unseen(agent, vm, vm_dir, resumed=False):
    """The running VMM of `vm` has its serial log (and with `resumed` its saved state) handed to it
    and, jailed, cannot open any path of the VM folder or the datastore."""
    pid = vmm_pid(agent, vm)
    handed = handed_files(pid)
    if standby_started(pid):
        # A VMM started ahead got them over its channel, not on its command line: the ones it
        # keeps are open or mapped (the saved state was read and closed).
        handed = {path: None for path in open_paths(pid) | mapped_paths(pid)}
        wanted = ["serial.log", "serial-1.log", "vm.mem"]
    else:
        wanted = ["serial.log", "serial-1.log"] + (["vm.state", "vm.mem"] if resumed else [])
    names = {os.path.basename(path) for path in handed}
    assert set(wanted) <= names, f"{wanted} handed over ({handed})"
    assert os.path.join(vm_dir, "serial.log") in handed
    if os.geteuid() == 0:
        store = os.path.realpath(datastore(agent))
        # (The data dir's path exists there only as the way to the VM's run directory.)
        inventory = os.path.join(agent.data_dir, "vm-inventory")
        for hidden in (vm_dir, os.path.join(vm_dir, "serial.log"), store, inventory):
            assert not visible_to(pid, hidden), f"{hidden} is in the VMM's view"
            with pytest.raises(FileNotFoundError):
                os.open(f"/proc/{pid}/root{hidden}", os.O_RDONLY)
    return pid


def test_no_vmm_of_a_vm_sees_its_folder_through_suspend_snapshots_and_revert(si, agent):
    """The serial log, the suspend state and memory snapshots go through descriptors vireod
    opened: the VMM that boots, the one that saves a memory snapshot and a suspend, the one that
    resumes and the one a revert starts all run without the VM folder in their view."""
    vm = create_vm(si, "unseen", scenario="wait", nic=False)
    vm_dir = os.path.dirname(os.path.realpath(os.path.join(datastore(agent), "unseen", "unseen.vmx")))
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, vm), "the guest to wait for its power button")
    booted = assert_folder_unseen(agent, vm, vm_dir)

    s1 = snapshot(vm, "with-memory", memory=True)
    assert vmm_pid(agent, vm) == booted, "a memory snapshot keeps the VMM"
    memory = os.path.join(vm_dir, "snapshot-1", "vm.mem")
    made = os.stat(memory)
    assert (made.st_uid, made.st_mode & 0o777) == (os.geteuid(), 0o400), "vireod's file, sealed"
    assert os.path.exists(os.path.join(vm_dir, "snapshot-1", "vm.state"))
    assert not os.path.exists(os.path.join(vm_dir, "snapshot-1", "vm.state.partial"))

    WaitForTask(vm.SuspendVM_Task())
    assert vm.runtime.powerState == "suspended"
    WaitForTask(vm.PowerOnVM_Task())
    assert_folder_unseen(agent, vm, vm_dir, resumed=True)
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the resumed guest to power off")

    WaitForTask(s1.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "poweredOn"
    assert_folder_unseen(agent, vm, vm_dir, resumed=True)
    press_power_button(agent, vm)
    wait_for(lambda: vm.runtime.powerState == "poweredOff", "the reverted guest to power off")
    log = console(agent, vm)
    assert log.count(BOOTED) == 1, "resumed twice from saved memory, never booted again"
    assert log.count("vireo-test-guest: power button pressed") == 2
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(vm_dir)
    assert_data_dir_survives(agent, si)
