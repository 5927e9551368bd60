#!/usr/bin/env python3
"""Linux boot benchmark: time to the initramfs's first line ("init"), to userspace with the
modules loaded ("booted"), and to the end of the process after ACPI power-off, for vireo-vmm
and for QEMU TCG with the same kernel and initramfs; vireo-vmm's completed instructions per
kind come from its control socket's `status`, polled while the guest runs. Each row also gives
the CPU time the process used (user + system, all threads): on a loaded host the wall times
mostly measure the load, the CPU times the work."""
import argparse
import json
import os
import resource
import socket
import subprocess
import tempfile
import time

INIT = b"vireo-linux-guest: init at"
BOOTED = b"vireo-linux-guest: booted"
CMDLINE = "console=ttyS0 panic=-1 vireo.scenario=power-off"
MEMORY_MIB = 256


def status(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(b'{"cmd":"status"}\n')
            return json.loads(s.makefile().readline())
    except (OSError, ValueError):
        return None


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_boot(cmd, control=None, log=None):
    """Returns (seconds to init, seconds to booted, seconds to exit, CPU seconds, exit code,
    last status)."""
    cpu = children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    os.set_blocking(proc.stdout.fileno(), False)
    marks = {INIT: None, BOOTED: None}
    buf, last, polled = b"", None, 0.0
    while proc.poll() is None:
        chunk = proc.stdout.read1(4096) or b""
        buf += chunk
        if log is not None and chunk:
            log.write(chunk)
        for mark in marks:
            if marks[mark] is None and mark in buf:
                marks[mark] = time.perf_counter() - start
        if control and time.perf_counter() - polled > 2:
            polled = time.perf_counter()
            last = status(control) or last
        if not chunk:
            time.sleep(0.05)
    code = proc.wait()
    return marks[INIT], marks[BOOTED], time.perf_counter() - start, children_cpu() - cpu, code, last


def fmt(seconds):
    return "-" if seconds is None else f"{seconds:8.1f} s"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vmm", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--only", choices=["vireo-vmm", "qemu-tcg"], help="boot under this one only")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="vireo-bench-linux-")
    control = os.path.join(tmp, "control.sock")
    vmm = [a.vmm, "--kernel", a.kernel, "--initrd", a.initrd, "--cmdline", CMDLINE,
           "--vcpus", str(a.vcpus), "--memory-mib", str(MEMORY_MIB), "--control", control]
    qemu = ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-cpu", "max", "-smp", str(a.vcpus),
            "-m", str(MEMORY_MIB), "-kernel", a.kernel, "-initrd", a.initrd, "-append", CMDLINE,
            "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"]
    rows = []
    for name, cmd, ctl in [("vireo-vmm", vmm, control), ("qemu-tcg", qemu, None)]:
        if a.only not in (None, name):
            continue
        with open(os.path.join(tmp, f"{name}.console"), "wb") as log:
            rows.append((name, *timed_boot(cmd, ctl, log)))
    print(f"Debian cloud kernel + busybox initramfs, {a.vcpus} vCPUs, {MEMORY_MIB} MiB (consoles in {tmp})")
    print(f"{'':10} {'to init':>10} {'to booted':>10} {'to exit':>10} {'CPU':>10}  exit")
    for name, init, booted, total, cpu, code, _ in rows:
        print(f"{name:10} {fmt(init):>10} {fmt(booted):>10} {fmt(total):>10} {fmt(cpu):>10}  {code}")
    for name, *_, last in rows:
        if name == "vireo-vmm":
            counts = (last or {}).get("completed_instructions")
            print("vireo-vmm completed instructions (last status before power-off):",
                  json.dumps(counts, sort_keys=True) if counts is not None else "n/a")


if __name__ == "__main__":
    main()
