#!/usr/bin/env python3
"""virtio-net benchmark: the same test guest on the same TAP under vireo-vmm and under QEMU microvm
(virtio-net-device on a tap netdev, vhost off: both move frames through the TAP in userspace),
interleaved in one run. Inside a network namespace of its own: a persistent TAP at 10.77.0.1/24
with an HTTP server behind it; the guest (10.77.0.2) fetches a large file with `net get`
(host-to-guest TCP throughput through its own small TCP client: the guest acknowledges every
segment, so this measures the device path plus the guest's stack, equally for both VMMs) and a
small one many times (request/response round trip, including the serial console both report
over). Prints medians, the ratios vireo-vmm / QEMU, and the load average around the run."""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from guest_console import read_until

NETNS = f"vireo-nb-{os.getpid()}"
TAP = "vnb0"
HOST_IP, GUEST_IP, PORT = "10.77.0.1", "10.77.0.2", 8080
MAC = "52:54:00:12:34:56"
CMDLINE = f"scenario=shell vireo.ip={GUEST_IP}/24"
HTTP = re.compile(rb"http bytes=(\d+) ")


def fetch(proc, path):
    """Runs `net get` for `path`; returns (bytes, seconds from the command to the shell's prompt);
    None if the guest's client gave up (it prints `error: ...`)."""
    start = time.monotonic()
    proc.stdin.write(f"net get {HOST_IP} {PORT} {path}\n".encode())
    proc.stdin.flush()
    out = read_until(proc, b"vireo> ", 60)
    seconds = time.monotonic() - start
    match = HTTP.search(out)
    if not match:
        if b"error: " in out:
            return None
        raise RuntimeError(f"no http line in {out[-300:]!r}")
    return int(match.group(1)), seconds


def guest_run(cmd, large, fetches, pings):
    """Boots the guest with `cmd`; returns (MB/s of each fetch of the `large`-byte file, ms of each
    small one, how many fetches failed)."""
    proc = subprocess.Popen(["ip", "netns", "exec", NETNS] + cmd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        read_until(proc, b"vireo> ", 60)
        fetch(proc, "/small")  # ARP and the server warmed up
        throughput, latency, failed = [], [], 0
        for path, count in (("/large", fetches), ("/small", pings)):
            for _ in range(count):
                done = fetch(proc, path)
                if done is None or (path == "/large" and done[0] < large):
                    failed += 1
                elif path == "/large":
                    throughput.append(done[0] / done[1] / 1e6)
                else:
                    latency.append(done[1] * 1e3)
    finally:
        proc.kill()
        proc.wait()
    return throughput, latency, failed


def ip(*args):
    subprocess.run(["ip", "-n", NETNS] + list(args), check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vmm", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=4, help="size of the large file")
    parser.add_argument("--fetches", type=int, default=3, help="large fetches per boot")
    parser.add_argument("--pings", type=int, default=20, help="small fetches per boot")
    args = parser.parse_args()
    www = tempfile.mkdtemp(prefix="vireo-net-bench-")
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    server = None
    try:
        ip("link", "set", "lo", "up")
        ip("tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr")
        ip("addr", "add", f"{HOST_IP}/24", "dev", TAP)
        ip("link", "set", TAP, "up")
        with open(os.path.join(www, "large"), "wb") as f:
            f.write(os.urandom(args.size_mb << 20))
        with open(os.path.join(www, "small"), "w") as f:
            f.write("pong\n")
        server = subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-m", "http.server", str(PORT),
                                   "--bind", HOST_IP, "--directory", www],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        vmm = [args.vmm, "--kernel", args.guest, "--vcpus", "2", "--memory-mib", "256", "--cmdline", CMDLINE,
               "--net", f"tap={TAP},mac={MAC}"]
        qemu = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-global", "virtio-mmio.force-legacy=false",
                "-enable-kvm", "-cpu", "host,-arch-capabilities", "-smp", "2", "-m", "256", "-nodefaults",
                "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", args.guest, "-append", CMDLINE,
                "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no,vnet_hdr=on,vhost=off",
                "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]
        runners = {"vireo-vmm": vmm, "qemu": qemu}
        samples = {name: ([], [], [0]) for name in runners}
        load_before = os.getloadavg()
        for _ in range(args.runs):
            for name, cmd in runners.items():
                throughput, latency, failed = guest_run(cmd, args.size_mb << 20, args.fetches, args.pings)
                samples[name][0].extend(throughput)
                samples[name][1].extend(latency)
                samples[name][2][0] += failed
        load_after = os.getloadavg()
    finally:
        if server:
            server.terminate()
            server.wait()
        subprocess.run(["ip", "netns", "del", NETNS])
        shutil.rmtree(www, ignore_errors=True)
    print(f"virtio-net benchmark: {args.runs} interleaved boots per VMM, {args.fetches} x {args.size_mb} MiB "
          f"and {args.pings} small GETs per boot; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after, {os.cpu_count()} CPUs")
    medians = {name: (statistics.median(t), statistics.median(l)) for name, (t, l, _) in samples.items()}
    for name, (throughput, latency) in medians.items():
        print(f"{name:>10}: host->guest TCP {throughput:8.1f} MB/s   small GET round trip {latency:7.2f} ms   "
              f"failed fetches {samples[name][2][0]}")
    ours, theirs = medians["vireo-vmm"], medians["qemu"]
    print(f"vireo-vmm / qemu: throughput {ours[0] / theirs[0]:.2f}x, round trip {ours[1] / theirs[1]:.2f}x "
          f"(below 1 is faster)")


if __name__ == "__main__":
    main()
