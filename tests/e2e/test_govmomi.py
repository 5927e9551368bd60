"""govmomi (Go) drives vireod too, built offline in GOPATH mode against Debian's
golang-github-vmware-govmomi-dev: tests/e2e/govmomi/main.go logs in, lists VMs, reads host and
datastore properties and waits for an update; tests/e2e/govmomi/ovf_import/main.go deploys OVF
packages as govc import.ovf does (a streamOptimized and a flat disk) and aborts a lease with a
fault it then reads back. Skips (with the reason) where Go or the package is not installed."""
import os
import shutil
import subprocess
import time

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask

from conftest import ROOT_PASSWORD, host_path, own_vireod
from test_vm_import import descriptor, qemu_compare, vm_disks, write_pattern

GOVMOMI_SRC = "/usr/share/gocode/src/github.com/vmware/govmomi"
HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".cache", "go-build")


def go_build(tmp_path_factory, name, source):
    """Builds the Go program `source` (under tests/e2e/govmomi) as `name`."""
    if shutil.which("go") is None or not os.path.isdir(GOVMOMI_SRC):
        pytest.skip("needs Debian packages golang-go and golang-github-vmware-govmomi-dev")
    out = str(tmp_path_factory.mktemp("govmomi") / name)
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=CACHE, GOFLAGS="")
    subprocess.run(["go", "build", "-o", out, os.path.join(HERE, "govmomi", source)], env=env, check=True,
                   timeout=900)
    return out


@pytest.fixture(scope="module")
def govmomi_smoke(tmp_path_factory):
    return go_build(tmp_path_factory, "govmomi-smoke", "main.go")


@pytest.fixture(scope="module")
def govmomi_import(tmp_path_factory):
    return go_build(tmp_path_factory, "govmomi-import", "ovf_import/main.go")


import_server = own_vireod()
VMDK_FORMATS = "http://www.vmware.com/interfaces/specifications/vmdk.html"


def test_govmomi_client_walks_and_waits(vireod, govmomi_smoke):
    url = f"https://root:{ROOT_PASSWORD}@{vireod.host}:{vireod.port}/sdk"
    result = subprocess.run([govmomi_smoke, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vm: e2e vm poweredOff" in result.stdout
    assert result.stdout.rstrip().endswith("OK")


def sdk_url(server):
    return f"https://root:{ROOT_PASSWORD}@{server.host}:{server.port}/sdk"


@pytest.mark.parametrize("subformat", ["streamOptimized", "monolithicFlat"])
def test_govmomi_deploys_an_ovf_as_govc_does(import_server, govmomi_import, tmp_path, subformat):
    name = f"govmomi-{subformat.lower()}"
    disk_size = 16 << 20
    raw = str(tmp_path / "disk.raw")
    write_pattern(raw, disk_size, [(0, 4096, 0x31), (7 << 20, 1 << 20, 0x32), (disk_size - 512, 512, 0x33)])
    vmdk = str(tmp_path / f"{name}.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", raw, vmdk],
                   check=True, capture_output=True)
    sent = vmdk if subformat == "streamOptimized" else str(tmp_path / f"{name}-flat.vmdk")
    ovf = tmp_path / f"{name}.ovf"
    ovf.write_text(descriptor(name=name, disks=(((os.path.basename(sent), os.path.getsize(sent)), disk_size),),
                              network="VM Network", disk_format=f"{VMDK_FORMATS}#{subformat}"))
    result = subprocess.run([govmomi_import, sdk_url(import_server), str(ovf), name, "deploy"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("OK"), result.stdout + result.stderr
    si = import_server.connect()
    try:
        [vm] = [v for v in si.content.rootFolder.childEntity[0].vmFolder.childEntity if v.name == name]
        assert vm.runtime.powerState == "poweredOff"
        [disk] = vm_disks(vm)
        compare = qemu_compare(raw, host_path(import_server, disk.backing.fileName))
        assert compare.returncode == 0, compare.stdout + compare.stderr
        WaitForTask(vm.Destroy_Task())
    finally:
        Disconnect(si)


def test_govmomi_abort_leaves_its_fault_on_the_lease_and_nothing_behind(import_server, govmomi_import, tmp_path):
    name = "govmomi-aborted"
    ovf = tmp_path / f"{name}.ovf"
    ovf.write_text(descriptor(name=name, disks=((("never-sent.vmdk", 65536), 1 << 20),), network="VM Network"))
    result = subprocess.run([govmomi_import, sdk_url(import_server), str(ovf), name, "abort"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    # govmomi reads back the fault it sent: its type, fields and message.
    assert 'aborted: error *types.SystemError "govmomi gave up" "upload abandoned"' in result.stdout, result.stdout
    folder = os.path.join(import_server.datastore_dir, name)
    deadline = time.monotonic() + 60
    while os.path.exists(folder):
        assert time.monotonic() < deadline, os.listdir(folder)
        time.sleep(0.2)
