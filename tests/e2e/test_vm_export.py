"""Exporting a VM the way a stock pyVmomi export script does: VirtualMachine.ExportVm → an
HttpNfcLease that becomes ready, each deviceUrl downloaded over HTTPS with the session cookie
while a thread reports HttpNfcLeaseProgress, OvfManager.CreateDescriptor with the downloaded
files, HttpNfcLeaseComplete. The downloads are streamOptimized VMDKs generated from the disks'
qcow2 chains: qemu-img checks them and finds them identical to the VM's disks. Then the lease's
faults and refusals: no power-on while the lease is open, no cookie, another user without VApp.Export, unknown leases and files,
URLs after the lease ended, abort."""
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import host_path, own_vireod

BIN_DIR = os.environ.get("VIREO_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug"))
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


# A vireod of this module's own (the VMs made here stay out of other tests' inventory); conftest's
# `si` connects to it.
vireod = own_vireod()


def create_vm(si, name, disk_kbs):
    spec = vim.vm.ConfigSpec(name=name, guestId="otherLinux64Guest", numCPUs=2, memoryMB=128,
                             annotation=f"exported {name}", files=vim.vm.FileInfo(vmPathName="[datastore1]"),
                             extraConfig=[vim.option.OptionValue(key="guestinfo.role", value="web")])
    changes = [vim.vm.device.VirtualDeviceSpec(operation="add", device=vim.vm.device.ParaVirtualSCSIController(
        key=1000, busNumber=0, sharedBus="noSharing"))]
    for n, kb in enumerate(disk_kbs):
        disk = vim.vm.device.VirtualDisk(key=-1 - n, controllerKey=1000, unitNumber=n, capacityInKB=kb,
                                         backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                                             diskMode="persistent", thinProvisioned=True))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    card = vim.vm.device.VirtualE1000(key=-10, backing=vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
        deviceName="VM Network"))
    changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", device=card))
    spec.deviceChange = changes
    datacenter = si.content.rootFolder.childEntity[0]
    task = datacenter.vmFolder.CreateVM_Task(config=spec, pool=datacenter.hostFolder.childEntity[0].resourcePool)
    WaitForTask(task)
    return task.info.result


def disks(vm):
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def vdisk_write(path, offset, length, pattern):
    subprocess.run([os.path.join(BIN_DIR, "vdisk"), "write", path, "--offset", str(offset), "--length", str(length),
                    "--pattern", pattern], check=True, capture_output=True)


def qemu_img(*args):
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def wait_for_state(lease, wanted):
    deadline = time.monotonic() + 60
    while lease.state not in (wanted, "error"):
        assert time.monotonic() < deadline, f"lease still {lease.state}"
        time.sleep(0.1)
    assert lease.state == wanted, lease.error


def get(vireod, url, cookie=None):
    """(status, body) of a GET on the lease URL `url` (host '*' is this vireod)."""
    url = url.replace("*", vireod.host)
    headers = {"Cookie": cookie} if cookie else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class LeaseProgressUpdater(threading.Thread):
    """Reports progress every second until stopped, as the pyVmomi community sample does."""

    def __init__(self, lease):
        super().__init__(daemon=True)
        self.lease = lease
        self.percent = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1):
            self.lease.HttpNfcLeaseProgress(self.percent)


def test_a_stock_export_script_downloads_identical_disks_and_a_descriptor(vireod, si, tmp_path):
    vm = create_vm(si, "export-me", [16384, 8192])
    files = [host_path(vireod, d.backing.fileName) for d in disks(vm)]
    vdisk_write(files[0], 0, 1 << 20, "0x5a")
    vdisk_write(files[1], 4 << 20, 65536, "0x6b")
    # A snapshot, then more data in the new top layer: the export reads through the chain.
    WaitForTask(vm.CreateSnapshot_Task(name="before", memory=False, quiesce=False))
    top = host_path(vireod, disks(vm)[0].backing.fileName)
    assert top != files[0]
    vdisk_write(top, 8 << 20, 65536, "0x7c")

    lease = vm.ExportVm()
    wait_for_state(lease, "ready")
    info = lease.info
    assert info.entity == vm and info.lease == lease
    assert info.totalDiskCapacityInKB == 16384 + 8192
    assert info.leaseTimeout == 300
    urls = list(info.deviceUrl)
    assert [u.targetId for u in urls] == ["disk-0.vmdk", "disk-1.vmdk"]
    assert all(u.disk and u.url.startswith(f"https://*:{vireod.port}/nfc/") and u.fileSize is None for u in urls)

    updater = LeaseProgressUpdater(lease)
    updater.start()
    ovf_files = []
    for n, url in enumerate(urls):
        status, body = get(vireod, url.url, si._stub.cookie)
        assert status == 200, body
        target = tmp_path / url.targetId
        target.write_bytes(body)
        ovf_files.append(vim.OvfManager.OvfFile(deviceId=url.key, path=url.targetId, size=len(body)))
        updater.percent = 50 * (n + 1)
    cdp = vim.OvfManager.CreateDescriptorParams(name=vm.name, description="exported by the e2e test",
                                                ovfFiles=ovf_files)
    descriptor = si.content.ovfManager.CreateDescriptor(obj=vm, cdp=cdp)
    assert not descriptor.error
    updater.stop.set()
    updater.join()
    sizes = [u.fileSize for u in lease.info.deviceUrl]
    assert sizes == [f.size for f in ovf_files]
    lease.HttpNfcLeaseComplete()
    assert lease.state == "done"

    for n, url in enumerate(urls):
        download = str(tmp_path / url.targetId)
        info = qemu_img("info", download)
        assert "streamOptimized" in info.stdout, info.stdout
        check = qemu_img("check", download)
        assert check.returncode == 0, check.stdout + check.stderr
        current = host_path(vireod, disks(vm)[n].backing.fileName)
        compare = qemu_img("compare", download, current)
        assert compare.returncode == 0, compare.stdout + compare.stderr
    # The first disk's snapshot-time layer is not what was exported: the chain's top is.
    assert qemu_img("compare", str(tmp_path / "disk-0.vmdk"), files[0]).returncode == 1

    envelope = ET.fromstring(descriptor.ovfDescriptor)
    refs = {f.get(f"{OVF}id"): f for f in envelope.iter(f"{OVF}File")}
    assert sorted(f.get(f"{OVF}href") for f in refs.values()) == ["disk-0.vmdk", "disk-1.vmdk"]
    assert [int(f.get(f"{OVF}size")) for f in sorted(refs.values(), key=lambda f: f.get(f"{OVF}href"))] == sizes
    ovf_disks = list(envelope.iter(f"{OVF}Disk"))
    assert [int(d.get(f"{OVF}capacity")) for d in ovf_disks] == [16384 * 1024, 8192 * 1024]
    assert all(d.get(f"{OVF}format").endswith("#streamOptimized") for d in ovf_disks)
    populated = [int(d.get(f"{OVF}populatedSize")) for d in ovf_disks]
    assert populated[0] >= (1 << 20) + 65536 and populated[1] >= 65536
    assert [n.get(f"{OVF}name") for n in envelope.iter(f"{OVF}Network")] == ["VM Network"]
    assert envelope.find(f".//{OVF}Annotation").text == "exported by the e2e test"
    types = [item.find(f"{RASD}ResourceType").text for item in envelope.iter(f"{OVF}Item")]
    assert types.count("17") == 2 and types.count("10") == 1 and "3" in types and "4" in types
    quantities = {item.find(f"{RASD}ResourceType").text: item.find(f"{RASD}VirtualQuantity")
                  for item in envelope.iter(f"{OVF}Item")}
    assert quantities["3"].text == "2" and quantities["4"].text == "128"
    extra = [(e.get("{http://www.vmware.com/schema/ovf}key"), e.get("{http://www.vmware.com/schema/ovf}value"))
             for e in envelope.iter("{http://www.vmware.com/schema/ovf}ExtraConfig")]
    assert extra == [("guestinfo.role", "web")]


def test_lease_urls_refuse_strangers_and_end_with_the_lease(vireod, si):
    vm = create_vm(si, "export-guarded", [4096])
    lease = vm.ExportVm()
    wait_for_state(lease, "ready")
    with pytest.raises(vim.fault.InvalidState):
        vm.PowerOnVM_Task()
    url = lease.info.deviceUrl[0].url
    lease_id = url.split("/")[4]
    assert get(vireod, url)[0] == 401
    base = f"https://*:{vireod.port}/nfc/{lease_id}/"
    for name in ["disk-7.vmdk", "..%2F..%2Fe2e-vm%2Fe2e-vm.vmx", "../../folder/e2e-vm/e2e-vm.vmx", ""]:
        assert get(vireod, base + name, si._stub.cookie)[0] == 404, name
    assert get(vireod, f"https://*:{vireod.port}/nfc/52-no-such-lease/disk-0.vmdk", si._stub.cookie)[0] == 404

    # A user without VApp.Export on the VM gets nothing.
    spec = vim.host.LocalAccountManager.AccountSpecification(id="exportless", password="Exportless-pass-1")
    si.content.accountManager.CreateUser(spec)
    permission = vim.AuthorizationManager.Permission(principal="exportless", group=False, roleId=-2, propagate=True)
    si.content.authorizationManager.SetEntityPermissions(vm, [permission])
    reader = vireod.connect("exportless", "Exportless-pass-1")
    assert get(vireod, url, reader._stub.cookie)[0] == 403

    status, body = get(vireod, url, si._stub.cookie)
    assert status == 200 and body[:4] == b"KDMV"
    lease.HttpNfcLeaseComplete()
    assert get(vireod, url, si._stub.cookie)[0] == 404
    with pytest.raises(vim.fault.InvalidState):
        lease.HttpNfcLeaseComplete()

    aborted = vm.ExportVm()
    wait_for_state(aborted, "ready")
    aborted.HttpNfcLeaseAbort()
    assert aborted.state == "error" and isinstance(aborted.error, vmodl.fault.RequestCanceled)
    with pytest.raises(vim.fault.InvalidState):
        aborted.HttpNfcLeaseProgress(10)
    assert get(vireod, aborted.info.deviceUrl[0].url, si._stub.cookie)[0] == 404
