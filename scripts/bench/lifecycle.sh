#!/usr/bin/env bash
# VM lifecycle through SOAP (pyVmomi) on a fresh vireod: PowerOnVM_Task time and PowerOn → the
# guest's "booted" console line, SuspendVM_Task and resume (PowerOn from suspended) for 256 MiB
# and 1 GiB test-guest VMs (medians of 3), and 8 VMs powered on at once.
# Usage: scripts/bench/lifecycle.sh   (needs /dev/kvm, a built workspace and .cache/venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${VIREO_BIN_DIR:-$PWD/target/debug}"
guest="${VIREO_TEST_GUEST:-$PWD/.cache/test-guest/vireo-test-guest.elf}"
data=$(mktemp -d /tmp/vireo-bench-XXXXXX)
mkdir -p "$data/datastore1/images"
cp "$guest" "$data/datastore1/images/vireo-test-guest.elf"
port=$(.cache/venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
VIREO_ROOT_PASSWORD=bench VIREO_VMM="$bin/vireo-vmm" "$bin/vireod" --data-dir "$data" --listen "127.0.0.1:$port" >"$data/vireod.log" 2>&1 &
vireod=$!
trap 'kill $vireod 2>/dev/null; wait $vireod 2>/dev/null; rm -rf "$data"' EXIT
PORT=$port DATA=$data .cache/venv/bin/python - <<'EOF'
import os, statistics, time
from pyVim.connect import SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

for _ in range(100):
    try:
        si = SmartConnect(host="127.0.0.1", port=int(os.environ["PORT"]), user="root", pwd="bench",
                          disableSslCertValidation=True)
        break
    except OSError:
        time.sleep(0.1)
dc = si.content.rootFolder.childEntity[0]
pool = dc.hostFolder.childEntity[0].resourcePool

def create(name, memory):
    spec = vim.vm.ConfigSpec(name=name, numCPUs=1, memoryMB=memory, files=vim.vm.FileInfo(vmPathName="[datastore1]"),
                             extraConfig=[vim.option.OptionValue(key="vireo.boot.kernel",
                                                                 value="[datastore1] images/vireo-test-guest.elf"),
                                          vim.option.OptionValue(key="vireo.boot.cmdline", value="scenario=wait")])
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=pool)
    WaitForTask(task)
    return task.info.result

def console(vm):
    folder = vm.config.files.vmPathName.split("] ")[1].rsplit("/", 1)[0]
    try:
        return open(os.path.join(os.environ["DATA"], "datastore1", folder, "serial.log")).read()
    except FileNotFoundError:
        return ""

def ms(samples):
    return f"{statistics.median(samples) * 1000:.0f} ms"

for memory in (256, 1024):
    vm = create(f"bench-{memory}", memory)
    on, booted, suspend, resume = [], [], [], []
    for _ in range(3):
        boots = console(vm).count("booted")
        start = time.monotonic()
        WaitForTask(vm.PowerOnVM_Task())
        on.append(time.monotonic() - start)
        while console(vm).count("booted") == boots:
            time.sleep(0.002)
        booted.append(time.monotonic() - start)
        start = time.monotonic()
        WaitForTask(vm.SuspendVM_Task())
        suspend.append(time.monotonic() - start)
        start = time.monotonic()
        WaitForTask(vm.PowerOnVM_Task())
        resume.append(time.monotonic() - start)
        WaitForTask(vm.PowerOffVM_Task())
    print(f"{memory} MiB: PowerOnVM_Task {ms(on)}, PowerOn -> booted line {ms(booted)}, "
          f"SuspendVM_Task {ms(suspend)}, resume {ms(resume)}")

vms = [create(f"many-{i}", 64) for i in range(8)]
start = time.monotonic()
for task in [vm.PowerOnVM_Task() for vm in vms]:
    WaitForTask(task)
while not all("booted" in console(vm) for vm in vms):
    time.sleep(0.005)
print(f"8 VMs powered on at once: all booted after {(time.monotonic() - start) * 1000:.0f} ms")
for vm in vms:
    WaitForTask(vm.PowerOffVM_Task())
EOF
