#!/usr/bin/env python3
"""Boot benchmark: the test guest booted to its "booted" console line and to exit, N runs each,
under vireo-vmm and under QEMU microvm, in one run; prints medians, ratios and vireo-vmm's
memory overhead (resident memory beyond the guest's RAM mapping). QEMU runs with qboot, its
fastest microvm firmware, when installed: QEMU 10's default (SeaBIOS) runs for ~27 s here,
its ring-0 code being interpreted by kvm-pvm (QEMU 7.2's microvm defaulted to qboot)."""
import argparse
import os
import statistics
import subprocess
import time

MARKER = b"vireo-test-guest: booted"


def timed_boot(cmd):
    """Returns (seconds to the booted line, seconds to exit, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    marker = None
    buf = b""
    while True:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        buf += chunk
        if marker is None and MARKER in buf:
            marker = time.perf_counter() - start
    code = proc.wait()
    return marker, time.perf_counter() - start, code


def overhead_mib(cmd, guest_mib):
    """Boots into the shell and measures RSS outside the guest RAM mapping, and peak RSS."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    buf = b""
    while b"vireo> " not in buf:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            raise SystemExit("guest ended before its shell prompt")
        buf += chunk
    guest_bytes = guest_mib << 20
    total_kib = guest_kib = 0
    size_kib = None
    with open(f"/proc/{proc.pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                size_kib = (hi - lo) >> 10
            elif fields[0] == "Rss:":
                total_kib += int(fields[1])
                if size_kib == guest_bytes >> 10:
                    guest_kib += int(fields[1])
    with open(f"/proc/{proc.pid}/status") as status:
        hwm_kib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    proc.stdin.write(b"poweroff\n")
    proc.stdin.flush()
    proc.wait(timeout=60)
    return (total_kib - guest_kib) / 1024, guest_kib / 1024, hwm_kib / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--vmm", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--qemu-bios", default="/usr/share/qemu/qboot.rom",
                        help="microvm firmware (QEMU's default when the file is missing)")
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, default=128)
    args = parser.parse_args()

    vmm = [args.vmm, "--kernel", args.guest, "--vcpus", str(args.vcpus), "--memory-mib", str(args.memory_mib)]
    qemu = [args.qemu, "-M", "microvm", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", str(args.vcpus),
            "-m", str(args.memory_mib), "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
            "-kernel", args.guest] + (["-bios", args.qemu_bios] if os.path.exists(args.qemu_bios) else [])
    results = {}
    # Interleave the two so that machine noise hits both alike.
    for _ in range(args.runs):
        for name, cmd in (("vireo-vmm", vmm + ["--cmdline", "scenario=power-off"]),
                          ("qemu-microvm", qemu + ["-append", "scenario=power-off"])):
            marker, total, code = timed_boot(cmd)
            results.setdefault(name, []).append((marker, total, code))

    print(f"boot benchmark: {args.runs} runs each, {args.vcpus} vCPUs, {args.memory_mib} MiB, guest {args.guest}")
    print(f"{'':14} {'to marker (median)':>20} {'to exit (median)':>18} {'exit codes':>12}")
    medians = {}
    for name, runs in results.items():
        markers = [m for m, _, _ in runs if m is not None]
        totals = [t for _, t, _ in runs]
        codes = sorted({c for _, _, c in runs})
        medians[name] = (statistics.median(markers) if markers else float("nan"), statistics.median(totals))
        print(f"{name:14} {medians[name][0] * 1e3:17.1f} ms {medians[name][1] * 1e3:15.1f} ms {str(codes):>12}"
              f"  ({len(markers)}/{len(runs)} reached the marker)")
    v, q = medians["vireo-vmm"], medians["qemu-microvm"]
    print(f"ratio vireo-vmm / qemu: to marker {v[0] / q[0]:.3f}, to exit {v[1] / q[1]:.3f}")
    overhead, guest, hwm = overhead_mib(vmm + ["--cmdline", "scenario=shell"], args.memory_mib)
    print(f"vireo-vmm memory at the shell prompt: {overhead:.1f} MiB resident outside guest RAM "
          f"(guest RAM resident {guest:.1f} MiB, peak RSS {hwm:.1f} MiB)")


if __name__ == "__main__":
    main()
