"""Guests with a large working set through pyVmomi: a 1 GiB test guest fills 768 MiB of its RAM
with a verifiable pattern (`ram fill`), is suspended and resumed, snapshotted with memory and
reverted, and its memory is checked intact each time (`ram check`) while its console answers.
The memory file a reverted VM runs from is mapped, never rewritten: removing that snapshot while
the VM runs, or suspending it again, leaves the guest's memory intact. A memory snapshot taken
while the guest rewrites its memory (`ram churn`: each page is checked before it is rewritten)
is consistent: after the revert, the guest carries on from the snapshot and finds every page as
the snapshot's moment left it. The suspended state a VM was resumed from, and a removed
snapshot's state the VM runs from, are deleted once no VMM maps them any more."""
import os
import re

import pytest
from pyVim.task import WaitForTask

from conftest import host_path
from test_vm_lifecycle import agent, console, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import PROMPT, control, si, snapshot, type_command  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

# Touching 768 MiB page by page takes tens of seconds on kvm-pvm under load.
RAM_TIMEOUT = 600
FILLED = "ram ok 768 MiB generation=0"


RAM_ANSWER = re.compile(r"^(ram (?:filled|ok|bad|longest|churning)|error).*$", re.M)


def ram(agent, vm, command):
    """Types a `ram` command and returns the guest's first answer line (not the echoed command)."""
    before = len(console(agent, vm))
    control(agent, vm, {"cmd": "serial-input", "text": command + "\n"})
    wait_for(lambda: RAM_ANSWER.search(console(agent, vm)[before:]), f"the answer to {command!r}", RAM_TIMEOUT)
    return RAM_ANSWER.search(console(agent, vm)[before:]).group(0)


def check_ram(agent, vm):
    return ram(agent, vm, "ram check")


def saved_states(agent, vm, prefix):
    """The names in the VM's folder that start with `prefix`."""
    folder = os.path.dirname(host_path(agent, vm.config.files.vmPathName))
    return [name for name in os.listdir(folder) if name.startswith(prefix)]


def resumed_states(agent, vm):
    """The suspended states set aside in the VM's folder (kept while the VMM resumed from one runs)."""
    return saved_states(agent, vm, "suspend")


def test_filled_memory_survives_suspend_resume_and_revert(si, agent):
    vm = create_vm(si, "mem-filled", scenario="shell", nic=False, memory=1024)
    power_on_booted(agent, vm)
    wait_for(lambda: console(agent, vm).endswith(PROMPT), "the guest's shell prompt")
    assert ram(agent, vm, "ram fill 768 5") == "ram filled 768 MiB seed=5"

    WaitForTask(vm.SuspendVM_Task())
    WaitForTask(vm.PowerOnVM_Task())
    assert type_command(agent, vm, "echo resumed", "resumed") == "resumed"
    assert check_ram(agent, vm) == FILLED

    filled = snapshot(vm, "filled", memory=True)
    assert ram(agent, vm, "ram fill 768 6") == "ram filled 768 MiB seed=6"
    WaitForTask(filled.RevertToSnapshot_Task())
    assert vm.runtime.powerState == "poweredOn"
    assert type_command(agent, vm, "echo reverted", "reverted") == "reverted"
    assert check_ram(agent, vm) == FILLED
    # The VMM resumed from the suspended state has gone: so has that state.
    wait_for(lambda: not resumed_states(agent, vm), "the state the VM was resumed from to be deleted")

    # The VM runs from the snapshot's memory file: removing the snapshot leaves it intact (its
    # folder is set aside, not shrunk, while the VMM maps it)...
    uid = filled._moId.rsplit("-", 1)[1]
    WaitForTask(filled.RemoveSnapshot_Task(removeChildren=False))
    assert check_ram(agent, vm) == FILLED
    names = saved_states(agent, vm, f"snapshot-{uid}")
    assert len(names) == 1 and names[0].startswith(f"snapshot-{uid}.discarded-"), names
    # ...and a suspend writes a new file, which resumes too; the removed snapshot's state goes
    # once the VMM that mapped it has exited.
    WaitForTask(vm.SuspendVM_Task())
    wait_for(lambda: not saved_states(agent, vm, f"snapshot-{uid}"),
             "the removed snapshot's state to be deleted")
    WaitForTask(vm.PowerOnVM_Task())
    assert check_ram(agent, vm) == FILLED
    assert len(resumed_states(agent, vm)) == 1
    WaitForTask(vm.PowerOffVM_Task())
    wait_for(lambda: not resumed_states(agent, vm), "the state the VM was resumed from to be deleted")
    WaitForTask(vm.Destroy_Task())


def test_live_memory_snapshot_of_a_writing_guest_is_consistent(si, agent):
    vm = create_vm(si, "mem-live", scenario="shell", nic=False, memory=256)
    power_on_booted(agent, vm)
    wait_for(lambda: console(agent, vm).endswith(PROMPT), "the guest's shell prompt")
    assert ram(agent, vm, "ram fill 64 9") == "ram filled 64 MiB seed=9"
    # The guest rewrites its 64 MiB for 30 s (its ticks), checking every page before it does.
    assert ram(agent, vm, "ram churn 30") == "ram churning"
    busy = snapshot(vm, "busy", memory=True)
    assert vm.runtime.powerState == "poweredOn"
    done = re.compile(r"^ram (ok|bad).*$", re.M)
    wait_for(lambda: done.search(console(agent, vm)), "the churn to end", RAM_TIMEOUT)
    first = done.search(console(agent, vm)).group(0)
    assert first.startswith("ram ok 64 MiB"), first

    before = len(console(agent, vm))
    WaitForTask(busy.RevertToSnapshot_Task())
    # Back in the middle of the churn: it goes on from the snapshot and checks every page.
    wait_for(lambda: done.search(console(agent, vm)[before:]), "the reverted churn to end", RAM_TIMEOUT)
    second = done.search(console(agent, vm)[before:]).group(0)
    assert second.startswith("ram ok 64 MiB"), second
    assert check_ram(agent, vm) == second
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.Destroy_Task())
