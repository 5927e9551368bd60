#!/usr/bin/env python3
"""virtio-blk benchmark: the test guest's `blk bench` workload on the same raw file under
vireo-vmm and QEMU microvm (virtio-blk-device), each with cache=none (direct I/O; QEMU with
aio=io_uring) and with cache=writeback, plus fio on the host on that file (direct I/O, io_uring)
as the limit; interleaved in one run, each runner starting from the same state of the file (written
back, wholly in the host's page cache), medians, ratios and the host's load average printed."""
import argparse
import json
import os
import re
import statistics
import subprocess

from guest_console import read_until

WORKLOADS = [("randread", 4096, 1), ("randread", 4096, 32), ("randwrite", 4096, 1), ("randwrite", 4096, 32),
             ("seqread", 1 << 20, 8), ("seqwrite", 1 << 20, 8)]
BENCH = re.compile(rb"bench mode=(\w+) bs=(\d+) qd=(\d+) ios=(\d+) secs=([\d.]+) iops=(\d+) mbps=([\d.]+)")


def guest_run(cmd, seconds):
    """Boots the guest with `cmd`, runs every workload, returns {(mode, bs, qd): (iops, mbps)}."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    results = {}
    try:
        read_until(proc, b"vireo> ", 60)
        for mode, bs, qd in WORKLOADS:
            proc.stdin.write(f"blk bench 0 {mode} {bs} {qd} {seconds}\n".encode())
            proc.stdin.flush()
            out = read_until(proc, b"vireo> ", seconds + 60)
            match = BENCH.search(out)
            if not match:
                raise RuntimeError(f"no bench line in {out[-300:]!r}")
            results[(mode, bs, qd)] = (int(match.group(6)), float(match.group(7)))
    finally:
        proc.kill()
        proc.wait()
    return results


def settle(path):
    """Writes the file back and reads all of it into the host's page cache, so that every runner
    starts alike: with no dirty pages left by the one before (a direct read must first write back
    the dirty pages it covers, and the flusher writes the rest 30 s after the fact, under whoever
    runs then) and with every page cached (direct writes drop the pages they cover, which the next
    writeback runner would have to read from storage while the one after it finds them cached)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


def fio_run(path, seconds):
    results = {}
    for mode, bs, qd in WORKLOADS:
        rw = {"randread": "randread", "randwrite": "randwrite", "seqread": "read", "seqwrite": "write"}[mode]
        out = subprocess.run(["fio", "--name=host", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
                              f"--iodepth={qd}", "--ioengine=io_uring", "--direct=1", "--time_based",
                              f"--runtime={seconds}", "--output-format=json"],
                             capture_output=True, check=True, text=True).stdout
        job = json.loads(out)["jobs"][0]
        side = job["read"] if "read" in rw else job["write"]
        results[(mode, bs, qd)] = (int(side["iops"]), side["bw_bytes"] / 1e6)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vmm", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    def vmm(cache):
        return [args.vmm, "--kernel", args.guest, "--vcpus", "2", "--memory-mib", "256", "--cmdline",
                "scenario=shell", "--disk", f"path={args.file},cache={cache}"]
    # microvm puts virtio-mmio devices on the command line only without ACPI; modern transport.
    def qemu(cache, aio):
        return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-global", "virtio-mmio.force-legacy=false",
                "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "2", "-m", "256", "-nodefaults",
                "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", args.guest, "-append", "scenario=shell",
                "-drive", f"id=d0,file={args.file},format=raw,if=none,cache={cache},aio={aio}",
                "-device", "virtio-blk-device,drive=d0"]

    # Each caching mode against the same mode of QEMU; direct I/O also against fio on the host.
    runners = {"vireo none": lambda: guest_run(vmm("none"), args.seconds),
               "qemu none io_uring": lambda: guest_run(qemu("none", "io_uring"), args.seconds),
               "fio direct (host)": lambda: fio_run(args.file, args.seconds),
               "vireo writeback": lambda: guest_run(vmm("writeback"), args.seconds),
               "qemu writeback": lambda: guest_run(qemu("writeback", "threads"), args.seconds)}
    ratios = [("none/qemu", "vireo none", "qemu none io_uring"), ("none/fio", "vireo none", "fio direct (host)"),
              ("wb/qemu", "vireo writeback", "qemu writeback")]
    samples = {name: [] for name in runners}
    load_before = os.getloadavg()
    for _ in range(args.runs):
        for name, run in runners.items():
            settle(args.file)
            samples[name].append(run())
    load_after = os.getloadavg()
    print(f"virtio-blk benchmark: {args.runs} interleaved runs x {args.seconds}s, file {args.file}; "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f}")
    print(f"{'workload':20}" + "".join(f"{name:>20}" for name in samples) + "".join(f"{r[0]:>10}" for r in ratios))
    for key in WORKLOADS:
        mode, bs, qd = key
        medians = {name: (statistics.median(r[key][0] for r in runs), statistics.median(r[key][1] for r in runs))
                   for name, runs in samples.items()}
        cells = "".join(f"{m[0]:>8.0f} IOPS {m[1]:>5.0f}MB/s" for m in medians.values())
        cells += "".join(f"{medians[ours][0] / max(medians[theirs][0], 1):>10.2f}" for _, ours, theirs in ratios)
        print(f"{mode + ' ' + str(bs) + ' qd' + str(qd):20}{cells}")
        for name, runs in samples.items():
            print(f"{'':22}{name}: " + " ".join(f"{r[key][0]}" for r in runs) + " IOPS")


if __name__ == "__main__":
    main()
