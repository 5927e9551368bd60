"""Virtual disks through VirtualDiskManager as backup and provisioning scripts drive it: create
thin (qcow2) and thick (raw) disks, copy them (qcow2 → qcow2, qcow2 → raw, with a backing chain
flattened), inflate, zero-fill, move and delete, and the disk UUID kept across calls; every file
checked with qemu-img (info, check, compare, map) as the oracle."""
import json
import os
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import connection_to, own_vireod

MIB = 1 << 20


server = own_vireod()
si = connection_to("server")


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=True).stdout


def info(path):
    return json.loads(qemu_img("info", "--output=json", path))


def allocated(path, fmt):
    """Bytes qemu-img map reports as data (not zero, not holes)."""
    extents = json.loads(qemu_img("map", "--output=json", "-f", fmt, path))
    return sum(e["length"] for e in extents if e["data"] and not e["zero"])


def spec(disk_type, kb):
    return vim.VirtualDiskManager.FileBackedVirtualDiskSpec(diskType=disk_type, adapterType="lsiLogic",
                                                            capacityKb=kb)


def run(task):
    WaitForTask(task)
    return task.info.result


def test_disks_are_created_copied_and_deleted_as_qemu_img_sees_them(server, si):
    vdm = si.content.virtualDiskManager
    ds = server.datastore_dir
    os.makedirs(os.path.join(ds, "disks"), exist_ok=True)
    assert run(vdm.CreateVirtualDisk_Task(name="[datastore1] disks/thin.vmdk", spec=spec("thin", 16 * 1024))) \
        == "[datastore1] disks/thin.vmdk"
    thin = os.path.join(ds, "disks", "thin.vmdk")
    assert info(thin)["format"] == "qcow2" and info(thin)["virtual-size"] == 16 * MIB
    qemu_img("check", "-f", "qcow2", thin)
    run(vdm.CreateVirtualDisk_Task(name="[datastore1] disks/thick.vmdk", spec=spec("eagerZeroedThick", 8 * 1024)))
    thick = os.path.join(ds, "disks", "thick.vmdk")
    assert info(thick)["format"] == "raw" and info(thick)["virtual-size"] == 8 * MIB
    assert os.stat(thick).st_blocks * 512 >= 8 * MIB, "a thick disk has its blocks allocated"
    with pytest.raises(vim.fault.FileAlreadyExists):
        run(vdm.CreateVirtualDisk_Task(name="[datastore1] disks/thin.vmdk", spec=spec("thin", 1024)))

    # Content written by qemu-io (a base and an overlay) copies flattened into qcow2 and raw.
    base, top = os.path.join(ds, "disks", "base.qcow2"), os.path.join(ds, "disks", "top.qcow2")
    qemu_img("create", "-f", "qcow2", base, "16M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x22 9M 1M", base],
                   check=True, capture_output=True)
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 1M 1M", top], check=True, capture_output=True)
    run(vdm.CopyVirtualDisk_Task(sourceName="[datastore1] disks/top.qcow2", destName="[datastore1] disks/flat.vmdk"))
    flat = os.path.join(ds, "disks", "flat.vmdk")
    assert info(flat)["format"] == "qcow2" and "backing-filename" not in info(flat)
    qemu_img("check", "-f", "qcow2", flat)
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", top, flat)
    assert allocated(flat, "qcow2") == 4 * MIB, "zero spans stay unallocated in a thin copy"
    run(vdm.CopyVirtualDisk_Task(sourceName="[datastore1] disks/top.qcow2", destName="[datastore1] disks/raw.vmdk",
                                 destSpec=spec("preallocated", 0)))
    raw = os.path.join(ds, "disks", "raw.vmdk")
    assert info(raw)["format"] == "raw"
    qemu_img("compare", "-f", "qcow2", "-F", "raw", top, raw)
    with pytest.raises(vim.fault.FileAlreadyExists):
        run(vdm.CopyVirtualDisk_Task(sourceName="[datastore1] disks/top.qcow2", destName="[datastore1] disks/raw.vmdk"))
    run(vdm.CopyVirtualDisk_Task(sourceName="[datastore1] disks/thin.vmdk", destName="[datastore1] disks/raw.vmdk",
                                 force=True))
    assert info(raw)["format"] == "qcow2" and info(raw)["virtual-size"] == 16 * MIB

    # Inflate allocates every cluster and keeps the content; zero-fill leaves zeros.
    run(vdm.InflateVirtualDisk_Task(name="[datastore1] disks/flat.vmdk"))
    assert allocated(flat, "qcow2") == 16 * MIB
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", top, flat)
    qemu_img("check", "-f", "qcow2", flat)
    run(vdm.ZeroFillVirtualDisk_Task(name="[datastore1] disks/flat.vmdk"))
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", thin, flat)

    # Move and delete.
    run(vdm.MoveVirtualDisk_Task(sourceName="[datastore1] disks/flat.vmdk", destName="[datastore1] disks/moved.vmdk"))
    assert not os.path.exists(flat) and os.path.exists(os.path.join(ds, "disks", "moved.vmdk"))
    run(vdm.DeleteVirtualDisk_Task(name="[datastore1] disks/moved.vmdk"))
    assert not os.path.exists(os.path.join(ds, "disks", "moved.vmdk"))
    with pytest.raises(vim.fault.FileNotFound):
        run(vdm.DeleteVirtualDisk_Task(name="[datastore1] disks/moved.vmdk"))
    assert [n for n in os.listdir(os.path.join(ds, "disks")) if "vireo-partial" in n] == []


def test_disks_grow_with_their_content_and_never_shrink(server, si):
    vdm = si.content.virtualDiskManager
    ds = server.datastore_dir
    os.makedirs(os.path.join(ds, "grow"), exist_ok=True)
    thin, thick = os.path.join(ds, "grow", "thin.vmdk"), os.path.join(ds, "grow", "thick.vmdk")
    run(vdm.CreateVirtualDisk_Task(name="[datastore1] grow/thin.vmdk", spec=spec("thin", 4 * 1024)))
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", thin], check=True, capture_output=True)
    before = os.path.join(ds, "grow", "before.qcow2")
    qemu_img("convert", "-f", "qcow2", "-O", "qcow2", thin, before)

    run(vdm.ExtendVirtualDisk_Task(name="[datastore1] grow/thin.vmdk", newCapacityKb=96 * 1024))
    assert info(thin)["virtual-size"] == 96 * MIB
    qemu_img("check", "-f", "qcow2", thin)
    # The old content is where it was; qemu-img compare reads the grown tail as zeros.
    qemu_img("compare", "-f", "qcow2", "-F", "qcow2", before, thin)
    assert allocated(thin, "qcow2") == 2 * MIB, "a thin disk stays thin when it grows"

    with pytest.raises(vim.fault.FileFault):
        run(vdm.ExtendVirtualDisk_Task(name="[datastore1] grow/thin.vmdk", newCapacityKb=8 * 1024))
    assert info(thin)["virtual-size"] == 96 * MIB, "a refused shrink changes nothing"
    with pytest.raises(vmodl.fault.InvalidArgument):
        run(vdm.ExtendVirtualDisk_Task(name="[datastore1] grow/thin.vmdk", newCapacityKb=0))

    run(vdm.CreateVirtualDisk_Task(name="[datastore1] grow/thick.vmdk", spec=spec("thick", 1024)))
    run(vdm.ExtendVirtualDisk_Task(name="[datastore1] grow/thick.vmdk", newCapacityKb=4 * 1024, eagerZero=True))
    assert info(thick)["format"] == "raw" and info(thick)["virtual-size"] == 4 * MIB
    assert os.stat(thick).st_blocks * 512 >= 4 * MIB, "eagerZero allocates the new blocks"
    with pytest.raises(vim.fault.FileNotFound):
        run(vdm.ExtendVirtualDisk_Task(name="[datastore1] grow/missing.vmdk", newCapacityKb=1024))


def test_a_disk_keeps_the_uuid_it_is_given(server, si):
    vdm = si.content.virtualDiskManager
    os.makedirs(os.path.join(server.datastore_dir, "uuid"), exist_ok=True)
    run(vdm.CreateVirtualDisk_Task(name="[datastore1] uuid/a.vmdk", spec=spec("thin", 1024)))
    first = vdm.QueryVirtualDiskUuid(name="[datastore1] uuid/a.vmdk")
    assert len(first.replace(" ", "").replace("-", "")) == 32
    assert vdm.QueryVirtualDiskUuid(name="[datastore1] uuid/a.vmdk") == first
    wanted = "60 00 c2 9a 3a 88 5f 44-bd 52 00 9c 3f 15 68 2f"
    vdm.SetVirtualDiskUuid(name="[datastore1] uuid/a.vmdk", uuid=wanted.upper())
    assert vdm.QueryVirtualDiskUuid(name="[datastore1] uuid/a.vmdk") == wanted
    qemu_img("check", "-f", "qcow2", os.path.join(server.datastore_dir, "uuid", "a.vmdk"))
    with pytest.raises(vmodl.fault.InvalidArgument):
        vdm.SetVirtualDiskUuid(name="[datastore1] uuid/a.vmdk", uuid="not-a-uuid")
    run(vdm.CreateVirtualDisk_Task(name="[datastore1] uuid/raw.vmdk", spec=spec("thick", 1024)))
    with pytest.raises(vim.fault.FileFault):
        vdm.QueryVirtualDiskUuid(name="[datastore1] uuid/raw.vmdk")


def test_disk_paths_stay_in_their_datastore(server, si, tmp_path):
    vdm = si.content.virtualDiskManager
    outside = tmp_path / "outside.qcow2"
    qemu_img("create", "-f", "qcow2", str(outside), "1M")
    before = outside.read_bytes()
    os.symlink(tmp_path, os.path.join(server.datastore_dir, "escape"))
    try:
        relative = os.path.relpath(outside, server.datastore_dir)
        for name in [f"[datastore1] {relative}", "[datastore1] escape/outside.qcow2", "[datastore1] ../x.vmdk"]:
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                run(vdm.CopyVirtualDisk_Task(sourceName=name, destName="[datastore1] stolen.vmdk"))
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                run(vdm.CreateVirtualDisk_Task(name=name, spec=spec("thin", 1024)))
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                run(vdm.ZeroFillVirtualDisk_Task(name=name))
            with pytest.raises((vim.fault.InvalidDatastore, vim.fault.FileFault)):
                run(vdm.DeleteVirtualDisk_Task(name=name))
        assert outside.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["outside.qcow2"]
        assert not os.path.exists(os.path.join(server.datastore_dir, "stolen.vmdk"))
    finally:
        os.unlink(os.path.join(server.datastore_dir, "escape"))
