"""Guests with a working set, for scripts/bench/snapshots.sh (see snapshots.py): test-guest VMs
fill 75% of their RAM with a pattern (`ram fill`), then
- resume (PowerOn of the suspended VM) and revert to a memory snapshot: ms from the request to
  the guest's first console answer, then s until its whole pattern was read back (`ram check`,
  which touches every page: the working set is back);
- the pause a memory snapshot inflicts on a busy guest (`ram churn` rewrites its memory and
  reports the longest gap it saw between two pages), for CreateSnapshot (live save) beside the
  VMM's paused save (the way CreateSnapshot saved before: pause, save, resume; without the disk
  snapshot in between) and a churn without any snapshot (the noise of this machine)."""
import json
import os
import re
import socket
import time

from pyVim.task import WaitForTask

RAM_TIMEOUT = 1800


def control(host, vm, request):
    """One request on the VM's VMM control socket; returns its reply."""
    path = os.path.join(host.data, "run", f"vm-{vm._moId}", "control.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(RAM_TIMEOUT)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(s.makefile().readline())
    if not reply["ok"]:
        raise SystemExit(f"{request['cmd']}: {reply}")
    return reply


def answer(host, vm, command, prefix):
    """Types `command` on the guest's console; returns (monotonic time of the answer, its line):
    the first line after the echoed command that starts with `prefix`."""
    before = len(host.console(vm)) + len(command) + 1
    control(host, vm, {"cmd": "serial-input", "text": command + "\n"})
    pattern = re.compile(rf"^({re.escape(prefix)}.*)\n", re.M)
    deadline = time.monotonic() + RAM_TIMEOUT
    while time.monotonic() < deadline:
        match = pattern.search(host.console(vm)[before:])
        if match:
            return time.monotonic(), match.group(1)
        time.sleep(0.001)
    raise SystemExit(f"no answer to {command!r}")


def back_again(host, vm, request, fill_mib):
    """(ms from `request()` to the first console answer, s to read the pattern back)."""
    start = time.monotonic()
    WaitForTask(request())
    first, _ = answer(host, vm, "echo back", "back")
    done, line = answer(host, vm, "ram check", "ram ")
    if line != f"ram ok {fill_mib} MiB generation=0":
        raise SystemExit(f"memory damaged: {line}")
    return (first - start) * 1000, done - first


def filled_vm(host, memory_mb):
    vm = host.create(f"ws-{memory_mb}", memory_mb, 64, scenario="shell")
    seen = host.console(vm).count("vireo> ")
    WaitForTask(vm.PowerOnVM_Task())
    while host.console(vm).count("vireo> ") == seen:
        time.sleep(0.01)
    fill = memory_mb * 3 // 4
    _, line = answer(host, vm, f"ram fill {fill} 1", "ram ")
    if not line.startswith("ram filled"):
        raise SystemExit(line)
    return vm, fill


def resume_and_revert(host, memory_mb):
    """Rows for a guest of `memory_mb` with 75% of it filled."""
    vm, fill = filled_vm(host, memory_mb)
    WaitForTask(vm.SuspendVM_Task())
    resume_ms, resume_set = back_again(host, vm, vm.PowerOnVM_Task, fill)
    WaitForTask(vm.CreateSnapshot_Task(name="filled", description="", memory=True, quiesce=False))
    snapshot = vm.snapshot.currentSnapshot
    revert_ms, revert_set = back_again(host, vm, snapshot.RevertToSnapshot_Task, fill)
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    label = f"{memory_mb} MiB guest, {fill} MiB filled"
    return [(f"resume from suspend, {label}: first answer", f"{resume_ms:.0f} ms", "bar < 50 ms"),
             (f"resume from suspend, {label}: pattern read back", f"{resume_set:.2f} s", "working set back"),
             (f"revert to memory snapshot, {label}: first answer", f"{revert_ms:.0f} ms", "bar < 50 ms"),
             (f"revert to memory snapshot, {label}: pattern read back", f"{revert_set:.2f} s", "working set back")]


def churn_stall(host, vm, seconds, during):
    """The longest gap (ms) the churning guest saw while `during()` ran."""
    before = len(host.console(vm))
    control(host, vm, {"cmd": "serial-input", "text": f"ram churn {seconds}\n"})
    while "ram churning" not in host.console(vm)[before:]:
        time.sleep(0.01)
    time.sleep(2)
    during()
    pattern = re.compile(r"^ram longest stall (\d+) us\n(ram .*)\n", re.M)
    while not (match := pattern.search(host.console(vm)[before:])):
        time.sleep(0.05)
    if not match.group(2).startswith("ram ok"):
        raise SystemExit(f"memory damaged: {match.group(2)}")
    return int(match.group(1)) / 1000


def paused_save(host, vm):
    """Pause, save (not live) and resume through the control socket."""
    folder = os.path.dirname(host.path(vm.config.files.vmPathName))
    target = os.path.join(folder, f"paused-save-{time.monotonic_ns()}")
    os.makedirs(target)
    os.chmod(target, 0o777)  # the jailed VMM's user writes it; the bench folder goes at the end
    control(host, vm, {"cmd": "pause"})
    control(host, vm, {"cmd": "save", "dir": target, "live": False})
    control(host, vm, {"cmd": "resume"})


def busy_snapshot_pause(host, memory_mb):
    """Rows: the longest stall of a guest rewriting 75% of its memory during a memory snapshot."""
    vm, fill = filled_vm(host, memory_mb)
    quiet = churn_stall(host, vm, 10, lambda: None)
    live = churn_stall(host, vm, 40, lambda: WaitForTask(
        vm.CreateSnapshot_Task(name="busy", description="", memory=True, quiesce=False)))
    paused = churn_stall(host, vm, 40, lambda: paused_save(host, vm))
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    label = f"{memory_mb} MiB guest rewriting {fill} MiB"
    return [(f"CreateSnapshot with memory (live), {label}: longest guest stall", f"{live:.0f} ms",
             f"bar < 100 ms; {paused / live:.1f}x shorter than paused"),
            (f"paused save (pause+save+resume), {label}: longest guest stall", f"{paused:.0f} ms", "before"),
            (f"no snapshot, {label}: longest guest stall", f"{quiet:.0f} ms", "noise")]
