#!/usr/bin/env python3
"""virtio-blk benchmark: the test guest's `blk bench` workload on the same raw file under
vireo-vmm and under QEMU microvm (virtio-blk-device; cache=none aio=native, and cache=writeback like
vireo-vmm), plus fio on the host on that file as the limit; interleaved in one run, medians and
ratios (vireo-vmm / each QEMU) printed."""
import argparse
import json
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


def fio_run(path, seconds):
    results = {}
    for mode, bs, qd in WORKLOADS:
        rw = {"randread": "randread", "randwrite": "randwrite", "seqread": "read", "seqwrite": "write"}[mode]
        out = subprocess.run(["fio", "--name=host", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
                              f"--iodepth={qd}", "--ioengine=libaio", "--direct=1", "--time_based",
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
    vmm = [args.vmm, "--kernel", args.guest, "--vcpus", "2", "--memory-mib", "256", "--cmdline", "scenario=shell",
           "--disk", f"path={args.file}"]
    # microvm puts virtio-mmio devices on the command line only without ACPI; modern transport.
    def qemu(cache, aio):
        return ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-global", "virtio-mmio.force-legacy=false",
                "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "2", "-m", "256", "-nodefaults",
                "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", args.guest, "-append", "scenario=shell",
                "-drive", f"id=d0,file={args.file},format=raw,if=none,cache={cache},aio={aio}",
                "-device", "virtio-blk-device,drive=d0"]

    # vireo-vmm goes through the host page cache (a FLUSH is an fdatasync), so QEMU runs both as the
    # issue names it (cache=none, O_DIRECT) and with the same caching as ours (cache=writeback).
    runners = {"vireo-vmm": lambda: guest_run(vmm, args.seconds),
               "qemu cache=none": lambda: guest_run(qemu("none", "native"), args.seconds),
               "qemu writeback": lambda: guest_run(qemu("writeback", "threads"), args.seconds),
               "fio (host)": lambda: fio_run(args.file, args.seconds)}
    samples = {name: [] for name in runners}
    for _ in range(args.runs):
        for name, run in runners.items():
            samples[name].append(run())
    print(f"virtio-blk benchmark: {args.runs} interleaved runs x {args.seconds}s, file {args.file}")
    print(f"{'workload':24}" + "".join(f"{name:>22}" for name in samples) + f"{'/none':>7}{'/wback':>7}")
    for key in WORKLOADS:
        mode, bs, qd = key
        medians = {name: (statistics.median(r[key][0] for r in runs), statistics.median(r[key][1] for r in runs))
                   for name, runs in samples.items()}
        cells = "".join(f"{m[0]:>10.0f} IOPS {m[1]:>6.0f}MB/s" for m in medians.values())
        ratios = "".join(f"{medians['vireo-vmm'][0] / max(medians[name][0], 1):>7.2f}"
                         for name in ("qemu cache=none", "qemu writeback"))
        print(f"{mode + ' ' + str(bs) + ' qd' + str(qd):24}{cells}{ratios}")


if __name__ == "__main__":
    main()
