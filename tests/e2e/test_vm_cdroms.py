"""CD-ROM drives through pyVmomi on real test-guest VMs: a VM shows ESXi's two IDE controllers
(keys 200 and 201) beside its paravirtual SCSI controller; ReconfigVM_Task adds a VirtualCdrom
with an ISO image (made here with xorriso) from the datastore in an IDE slot, which the guest
reads as a read-only virtio-blk disk byte for byte (FNV-1a of the whole image, computed in the
guest); on the running VM the medium is swapped, ejected (disconnect: zero bytes) and inserted
again, the guest told each time; a live snapshot and a suspend/resume keep the medium; the drive is
removed again while off. Bad slots, host drives and
ISO paths that leave the datastore are refused with the change's index and change nothing."""
import os
import shutil
import subprocess

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import host_path, connection_to
from test_vm_devices import devices, reconfigure, refused, vmx, vmx_text  # noqa: F401
from test_vm_lifecycle import agent, console, create_vm, power_on_booted, wait_for  # noqa: F401 (fixtures)
from test_vm_snapshots import type_command

pytestmark = [
    pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK),
                       reason="SKIPPED: /dev/kvm is not usable here; these tests boot real guests"),
    pytest.mark.skipif(shutil.which("xorriso") is None,
                       reason="SKIPPED: xorriso is missing (scripts/setup/35-iso-tools.sh installs it)"),
]

SECTOR = 512


si = connection_to("agent")


def make_iso(agent, name, files):
    """Builds `[datastore1] iso/<name>` holding `files` (name -> text); returns its bytes."""
    folder = os.path.join(agent.data_dir, "datastore1", "iso")
    staging = os.path.join(agent.data_dir, f"staging-{name}")
    os.makedirs(folder, exist_ok=True)
    os.makedirs(staging)
    for file, text in files.items():
        with open(os.path.join(staging, file), "w") as f:
            f.write(text)
    target = os.path.join(folder, name)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", name.split(".")[0].upper(),
                    "-o", target, staging], check=True, capture_output=True)
    shutil.rmtree(staging)
    os.chmod(target, 0o644)
    with open(target, "rb") as f:
        return f.read()


def fnv1a(data):
    value = 0xcbf29ce484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001b3) & 0xffffffffffffffff
    return value


def iso_backing(name):
    return vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=f"[datastore1] iso/{name}")


def new_cdrom(backing, controller=201, unit=0, start_connected=True):
    drive = vim.vm.device.VirtualCdrom(
        key=-30, controllerKey=controller, unitNumber=unit, backing=backing,
        connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=start_connected,
                                                            allowGuestControl=True))
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=drive)


def edited(drive, backing=None, connected=None):
    if backing is not None:
        drive.backing = backing
    if connected is not None:
        drive.connectable.connected = connected
    return vim.vm.device.VirtualDeviceSpec(operation="edit", device=drive)


def drive_line(agent, vm, disk):
    """`blk<disk> capacity=<sectors> ro=<0|1> serial=<serial>` as the guest lists it."""
    return type_command(agent, vm, "blk list", f"blk{disk} capacity=")


def guest_sum(agent, vm, disk, sectors):
    line = type_command(agent, vm, f"blk sum {disk} 0 {sectors}", "sum=")
    return int(line.split("=", 1)[1], 16)


def reconfigure_live(agent, vm, change, disk, sectors):
    """Reconfigures the running VM and waits for the guest to announce drive `disk`'s new size."""
    before = len(console(agent, vm))
    reconfigure(vm, change)
    wait_for(lambda: f"blk{disk}: capacity changed to {sectors}\n" in console(agent, vm)[before:],
             f"the guest to see {sectors} sectors on blk{disk}")


def cdroms(vm):
    return devices(vm, vim.vm.device.VirtualCdrom)


def test_vm_shows_esxi_controllers(si, agent):
    vm = create_vm(si, "cd-controllers", disk_kb=1024, nic=False)
    ide = sorted(devices(vm, vim.vm.device.VirtualIDEController), key=lambda c: c.key)
    assert [(c.key, c.busNumber) for c in ide] == [(200, 0), (201, 1)]
    assert [c.key for c in devices(vm, vim.vm.device.ParaVirtualSCSIController)] == [1000]
    assert cdroms(vm) == []


def test_iso_is_read_by_the_guest_swapped_ejected_and_inserted_live(si, agent):
    first = make_iso(agent, "first.iso", {"README.TXT": "vireo first medium\n" * 200})
    second = make_iso(agent, "second.iso", {"OTHER.TXT": "the second medium\n" * 5000})
    assert len(first) != len(second)
    vm = create_vm(si, "cd-live", scenario="shell", disk_kb=16 * 1024, nic=False)
    reconfigure(vm, new_cdrom(iso_backing("first.iso")))
    [drive] = cdroms(vm)
    assert (drive.key, drive.controllerKey, drive.unitNumber) == (3000, 201, 0)
    assert drive.backing.fileName == "[datastore1] iso/first.iso"
    assert drive.connectable.startConnected and not drive.connectable.connected
    assert [c.device for c in devices(vm, vim.vm.device.VirtualIDEController) if c.key == 201] == [[3000]]
    entries = vmx(agent, vm)
    assert entries["ide1:0.present"] == "TRUE" and entries["ide1:0.devicetype"] == "cdrom-image"
    assert entries["ide1:0.filename"] == "[datastore1] iso/first.iso"

    power_on_booted(agent, vm)
    assert cdroms(vm)[0].connectable.connected
    line = drive_line(agent, vm, 1)
    assert line == f"blk1 capacity={len(first) // SECTOR} ro=1 serial=vireo-cd-ide1:0", line
    assert guest_sum(agent, vm, 1, len(first) // SECTOR) == fnv1a(first)
    assert "IOERR" in type_command(agent, vm, "blk write 1 0 1 7", "error: blk1: write")
    assert guest_sum(agent, vm, 1, len(first) // SECTOR) == fnv1a(first), "the guest cannot change the medium"

    # Another medium while running: the guest is told the new size and reads the new bytes.
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], backing=iso_backing("second.iso"), connected=True),
                     1, len(second) // SECTOR)
    assert guest_sum(agent, vm, 1, len(second) // SECTOR) == fnv1a(second)
    assert vmx(agent, vm)["ide1:0.filename"] == "[datastore1] iso/second.iso"

    # Disconnect: the drive is empty (zero bytes); the .vmx keeps the image; connect puts it back.
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], connected=False), 1, 0)
    assert not cdroms(vm)[0].connectable.connected
    assert vmx(agent, vm)["ide1:0.filename"] == "[datastore1] iso/second.iso"
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], connected=True), 1, len(second) // SECTOR)
    assert cdroms(vm)[0].connectable.connected
    assert guest_sum(agent, vm, 1, len(second) // SECTOR) == fnv1a(second)

    # A live snapshot (hard disks closed and reopened under the VM) and a suspend/resume leave
    # the medium in the drive.
    WaitForTask(vm.CreateSnapshot_Task(name="with-cd", memory=False, quiesce=False))
    assert guest_sum(agent, vm, 1, len(second) // SECTOR) == fnv1a(second)
    WaitForTask(vm.SuspendVM_Task())
    WaitForTask(vm.PowerOnVM_Task())
    assert guest_sum(agent, vm, 1, len(second) // SECTOR) == fnv1a(second)
    assert cdroms(vm)[0].connectable.connected

    # Drives are not hot-plugged: that changes nothing.
    before = vmx_text(agent, vm)
    fault = refused(vm, vim.fault.DeviceHotPlugNotSupported, new_cdrom(iso_backing("first.iso"), unit=1))
    assert fault.deviceIndex == 0
    refused(vm, vim.fault.DeviceHotPlugNotSupported,
            vim.vm.device.VirtualDeviceSpec(operation="remove", device=cdroms(vm)[0]))
    assert vmx_text(agent, vm) == before
    assert guest_sum(agent, vm, 1, len(second) // SECTOR) == fnv1a(second)
    # A medium from any folder of the datastore goes in while the VM runs: vireod hands the
    # image to the VMM open (its jail shows no media folders).
    elsewhere = os.path.join(agent.data_dir, "datastore1", "elsewhere")
    os.makedirs(elsewhere)
    shutil.copy(host_path(agent, "[datastore1] iso/first.iso"), elsewhere)
    other = vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName="[datastore1] elsewhere/first.iso")
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], backing=other, connected=True), 1, len(first) // SECTOR)
    assert guest_sum(agent, vm, 1, len(first) // SECTOR) == fnv1a(first)

    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.RemoveAllSnapshots_Task())
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="remove", device=cdroms(vm)[0]))
    assert cdroms(vm) == [] and not any(k.startswith("ide1:0.") for k in vmx(agent, vm))
    assert os.path.isfile(host_path(agent, "[datastore1] iso/second.iso"))


def test_empty_and_disconnected_drives_hold_no_medium(si, agent):
    make_iso(agent, "third.iso", {"A.TXT": "a\n"})
    vm = create_vm(si, "cd-empty", scenario="shell", disk_kb=1024, nic=False)
    client = vim.vm.device.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False)
    reconfigure(vm, new_cdrom(client, controller=200, unit=0),
                new_cdrom(iso_backing("third.iso"), controller=200, unit=1, start_connected=False))
    drives = cdroms(vm)
    assert [(d.key, d.controllerKey, d.unitNumber) for d in drives] == [(3000, 200, 0), (3001, 200, 1)]
    assert isinstance(drives[0].backing, vim.vm.device.VirtualCdrom.RemotePassthroughBackingInfo)
    assert vmx(agent, vm)["ide0:0.devicetype"] == "atapi-cdrom"
    assert vmx(agent, vm)["ide0:1.startconnected"] == "FALSE"
    power_on_booted(agent, vm)
    assert drive_line(agent, vm, 1) == "blk1 capacity=0 ro=1 serial=vireo-cd-ide0:0"
    assert drive_line(agent, vm, 2) == "blk2 capacity=0 ro=1 serial=vireo-cd-ide0:1"
    assert not any(d.connectable.connected for d in cdroms(vm))
    # Connecting the drive that has an image inserts it.
    size = os.path.getsize(host_path(agent, "[datastore1] iso/third.iso"))
    reconfigure_live(agent, vm, edited(cdroms(vm)[1], connected=True), 2, size // SECTOR)
    WaitForTask(vm.PowerOffVM_Task())


def test_bad_drives_and_paths_are_refused_and_change_nothing(si, agent):
    make_iso(agent, "good.iso", {"G.TXT": "g\n"})
    vm = create_vm(si, "cd-faults", disk_kb=1024, nic=False)
    reconfigure(vm, new_cdrom(iso_backing("good.iso"), controller=200, unit=0))
    before = vmx_text(agent, vm)

    # Slots: a taken one, a unit IDE has not, a controller CD-ROMs do not sit on.
    fault = refused(vm, vim.fault.InvalidDeviceSpec, new_cdrom(iso_backing("good.iso"), controller=201),
                    new_cdrom(iso_backing("good.iso"), controller=200, unit=0))
    assert fault.deviceIndex == 1
    refused(vm, vim.fault.InvalidDeviceSpec, new_cdrom(iso_backing("good.iso"), unit=2))
    fault = refused(vm, vim.fault.InvalidController, new_cdrom(iso_backing("good.iso"), controller=1000))
    assert fault.deviceIndex == 0
    # A host drive cannot be passed through; a missing image is FileNotFound.
    host_drive = vim.vm.device.VirtualCdrom.AtapiBackingInfo(deviceName="/dev/sr0")
    refused(vm, vim.fault.InvalidDeviceBacking, new_cdrom(host_drive))
    refused(vm, vim.fault.FileNotFound, new_cdrom(iso_backing("missing.iso")))
    # Four IDE slots, no more.
    refused(vm, vim.fault.InvalidDeviceSpec, *[new_cdrom(iso_backing("good.iso"), controller=-1) for _ in range(4)])

    # Paths that leave the datastore, by name or through a symlink, are refused.
    outside = os.path.join(agent.data_dir, "outside-iso")
    os.makedirs(outside)
    with open(os.path.join(outside, "o.iso"), "wb") as f:
        f.write(b"\0" * 4096)
    store = os.path.join(agent.data_dir, "datastore1")
    os.symlink(os.path.join(outside, "o.iso"), os.path.join(store, "escape.iso"))
    os.symlink(outside, os.path.join(store, "escape-iso-dir"))
    for name in ["[datastore1] ../outside-iso/o.iso", "[datastore1] escape.iso", "[datastore1] escape-iso-dir/o.iso",
                 "[datastore1] /etc/hostname", "/etc/hostname", "../../outside-iso/o.iso", "[nosuchstore] o.iso",
                 "[datastore1] iso"]:
        backing = vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=name)
        with pytest.raises(vmodl.MethodFault):
            reconfigure(vm, new_cdrom(backing, controller=201))
        with pytest.raises(vmodl.MethodFault):
            reconfigure(vm, edited(cdroms(vm)[0], backing=backing))
    assert vmx_text(agent, vm) == before
    assert [d.backing.fileName for d in cdroms(vm)] == ["[datastore1] iso/good.iso"]


def sata_controller(key=-50):
    return vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.VirtualAHCIController(
        key=key, busNumber=0))


def test_a_cdrom_on_the_sata_controller_works_like_the_ide_one(si, agent):
    """The SATA controller (added in the same spec, named by its temporary key) takes a CD-ROM
    in a unit its disks share; the guest reads the medium, which is swapped and ejected live;
    the unit is refused to a disk, and the controller cannot go while the drive is on it."""
    first = make_iso(agent, "sata-first.iso", {"S.TXT": "on sata\n" * 400})
    second = make_iso(agent, "sata-second.iso", {"T.TXT": "second on sata\n" * 3000})
    vm = create_vm(si, "cd-sata", scenario="shell", disk_kb=16 * 1024, nic=False)
    # No SATA controller yet: a drive cannot sit on it.
    refused(vm, vim.fault.InvalidDeviceSpec, new_cdrom(iso_backing("sata-first.iso"), controller=15000, unit=0))
    reconfigure(vm, sata_controller(), new_cdrom(iso_backing("sata-first.iso"), controller=-50, unit=3))
    [drive] = cdroms(vm)
    assert (drive.key, drive.controllerKey, drive.unitNumber) == (3000, 15000, 3)
    [ahci] = devices(vm, vim.vm.device.VirtualAHCIController)
    assert ahci.key == 15000 and list(ahci.device) == [3000]
    assert all(not c.device for c in devices(vm, vim.vm.device.VirtualIDEController))
    entries = vmx(agent, vm)
    assert entries["sata0.present"] == "TRUE" and entries["sata0:3.devicetype"] == "cdrom-image"
    assert entries["sata0:3.filename"] == "[datastore1] iso/sata-first.iso"
    assert not any(k.startswith("ide") for k in entries)

    # Its unit is taken for disks and other drives; a unit SATA has not is refused; the
    # controller stays while the drive is on it. Nothing changes.
    before = vmx_text(agent, vm)
    disk = vim.vm.device.VirtualDisk(
        key=-10, controllerKey=15000, unitNumber=3, capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName="", diskMode="persistent"))
    fault = refused(vm, vim.fault.InvalidDeviceSpec,
                    vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    assert fault.deviceIndex == 0
    refused(vm, vim.fault.InvalidDeviceSpec, new_cdrom(iso_backing("sata-first.iso"), controller=15000, unit=3))
    refused(vm, vim.fault.InvalidDeviceSpec, new_cdrom(iso_backing("sata-first.iso"), controller=15000, unit=30))
    refused(vm, vim.fault.InvalidDeviceSpec, vim.vm.device.VirtualDeviceSpec(operation="remove", device=ahci))
    assert vmx_text(agent, vm) == before
    # A disk added to the controller without a unit takes the first free one.
    disk.unitNumber = None
    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    assert sorted(devices(vm, vim.vm.device.VirtualAHCIController)[0].device) == [2001, 3000]
    assert vmx(agent, vm)["disk1.slot"] == "sata0:0"

    power_on_booted(agent, vm)
    assert cdroms(vm)[0].connectable.connected
    # blk0 and blk1 are the disks, blk2 the CD-ROM.
    line = drive_line(agent, vm, 2)
    assert line == f"blk2 capacity={len(first) // SECTOR} ro=1 serial=vireo-cd-sata0:3", line
    assert guest_sum(agent, vm, 2, len(first) // SECTOR) == fnv1a(first)
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], backing=iso_backing("sata-second.iso"), connected=True),
                     2, len(second) // SECTOR)
    assert guest_sum(agent, vm, 2, len(second) // SECTOR) == fnv1a(second)
    reconfigure_live(agent, vm, edited(cdroms(vm)[0], connected=False), 2, 0)
    assert vmx(agent, vm)["sata0:3.filename"] == "[datastore1] iso/sata-second.iso"
    WaitForTask(vm.PowerOffVM_Task())

    reconfigure(vm, vim.vm.device.VirtualDeviceSpec(operation="remove", device=cdroms(vm)[0]))
    assert cdroms(vm) == [] and not any(k.startswith("sata0:3") for k in vmx(agent, vm))
    assert list(devices(vm, vim.vm.device.VirtualAHCIController)[0].device) == [2001]
