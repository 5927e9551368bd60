"""A VM's logs rotate at a size cap as ESXi's vmware.log does (issue 12, deliver 3): a guest
that writes a lot to its console fills serial.log, serial-1.log ... serial-N.log and no more
(the .vmx keys log.rotateSize and log.keepOld, else the host-wide defaults vmx.log.rotateSize /
vmx.log.keepOld of the OptionManager); vireo-vmm.log rotates at the same cap before a VMM
starts. Destroy removes every rotation."""
import os
import re

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to
from test_security_handoff import handed_files, vmm_pid
from test_vm_lifecycle import agent, config_spec, console, root_pool, wait_for  # noqa: F401 (fixture)
from test_vm_snapshots import PROMPT, control

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

si = connection_to("agent")

CAP = 4096
KEEP = 2


def create(si, name, extra=()):
    spec = config_spec(name, scenario="shell", nic=False, disk_kb=0)
    spec.extraConfig += [vim.option.OptionValue(key=k, value=v) for k, v in extra]
    task = si.content.rootFolder.childEntity[0].vmFolder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    return task.info.result


def folder(agent, vm):
    datastore, path = vm.config.files.vmPathName[1:].split("] ", 1)
    return os.path.join(agent.data_dir, datastore, os.path.dirname(path))


def logs(agent, vm, stem):
    """{name: size} of the log `stem`.log and its rotations in the VM folder."""
    found = {}
    for name in os.listdir(folder(agent, vm)):
        if name == f"{stem}.log" or (name.startswith(f"{stem}-") and name.endswith(".log")):
            found[name] = os.path.getsize(os.path.join(folder(agent, vm), name))
    return found


def kept_text(agent, vm):
    """The console text the serial log and its rotations keep, oldest first (a rotation may
    split a line)."""
    names = sorted(logs(agent, vm, "serial"), key=lambda n: -int(n[7:-4]) if n != "serial.log" else 0)
    return "".join(open(os.path.join(folder(agent, vm), name)).read() for name in names)


def chatter(agent, vm, lines):
    """Has the guest's shell echo `lines` lines of 200 characters (each also echoed as typed)."""
    for start in range(0, lines, 10):
        text = "".join(f"echo line-{n:04d}-{'x' * 190}\n" for n in range(start, min(start + 10, lines)))
        control(agent, vm, {"cmd": "serial-input", "text": text})
        last = re.compile(rf"^line-{min(start + 10, lines) - 1:04d}-", re.M)
        wait_for(lambda: last.search(kept_text(agent, vm)), f"the guest to echo {last.pattern}")


def test_a_chatty_guest_cannot_grow_its_logs_past_the_cap(si, agent):
    vm = create(si, "chatty", [("log.rotateSize", str(CAP)), ("log.keepOld", str(KEEP))])
    vmm_log = os.path.join(folder(agent, vm), "vireo-vmm.log")
    with open(vmm_log, "w") as f:
        f.write("an earlier run\n" * 400)  # past the cap: rotated before the VMM starts
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: PROMPT in console(agent, vm), "the guest's shell")
    handed = {os.path.basename(p) for p in handed_files(vmm_pid(agent, vm))}
    assert {"serial.log", "serial-1.log", "serial-2.log"} <= handed and "serial-3.log" not in handed

    chatter(agent, vm, 100)  # about 40 KiB of console output, ten times the cap
    sizes = logs(agent, vm, "serial")
    assert set(sizes) == {"serial.log", "serial-1.log", "serial-2.log"}, sizes
    assert all(size <= CAP for size in sizes.values()), sizes
    assert sum(sizes.values()) <= CAP * (KEEP + 1)
    assert console(agent, vm).endswith(PROMPT), "the newest text is in serial.log"
    kept = kept_text(agent, vm)
    assert re.search(r"^line-0099-x+\n", kept, re.M) and "line-0000-" not in kept, "the oldest text was dropped"
    layout = {f.name.rsplit("/", 1)[1]: f.type for f in vm.layoutEx.file}
    assert layout["serial-1.log"] == layout["serial-2.log"] == "log"

    assert open(os.path.join(folder(agent, vm), "vireo-vmm-1.log")).read() == "an earlier run\n" * 400
    assert os.path.getsize(vmm_log) < CAP
    WaitForTask(vm.PowerOffVM_Task())
    vm_dir = folder(agent, vm)
    WaitForTask(vm.Destroy_Task())
    assert not os.path.exists(vm_dir), "every rotation removed with the VM"


def test_the_host_wide_default_applies_to_vms_that_do_not_set_it(si, agent):
    manager = si.content.setting
    keys = ("vmx.log.rotateSize", "vmx.log.keepOld")
    defaults = {o.key: o.value for o in manager.QueryOptions(name="vmx.log.")}
    assert defaults == {"vmx.log.rotateSize": 4 << 20, "vmx.log.keepOld": 6}
    with pytest.raises(vmodl.fault.InvalidArgument):
        manager.UpdateOptions(changedValue=[vim.option.OptionValue(key="vmx.log.keepOld", value=100)])
    manager.UpdateOptions(changedValue=[vim.option.OptionValue(key=keys[0], value=CAP),
                                        vim.option.OptionValue(key=keys[1], value=1)])
    try:
        vm = create(si, "quiet-default")
        own = create(si, "own-setting", [("log.keepOld", "3")])
        for machine in (vm, own):
            WaitForTask(machine.PowerOnVM_Task())
            wait_for(lambda: PROMPT in console(agent, machine), "the guest's shell")
        chatter(agent, vm, 40)
        sizes = logs(agent, vm, "serial")
        assert set(sizes) == {"serial.log", "serial-1.log"}, sizes
        assert all(size <= CAP for size in sizes.values()), sizes
        handed = {os.path.basename(p) for p in handed_files(vmm_pid(agent, own))}
        assert "serial-3.log" in handed and "serial-4.log" not in handed, "the VM's own keepOld wins"
        for machine in (vm, own):
            WaitForTask(machine.PowerOffVM_Task())
            WaitForTask(machine.Destroy_Task())
    finally:
        manager.UpdateOptions(changedValue=[vim.option.OptionValue(key=k, value=defaults[k]) for k in keys])
