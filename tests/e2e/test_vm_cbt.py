"""Changed-block tracking and the incremental-backup workflow through pyVmomi: enable tracking
with ReconfigVM (it takes effect at the next power-on), take snapshot 1, make a full backup of
its allocated areas (changeId "*") by downloading the snapshot's frozen layers over
`GET /folder` with Range requests, write random blocks, take snapshot 2, copy only the areas
QueryChangedDiskAreas reports since snapshot 1's changeId, and check the restored image is
byte-identical to the disk at snapshot 2 (`qemu-img compare`). Also the faults for bad
arguments and unknown changeIds, and /folder's authentication."""
import base64
import os
import random
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import ROOT_PASSWORD, connection_to
from test_vm_lifecycle import agent, console, create_vm, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import WAITING, disk, host_path, snapshot, vdisk

pytestmark = pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                                reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests")

DISK_BYTES = 64 << 20
CHUNK = 4 << 20


si = connection_to("agent")


def folder_url(agent, datastore_path):
    relative = datastore_path.split("] ", 1)[1]
    return (f"https://127.0.0.1:{agent.port}/folder/{urllib.parse.quote(relative)}"
            "?dcPath=ha-datacenter&dsName=datastore1")


def get(url, headers):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=60) as response:
        return response.status, response.headers, response.read()


def download_chain(agent, si, backing, into):
    """Downloads every layer of a disk backing (top and parents) in Range chunks; returns the
    local path of the top layer (backing names are relative, so the local chain works)."""
    cookie = {"Cookie": si._stub.cookie}
    top = None
    while backing is not None:
        local = os.path.join(into, os.path.basename(backing.fileName.split("] ", 1)[1]))
        with open(local, "wb") as out:
            offset = 0
            while True:
                status, headers, body = get(folder_url(agent, backing.fileName),
                                            dict(cookie, Range=f"bytes={offset}-{offset + CHUNK - 1}"))
                assert status == 206 and headers["Content-Range"].startswith(f"bytes {offset}-")
                out.write(body)
                offset += len(body)
                if offset >= int(headers["Content-Range"].rsplit("/", 1)[1]):
                    break
        top = top or local
        backing = backing.parent
    return top


def to_raw(top, raw):
    subprocess.run(["qemu-img", "convert", "-O", "raw", top, raw], check=True)


def changed_areas(vm, snap, change_id):
    areas, offset = [], 0
    while offset < DISK_BYTES:
        info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=2000, startOffset=offset, changeId=change_id)
        assert info.startOffset == offset and info.length > 0
        areas += [(a.start, a.length) for a in info.changedArea]
        offset = info.startOffset + info.length
    return areas


def copy_areas(source, target, areas):
    with open(source, "rb") as src, open(target, "r+b") as dst:
        for start, length in areas:
            src.seek(start)
            dst.seek(start)
            dst.write(src.read(length))


def test_full_and_incremental_backup_reproduce_the_snapshot(si, agent):
    vm = create_vm(si, "cbt", scenario="wait", nic=False)
    image = host_path(agent, disk(vm).backing.fileName)
    rng = random.Random(7)
    for n in range(8):
        vdisk("write", image, "--offset", str(rng.randrange(0, DISK_BYTES // 65536) * 65536), "--length", "65536",
              "--pattern", str(n + 1))
    assert vm.capability.changeTrackingSupported and not vm.config.changeTrackingEnabled
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    assert vm.config.changeTrackingEnabled
    assert disk(vm).backing.changeId is None  # applied at the next power-on
    WaitForTask(vm.PowerOnVM_Task())
    wait_for(lambda: WAITING in console(agent, vm), "the guest to wait for its power button")
    assert disk(vm).backing.changeId

    s1 = snapshot(vm, "backup-1")
    change_id_1 = disk(s1).backing.changeId
    assert change_id_1 and "/" in change_id_1
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(deviceKey=2000, startOffset=0, changeId="*")  # disk in use
    work = tempfile.mkdtemp(prefix="vireo-backup-")
    try:
        full = changed_areas(vm, s1, "*")
        assert full, "the written blocks are allocated"
        os.makedirs(os.path.join(work, "s1"))
        s1_raw = os.path.join(work, "s1.raw")
        to_raw(download_chain(agent, si, disk(s1).backing, os.path.join(work, "s1")), s1_raw)
        backup = os.path.join(work, "backup.raw")
        with open(backup, "wb") as f:
            f.truncate(DISK_BYTES)
        copy_areas(s1_raw, backup, full)
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", backup, s1_raw], check=True)

        WaitForTask(vm.PowerOffVM_Task())
        active = host_path(agent, disk(vm).backing.fileName)
        written = []
        for n in range(20):
            offset = rng.randrange(0, DISK_BYTES // 4096) * 4096
            vdisk("write", active, "--offset", str(offset), "--length", str(4096 * rng.randrange(1, 8)),
                  "--pattern", str(0x40 + n))
            written.append(offset)
        current = changed_areas(vm, None, change_id_1)  # powered off: the disk now may be asked
        assert all(any(s <= o < s + n for s, n in current) for o in written)
        s2 = snapshot(vm, "backup-2")
        incremental = changed_areas(vm, s2, change_id_1)
        assert sum(n for _, n in incremental) < DISK_BYTES // 2
        os.makedirs(os.path.join(work, "s2"))
        s2_raw = os.path.join(work, "s2.raw")
        to_raw(download_chain(agent, si, disk(s2).backing, os.path.join(work, "s2")), s2_raw)
        copy_areas(s2_raw, backup, incremental)
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", backup, s2_raw], check=True)
        # and the server's own files agree: snapshot 2's chain reads as the restored image
        subprocess.run(["qemu-img", "compare", "-F", "raw", host_path(agent, disk(s2).backing.fileName), backup],
                       check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=4000, startOffset=0, changeId="*")
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=DISK_BYTES, changeId="*")
    foreign = "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 01/1"
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=2000, startOffset=0, changeId=foreign)
    # turning tracking off makes every changeId unusable after the next power-on
    WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
    WaitForTask(vm.PowerOnVM_Task())
    WaitForTask(vm.PowerOffVM_Task())
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(deviceKey=2000, startOffset=0, changeId=change_id_1)
    WaitForTask(vm.RemoveAllSnapshots_Task())
    subprocess.run(["qemu-img", "check", host_path(agent, disk(vm).backing.fileName)], check=True,
                   capture_output=True)


def test_folder_needs_a_session_or_basic_credentials(si, agent):
    vm = create_vm(si, "cbt-auth", disk_kb=1024, nic=False)
    url = folder_url(agent, vm.config.files.vmPathName)
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(url, {})
    assert refused.value.code == 401
    basic = base64.b64encode(f"root:{ROOT_PASSWORD}".encode()).decode()
    status, _, body = get(url, {"Authorization": f"Basic {basic}"})
    assert status == 200 and b"displayName" in body
    status, headers, body = get(url, {"Cookie": si._stub.cookie, "Range": "bytes=0-8"})
    assert status == 206 and body == b".encoding" and headers["Content-Range"].startswith("bytes 0-8/")
    with pytest.raises(urllib.error.HTTPError) as outside:
        get(url.replace("cbt-auth/cbt-auth.vmx", "..%2F..%2Fusers"), {"Cookie": si._stub.cookie})
    assert outside.value.code in (400, 404)
