#!/usr/bin/env python3
"""The measurements of scripts/bench/snapshots.sh, against a running vireod (--port, --data):
snapshot create/revert times per guest memory size, consolidation of a 3-deep chain vs
`qemu-img commit`, QueryChangedDiskAreas latency, and (working_set.py) resume/revert of guests
with 75% of their RAM filled and the pause a memory snapshot inflicts on a busy guest. Medians;
a table with ratios at the end."""
import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import working_set
from pyVim.connect import SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

KERNEL = "[datastore1] images/vireo-test-guest.elf"
WAITING = "vireo-test-guest: waiting for the power button"
MIB = 1 << 20


def connect(port):
    for _ in range(100):
        try:
            return SmartConnect(host="127.0.0.1", port=port, user="root", pwd="bench",
                                disableSslCertValidation=True)
        except OSError:
            time.sleep(0.1)
    raise SystemExit("vireod did not come up")


class Host:
    def __init__(self, si, data):
        self.collector = si.content.propertyCollector
        self.dc = si.content.rootFolder.childEntity[0]
        self.pool = self.dc.hostFolder.childEntity[0].resourcePool
        self.data = data
        # Where each VM's console log is (its folder does not move): a poll reads only the file.
        self.serial_logs = {}

    def create(self, name, memory_mb, disk_mib, scenario="wait"):
        spec = vim.vm.ConfigSpec(name=name, numCPUs=1, memoryMB=memory_mb,
                                 files=vim.vm.FileInfo(vmPathName="[datastore1]"),
                                 extraConfig=[vim.option.OptionValue(key="vireo.boot.kernel", value=KERNEL),
                                              vim.option.OptionValue(key="vireo.boot.cmdline",
                                                                     value=f"scenario={scenario}")])
        disk = vim.vm.device.VirtualDisk(key=-1, controllerKey=1000, unitNumber=0, capacityInKB=disk_mib * 1024,
                                         backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(diskMode="persistent",
                                                                                              thinProvisioned=True))
        spec.deviceChange = [
            vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
                key=1000, busNumber=0, sharedBus="noSharing")),
            vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)]
        task = self.dc.vmFolder.CreateVM_Task(config=spec, pool=self.pool)
        WaitForTask(task)
        return task.info.result

    def path(self, datastore_path):
        return os.path.join(self.data, "datastore1", datastore_path.split("] ", 1)[1])

    def console(self, vm):
        if vm._moId not in self.serial_logs:
            folder = os.path.dirname(self.path(vm.config.files.vmPathName))
            self.serial_logs[vm._moId] = os.path.join(folder, "serial.log")
        try:
            with open(self.serial_logs[vm._moId]) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def power_on_waiting(self, vm):
        seen = self.console(vm).count(WAITING)
        WaitForTask(vm.PowerOnVM_Task())
        while self.console(vm).count(WAITING) == seen:
            time.sleep(0.01)


def disk(vm):
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def timed(task_call):
    start = time.monotonic()
    WaitForTask(task_call())
    return time.monotonic() - start


def snapshot_task(vm, name, memory):
    return lambda: vm.CreateSnapshot_Task(name=name, description="", memory=memory, quiesce=False)


def create_and_revert(host, memory_mb, runs):
    """Medians (s) of CreateSnapshot without/with memory, revert to the memory snapshot (running
    VM, resumes) and to the disk-only one (powers off) for a running VM of `memory_mb`."""
    vm = host.create(f"snap-{memory_mb}", memory_mb, 64)
    samples = {"disk": [], "memory": [], "revert memory": [], "revert disk": []}
    for n in range(runs):
        host.power_on_waiting(vm)
        samples["disk"].append(timed(snapshot_task(vm, f"disk-{n}", False)))
        disk_only = vm.snapshot.currentSnapshot
        samples["memory"].append(timed(snapshot_task(vm, f"mem-{n}", True)))
        with_memory = vm.snapshot.currentSnapshot
        samples["revert memory"].append(timed(with_memory.RevertToSnapshot_Task))
        assert vm.runtime.powerState == "poweredOn"
        samples["revert disk"].append(timed(disk_only.RevertToSnapshot_Task))
        assert vm.runtime.powerState == "poweredOff"
        WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    return {k: statistics.median(v) for k, v in samples.items()}


def vdisk(tool, *args):
    subprocess.run([tool, *args], check=True, stdout=subprocess.DEVNULL)


def consolidation(host, tool, runs):
    """Medians (s) of RemoveAllSnapshots(consolidate) of base <- 3 redo logs holding 1 GiB of
    changes in all, and of `qemu-img commit -d -b base top` of copies of the same four files."""
    ours, theirs = [], []
    third = 1024 * MIB // 3 // MIB * MIB
    for n in range(runs):
        vm = host.create(f"chain-{n}", 64, 2048)
        for layer in range(3):
            snap = snapshot_task(vm, f"s{layer}", False)
            WaitForTask(snap())
            top = host.path(disk(vm).backing.fileName)
            vdisk(tool, "write", top, "--offset", str(layer * third), "--length", str(third),
                  "--pattern", str(0x41 + layer))
        files = []
        backing = disk(vm).backing
        while backing is not None:
            files.append(host.path(backing.fileName))
            backing = backing.parent
        copies = tempfile.mkdtemp(prefix="vireo-commit-", dir=os.path.dirname(host.data))
        try:
            for f in files:
                subprocess.run(["cp", "--sparse=always", f, copies], check=True)
            subprocess.run(["sync"], check=True)
            ours.append(timed(lambda: vm.RemoveAllSnapshots_Task(consolidate=True)))
            top, base = (os.path.join(copies, os.path.basename(f)) for f in (files[0], files[-1]))
            start = time.monotonic()
            subprocess.run(["qemu-img", "commit", "-q", "-d", "-b", base, top], check=True)
            theirs.append(time.monotonic() - start)
        finally:
            shutil.rmtree(copies)
        WaitForTask(vm.Destroy_Task())
    return statistics.median(ours), statistics.median(theirs), 3 * third


def query_latency(host, tool, queries):
    """Median (s) of QueryChangedDiskAreas between two snapshots after 5000 random 4 KiB writes,
    and of the "*" (allocated areas) query; and the number of areas the first returns."""
    vm = host.create("cbt", 64, 1024)
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    WaitForTask(snapshot_task(vm, "s1", False)())
    s1 = vm.snapshot.currentSnapshot
    change_id = disk(s1).backing.changeId
    vdisk(tool, "bench", "-w", "-s", "4K", "-c", "5000", "--random", "--pattern", "7",
          host.path(disk(vm).backing.fileName))
    WaitForTask(snapshot_task(vm, "s2", False)())
    s2 = vm.snapshot.currentSnapshot
    results = {}
    for label, since in (("since s1", change_id), ("*", "*")):
        samples = []
        for _ in range(queries):
            start = time.monotonic()
            info = vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=since)
            samples.append(time.monotonic() - start)
        results[label] = (statistics.median(samples), len(info.changedArea))
    WaitForTask(vm.RemoveAllSnapshots_Task())
    WaitForTask(vm.Destroy_Task())
    return results


def disk_rows(host, args):
    ours, qemu, changed = consolidation(host, args.vdisk, args.runs)
    rows = [("RemoveAllSnapshots+consolidate, 3 redo logs, 1 GiB changed", ms(ours),
             f"{changed / MIB / ours:.0f} MiB/s, {ours / qemu:.2f}x qemu-img"),
            ("qemu-img commit -b base top, same chain (copies)", ms(qemu), f"{changed / MIB / qemu:.0f} MiB/s")]
    for label, (seconds, areas) in query_latency(host, args.vdisk, args.queries).items():
        rows.append((f"QueryChangedDiskAreas {label} ({areas} areas), median of {args.queries}", ms(seconds), ""))
    return rows


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--vdisk", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--working-set", type=int, nargs="*", default=[256, 1024],
                        help="guest sizes (MiB) for the resume/revert rows; 4096 needs ~12 GB of disk")
    parser.add_argument("--working-set-only", action="store_true", help="only the working-set rows")
    args = parser.parse_args()
    host = Host(connect(args.port), args.data)

    rows = []
    for memory in args.working_set:
        rows += working_set.resume_and_revert(host, memory, args.runs)
    rows += working_set.busy_snapshot_pause(host, 1024, args.runs)
    for memory in () if args.working_set_only else (256, 1024):
        t = create_and_revert(host, memory, args.runs)
        rows += [(f"CreateSnapshot, disk only, {memory} MiB running", ms(t["disk"]), ""),
                 (f"CreateSnapshot, with memory, {memory} MiB", ms(t["memory"]),
                  f"{t['memory'] / t['disk']:.1f}x disk-only"),
                 (f"RevertToSnapshot, memory ({memory} MiB, resumes)", ms(t["revert memory"]), ""),
                 (f"RevertToSnapshot, disk only ({memory} MiB, powers off)", ms(t["revert disk"]), "")]
    if not args.working_set_only:
        rows += disk_rows(host, args)
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  {'median':>10}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>10}  {ratio}")


if __name__ == "__main__":
    main()
