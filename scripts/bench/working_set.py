"""Guests with a working set, for scripts/bench/snapshots.sh (see snapshots.py): test-guest VMs
fill 75% of their RAM with a pattern (`ram fill`), then
- resume (PowerOn of the suspended VM) and revert to a memory snapshot: ms from the request to
  the guest's first console answer, typed as soon as the VM's runtime.bootTime changes (watched
  through a property filter made before the request), then s until its whole pattern was read
  back (`ram check`, which touches every page: the working set is back); beside it where the
  time went: until bootTime changed, until the task ended, and vireod's launch phases (from the
  "VMM answering" line of its log);
- the pause a memory snapshot inflicts on a busy guest (`ram churn` rewrites its memory and
  reports the longest gap it saw between two pages), for CreateSnapshot (live save) beside the
  VMM's paused save (the way CreateSnapshot saved before: pause, save, resume; without the disk
  snapshot in between) and a churn without any snapshot (the noise of this machine)."""
import json
import os
import re
import socket
import statistics
import time

from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

RAM_TIMEOUT = 1800


def control(host, vm, request, fds=()):
    """One request on the VM's VMM control socket, with `fds` sent beside it; returns its
    reply."""
    path = os.path.join(host.data, "run", f"vm-{vm._moId}", "control.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(RAM_TIMEOUT)
        s.connect(path)
        line = json.dumps(request).encode() + b"\n"
        sent = socket.send_fds(s, [line], list(fds)) if fds else 0
        s.sendall(line[sent:])
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


class BootWatch:
    """A property filter on the VM's runtime.bootTime, made before the request it times."""

    def __init__(self, host, vm):
        self.collector = host.collector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm)],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine,
                                                                pathSet=["runtime.bootTime"])])
        self.filter = self.collector.CreateFilter(spec, partialUpdates=False)
        self.version, self.boot = self.next("")

    def next(self, version):
        """(new version, bootTime) after the next change past `version`."""
        options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=RAM_TIMEOUT)
        update = self.collector.WaitForUpdatesEx(version, options)
        changes = [c for f in update.filterSet for o in f.objectSet for c in o.changeSet]
        return update.version, next((c.val for c in changes if c.name == "runtime.bootTime"), None)

    def changed(self):
        """Waits until bootTime differs from what it was when the filter was made."""
        boot = self.boot
        while boot is None or boot == self.boot:
            self.version, boot = self.next(self.version)
        self.filter.Destroy()


def launch_phases(host, marker="VMM answering", start="answering"):
    """vireod's last log line holding `marker`, from `start`."""
    with open(os.path.join(host.data, "vireod.log")) as log:
        lines = [l for l in log if marker in l]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[-1][lines[-1].index(start):]).strip() if lines else "?"


def back_again(host, vm, request, fill_mib, check, revert=False):
    """(ms from `request()` to the first console answer, s to read the pattern back or None
    without `check`, where the time to the first answer went; with `revert` vireod's revert
    phases too)."""
    watch = BootWatch(host, vm)
    start = time.monotonic()
    task = request()
    watch.changed()
    running = time.monotonic()
    first, _ = answer(host, vm, "echo back", "back")
    WaitForTask(task)
    ended = time.monotonic()
    breakdown = (f"bootTime changed at {(running - start) * 1000:.0f} ms, task ended at "
                 f"{(ended - start) * 1000:.0f} ms; vireod: VMM {launch_phases(host)}")
    if revert:
        breakdown += f"; revert: {launch_phases(host, 'reverted and running', 'reverted')}"
    if not check:
        return (first - start) * 1000, None, breakdown
    done, line = answer(host, vm, "ram check", "ram ")
    if line != f"ram ok {fill_mib} MiB generation=0":
        raise SystemExit(f"memory damaged: {line}")
    return (first - start) * 1000, done - first, breakdown


def repeated(host, vm, before, request, fill_mib, runs, revert=False):
    """`runs` times `before()` then [`back_again`]; the pattern is read back after the last
    (the first runs leave most of it untouched, as a resumed guest that only answers does).
    Returns (median ms, every ms, s to read back, the median run's breakdown)."""
    results = []
    for run in range(runs):
        before()
        results.append(back_again(host, vm, request, fill_mib, run == runs - 1, revert))
    times = [r[0] for r in results]
    median = statistics.median(times)
    closest = min(results, key=lambda r: abs(r[0] - median))
    return median, times, results[-1][1], closest[2]


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


def resume_and_revert(host, memory_mb, runs=1):
    """Rows for a guest of `memory_mb` with 75% of it filled: medians of `runs` resumes and
    reverts."""
    vm, fill = filled_vm(host, memory_mb)
    suspend = lambda: WaitForTask(vm.SuspendVM_Task())
    resume_ms, resume_all, resume_set, resume_why = repeated(
        host, vm, suspend, vm.PowerOnVM_Task, fill, runs)
    WaitForTask(vm.CreateSnapshot_Task(name="filled", description="", memory=True, quiesce=False))
    snapshot = vm.snapshot.currentSnapshot
    revert_ms, revert_all, revert_set, revert_why = repeated(
        host, vm, lambda: None, snapshot.RevertToSnapshot_Task, fill, runs, revert=True)
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    label = f"{memory_mb} MiB guest, {fill} MiB filled"
    every = lambda times: "runs " + "/".join(f"{t:.0f}" for t in times)
    return [(f"resume from suspend, {label}: first answer", f"{resume_ms:.0f} ms",
             f"bar < 50 ms; {every(resume_all)}; median run: {resume_why}"),
            (f"resume from suspend, {label}: pattern read back", f"{resume_set:.2f} s", "working set back"),
            (f"revert to memory snapshot, {label}: first answer", f"{revert_ms:.0f} ms",
             f"bar < 50 ms; {every(revert_all)}; median run: {revert_why}"),
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
    """Pause, save (not live) and resume through the control socket. As vireod does for a save
    (the jailed VMM sees no datastore folder), the bench makes the folder and the empty memory
    and state files and sends them open with the request (SCM_RIGHTS, `files_sent`); the VMM
    leaves sent files unsynced (vireod syncs them after the resume), so no fsync is timed."""
    folder = os.path.dirname(host.path(vm.config.files.vmPathName))
    target = os.path.join(folder, f"paused-save-{time.monotonic_ns()}")
    os.mkdir(target, 0o700)
    memory = os.open(os.path.join(target, "vm.mem"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    state = os.open(os.path.join(target, "vm.state.partial"), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        control(host, vm, {"cmd": "pause"})
        control(host, vm, {"cmd": "save", "dir": target, "live": False, "files_sent": True},
                fds=[memory, state])
        control(host, vm, {"cmd": "resume"})
    finally:
        os.close(memory)
        os.close(state)


def busy_snapshot_pause(host, memory_mb, runs=1):
    """Rows: the longest stall of a guest rewriting 75% of its memory during a memory snapshot
    (median of `runs` snapshots, each in a churn of its own)."""
    vm, fill = filled_vm(host, memory_mb)
    quiet = churn_stall(host, vm, 10, lambda: None)
    lives = [churn_stall(host, vm, 40, lambda n=n: WaitForTask(
        vm.CreateSnapshot_Task(name=f"busy-{n}", description="", memory=True, quiesce=False)))
        for n in range(runs)]
    live = statistics.median(lives)
    paused = churn_stall(host, vm, 40, lambda: paused_save(host, vm))
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    label = f"{memory_mb} MiB guest rewriting {fill} MiB"
    every = "/".join(f"{t:.0f}" for t in lives)
    return [(f"CreateSnapshot with memory (live), {label}: longest guest stall", f"{live:.0f} ms",
             f"bar < 100 ms; runs {every}; {paused / live:.1f}x shorter than paused"),
            (f"paused save (pause+save+resume), {label}: longest guest stall", f"{paused:.0f} ms", "before"),
            (f"no snapshot, {label}: longest guest stall", f"{quiet:.0f} ms", "noise")]
