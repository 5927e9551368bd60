"""Importing OVF packages the way stock clients do: OvfManager.ParseDescriptor, ValidateHost and
CreateImportSpec on descriptors in the form ESXi exports (and hostile ones: entity expansion,
file names that climb out of the package, absurd capacities), then ResourcePool.ImportVApp and
the disk uploads through the lease, as the pyVmomi community's deploy_ova.py does them: an OVA
built by hand from a qemu-img streamOptimized VMDK, and the round trip of an exported VM that
then boots and finds its data. Then what must leave nothing behind (abort mid-upload, a lease
that times out) and what the lease URLs refuse."""
import hashlib
import io
import http.client
import os
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse

import pytest
from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from conftest import host_path, start_vireod
from test_vm_lifecycle import KERNEL, Agent, config_spec, power_on_booted, root_pool
from test_vm_snapshots import type_command

STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def descriptor(name="tiny", disks=((("tiny-disk1.vmdk", 68096), 2 << 30),), network="Lab", extra=(),
               families="vmx-13 vmx-19", head="", disk_format=STREAM_OPTIMIZED):
    """An OVF envelope as ESXi writes it: `disks` are ((href, size) or None, capacity in bytes)."""
    files, disk_section, items = [], [], []
    instance = 5
    for n, (file, capacity) in enumerate(disks):
        ref = ""
        if file:
            files.append(f'<File ovf:href="{file[0]}" ovf:id="file{n + 1}" ovf:size="{file[1]}"/>')
            ref = f' ovf:fileRef="file{n + 1}"'
        disk_section.append(f'<Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" '
                            f'ovf:diskId="vmdisk{n + 1}"{ref} ovf:format="{disk_format}"/>')
        items.append(f"<Item><rasd:AddressOnParent>{n}</rasd:AddressOnParent><rasd:ElementName>Hard disk {n + 1}"
                     f"</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk{n + 1}</rasd:HostResource>"
                     f"<rasd:InstanceID>{instance}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>"
                     "<rasd:ResourceType>17</rasd:ResourceType></Item>")
        instance += 1
    extra_config = "".join(f'<vmw:ExtraConfig ovf:required="false" vmw:key="{k}" vmw:value="{v}"/>'
                           for k, v in extra)
    return f"""<?xml version="1.0" encoding="UTF-8"?>{head}
<Envelope vmw:buildId="build-24022510" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>{"".join(files)}</References>
  <DiskSection><Info>Virtual disk information</Info>{"".join(disk_section)}</DiskSection>
  <NetworkSection><Info>The list of logical networks</Info>
    <Network ovf:name="{network}"><Description>The {network} network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <AnnotationSection><Info>A human-readable annotation</Info><Annotation>made by hand</Annotation></AnnotationSection>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest"><Info>The operating system</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>{families}</vssd:VirtualSystemType></System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>96MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>96</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SCSI controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>Floppy drive 1</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>14</rasd:ResourceType></Item>
      {"".join(items)}
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>{network}</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>{instance}</rasd:InstanceID><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      {extra_config}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"""


@pytest.fixture(scope="module")
def agent():
    """A vireod of this module's own (with the test guest on its datastore): the VMs imported
    here stay out of other tests' inventory."""
    a = Agent()
    yield a
    a.close()


@pytest.fixture(scope="module")
def vireod(agent):
    return agent.vireod


@pytest.fixture
def si(vireod):
    connection = vireod.connect()
    yield connection
    Disconnect(connection)


def placement(si):
    datacenter = si.content.rootFolder.childEntity[0]
    pool = datacenter.hostFolder.childEntity[0].resourcePool
    return datacenter, pool, datacenter.datastore[0]


def vm_network(si):
    datacenter = si.content.rootFolder.childEntity[0]
    return next(n for n in datacenter.network if n.name == "VM Network")


def fault_types(faults):
    return sorted(type(f).__name__.split(".")[-1] for f in faults or [])


def test_parse_validate_and_create_import_spec_of_an_esxi_style_descriptor(si):
    ovf = si.content.ovfManager
    text = descriptor(disks=((("tiny-disk1.vmdk", 68096), 2 << 30), (None, 1 << 20)),
                      extra=[("guestinfo.role", "db"), ("vireo.boot.kernel", "/etc/shadow")])
    parsed = ovf.ParseDescriptor(text, vim.OvfManager.ParseDescriptorParams())
    assert not parsed.error
    assert parsed.defaultEntityName == "tiny" and parsed.annotation == "made by hand"
    assert [n.name for n in parsed.network] == ["Lab"]
    assert parsed.approximateDownloadSize == 68096
    assert parsed.approximateFlatDeploymentSize == (2 << 30) + (1 << 20)
    assert fault_types(parsed.warning) == ["OvfUnsupportedAttributeValue", "OvfUnsupportedType"]
    assert all(w.msg for w in parsed.warning)

    _, pool, datastore = placement(si)
    host = si.content.rootFolder.childEntity[0].hostFolder.childEntity[0].host[0]
    validated = ovf.ValidateHost(text, host, vim.OvfManager.ValidateHostParams())
    assert not validated.error and validated.downloadSize == 68096
    assert list(validated.supportedDiskProvisioning) == ["thin"]

    params = vim.OvfManager.CreateImportSpecParams(
        entityName="tiny-imported", diskProvisioning="thin",
        networkMapping=[vim.OvfManager.NetworkMapping(name="Lab", network=vm_network(si))])
    result = ovf.CreateImportSpec(text, pool, datastore, params)
    assert not result.error
    assert fault_types(result.warning) == ["OvfUnsupportedAttributeValue", "OvfUnsupportedType"]
    config = result.importSpec.configSpec
    assert (config.name, config.numCPUs, config.memoryMB, config.guestId) == ("tiny-imported", 2, 96, "otherLinux64Guest")
    assert config.version == "vmx-19" and config.annotation == "made by hand"
    assert [(o.key, o.value) for o in config.extraConfig] == [("guestinfo.role", "db")]
    devices = [c.device for c in config.deviceChange]
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [d.capacityInBytes for d in disks] == [2 << 30, 1 << 20]
    assert all(c.fileOperation == "create" for c in config.deviceChange if isinstance(c.device, vim.vm.device.VirtualDisk))
    nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert len(nics) == 1 and isinstance(nics[0], vim.vm.device.VirtualE1000)
    assert nics[0].backing.deviceName == "VM Network"
    assert [(f.path, f.size, f.create) for f in result.fileItem] == [("tiny-disk1.vmdk", 68096, False)]
    assert result.fileItem[0].deviceId == "/tiny-imported/ParaVirtualSCSIController0:0"

    thick = ovf.CreateImportSpec(text, pool, datastore, vim.OvfManager.CreateImportSpecParams(diskProvisioning="eagerZeroedThick"))
    assert not thick.error and "OvfUnsupportedDiskProvisioning" in fault_types(thick.warning)
    assert thick.importSpec.configSpec.name == "tiny"
    unknown = ovf.CreateImportSpec(text, pool, datastore, vim.OvfManager.CreateImportSpecParams(diskProvisioning="magic"))
    assert fault_types(unknown.error) == ["OvfUnsupportedDiskProvisioning"] and unknown.importSpec is None


def test_hostile_descriptors_are_reported_and_never_obeyed(vireod, si):
    ovf = si.content.ovfManager
    _, pool, datastore = placement(si)
    params = vim.OvfManager.CreateImportSpecParams()
    laughs = ('<!DOCTYPE Envelope [<!ENTITY a "aaaaaaaaaaaaaaaaaaaa">'
              + "".join(f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">' for n in range(9))
              + "]>")
    cases = {
        "entity expansion": (descriptor(name="&j;", head=laughs), "OvfXmlFormat"),
        "external entity": (descriptor(head='<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'), "OvfXmlFormat"),
        "parent folder": (descriptor(disks=((("../../../etc/passwd", 100), 1 << 20),)), "OvfInvalidValue"),
        "absolute path": (descriptor(disks=((("/etc/shadow", 100), 1 << 20),)), "OvfInvalidValue"),
        "huge capacity": (descriptor(disks=((("d.vmdk", 100), 1 << 62),)), "OvfUnsupportedAttributeValue"),
        "no hardware family": (descriptor(families="virtualbox-2.2"), "OvfNoSupportedHardwareFamily"),
        "bad name": (descriptor(name="../escape"), "OvfInvalidVmName"),
    }
    for what, (text, fault) in cases.items():
        result = ovf.CreateImportSpec(text, pool, datastore, params)
        assert fault_types(result.error) == [fault], what
        assert result.importSpec is None and not result.fileItem, what
        parsed = ovf.ParseDescriptor(text, vim.OvfManager.ParseDescriptorParams())
        assert fault in fault_types(parsed.error), what
    with pytest.raises(vim.fault.InvalidDatastore):
        ovf.CreateImportSpec(descriptor(), pool, vim.Datastore("no-such-store", si._stub), params)
    assert si.content.about.name  # still serving


# --- A stock deploy script (the pyVmomi community sample deploy_ova.py, condensed) ----------

def upload(vireod, url, stream, size, method="POST", cookie=None, chunk=1 << 20, headers=None):
    """Sends `size` bytes of `stream` to a lease URL (host '*' is this vireod) as the sample does;
    returns (status, body). Without `size` the body goes chunked."""
    parts = urllib.parse.urlsplit(url.replace("*", vireod.host))
    connection = http.client.HTTPSConnection(parts.hostname, parts.port,
                                             context=ssl._create_unverified_context(), timeout=120)
    try:
        connection.putrequest(method, parts.path)
        connection.putheader("Content-Type", "application/x-vnd.vmware-streamVmdk")
        if size is not None:
            connection.putheader("Content-Length", str(size))
        else:
            connection.putheader("Transfer-Encoding", "chunked")
        if cookie:
            connection.putheader("Cookie", cookie)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            while True:
                data = stream.read(chunk)
                if not data:
                    break
                connection.send(data if size is not None else b"%x\r\n%s\r\n" % (len(data), data))
            if size is None:
                connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(lease):
    deadline = time.monotonic() + 60
    while lease.state == "initializing":
        assert time.monotonic() < deadline, "lease still initializing"
        time.sleep(0.1)
    assert lease.state == "ready", lease.error


def deploy(si, vireod, ovf_text, open_file, name=None):
    """Deploys a package: `open_file(path)` gives (stream, size) of a package file. Returns the
    new VM and the sizes uploaded."""
    datacenter, pool, datastore = placement(si)
    params = vim.OvfManager.CreateImportSpecParams(entityName=name or "", diskProvisioning="thin")
    spec = si.content.ovfManager.CreateImportSpec(ovf_text, pool, datastore, params)
    assert not spec.error, [e.msg for e in spec.error]
    lease = pool.ImportVApp(spec.importSpec, datacenter.vmFolder)
    wait_ready(lease)
    sent = []
    for item in spec.fileItem:
        url = next(u.url for u in lease.info.deviceUrl if u.importKey == item.deviceId)
        stream, size = open_file(item.path)
        status, body = upload(vireod, url, stream, size, cookie=si._stub.cookie)
        assert status == 200, body
        sent.append(size)
        lease.HttpNfcLeaseProgress(int(100 * len(sent) / len(spec.fileItem)))
    lease.HttpNfcLeaseComplete()
    assert lease.state == "done"
    return lease.info.entity, lease


def write_pattern(path, size, chunks):
    """A raw image of `size` bytes with `chunks` [(offset, length, byte)] of data."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length, byte in chunks:
            f.seek(offset)
            f.write(bytes([byte]) * length)


def stream_optimized(raw, vmdk):
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk],
                   check=True, capture_output=True)


def qemu_compare(a, b):
    return subprocess.run(["qemu-img", "compare", a, b], capture_output=True, text=True)


def vm_disks(vm):
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def make_ova(tmp_path, name, disk_size):
    """An OVA built by hand: a qemu-img streamOptimized VMDK of a patterned raw disk and an
    OVF descriptor in the form ESXi exports, descriptor first. Returns (ova, raw)."""
    raw = str(tmp_path / f"{name}.raw")
    write_pattern(raw, disk_size, [(0, 65536, 0x11), (disk_size // 2, 3 << 20, 0x22), (disk_size - 4096, 4096, 0x33)])
    vmdk = str(tmp_path / f"{name}-disk1.vmdk")
    stream_optimized(raw, vmdk)
    ovf = tmp_path / f"{name}.ovf"
    ovf.write_text(descriptor(name=name, disks=(((f"{name}-disk1.vmdk", os.path.getsize(vmdk)), disk_size),),
                              network="VM Network"))
    ova = str(tmp_path / f"{name}.ova")
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.add(str(ovf), arcname=ovf.name)
        tar.add(vmdk, arcname=os.path.basename(vmdk))
    return ova, raw


def test_an_ova_built_by_hand_deploys_through_a_stock_script(vireod, si, tmp_path):
    ova, raw = make_ova(tmp_path, "hand-made", 16 << 20)
    with tarfile.open(ova) as tar:
        ovf_text = tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".ovf"))).read().decode()

        def member(path):
            info = tar.getmember(path)
            return tar.extractfile(info), info.size

        vm, lease = deploy(si, vireod, ovf_text, member)
    assert vm.name == "hand-made" and vm.runtime.powerState == "poweredOff"
    hardware = vm.config.hardware
    assert (hardware.numCPU, hardware.memoryMB) == (2, 96)
    assert vm.config.annotation == "made by hand"
    disks = vm_disks(vm)
    assert [d.capacityInBytes for d in disks] == [16 << 20]
    assert [n.backing.deviceName for n in hardware.device if isinstance(n, vim.vm.device.VirtualEthernetCard)] == ["VM Network"]
    compare = qemu_compare(raw, host_path(vireod, disks[0].backing.fileName))
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert [u.fileSize for u in lease.info.deviceUrl] == [os.path.getsize(str(tmp_path / "hand-made-disk1.vmdk"))]
    WaitForTask(vm.Destroy_Task())


@pytest.mark.parametrize("subformat", ["monolithicFlat", "monolithicSparse"])
def test_flat_and_sparse_vmdks_deploy_as_they_stream(vireod, si, tmp_path, subformat):
    """A package whose disk qemu-img wrote as a flat VMDK (the package carries its extent, the
    disk's bytes) or as a monolithicSparse VMDK: the stock script uploads that file as it is and
    the disk becomes identical to the source; nothing is left beside it."""
    name = f"{subformat.lower()}-import"
    disk_size = 24 << 20
    raw = str(tmp_path / f"{name}.raw")
    write_pattern(raw, disk_size, [(0, 512, 0x44), (5 << 20, 1 << 20, 0x55), (disk_size - 512, 512, 0x66)])
    with open(raw, "r+b") as f:
        f.seek(9 << 20)
        f.write(os.urandom(3 << 20))
    vmdk = str(tmp_path / f"{name}.vmdk")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}", raw, vmdk],
                   check=True, capture_output=True)
    sent = str(tmp_path / f"{name}-flat.vmdk") if subformat == "monolithicFlat" else vmdk
    assert qemu_compare(raw, vmdk).returncode == 0
    fmt = "http://www.vmware.com/interfaces/specifications/vmdk.html#" + (
        "monolithicFlat" if subformat == "monolithicFlat" else "sparse")
    text = descriptor(name=name, disks=(((os.path.basename(sent), os.path.getsize(sent)), disk_size),),
                      network="VM Network", disk_format=fmt)
    vm, lease = deploy(si, vireod, text, lambda path: (open(str(tmp_path / path), "rb"), os.path.getsize(sent)))
    disks = vm_disks(vm)
    assert [d.capacityInBytes for d in disks] == [disk_size]
    image = host_path(vireod, disks[0].backing.fileName)
    compare = qemu_compare(raw, image)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    info = subprocess.run(["qemu-img", "info", "--output=json", image], capture_output=True, text=True, check=True)
    assert '"format": "qcow2"' in info.stdout
    assert [u.fileSize for u in lease.info.deviceUrl] == [os.path.getsize(sent)]
    assert sorted(os.listdir(os.path.join(vireod.datastore_dir, name))) == sorted(
        [f"{name}.vmx", os.path.basename(image)]), os.listdir(os.path.join(vireod.datastore_dir, name))
    WaitForTask(vm.Destroy_Task())


class HeldStream:
    """A file whose reading stops after `first` bytes until `go` is set (a client mid-upload)."""

    def __init__(self, path, first):
        self.f = open(path, "rb")
        self.first = first
        self.sent = 0
        self.reached = threading.Event()
        self.go = threading.Event()

    def read(self, n):
        if self.sent >= self.first:
            self.reached.set()
            self.go.wait(60)
        data = self.f.read(min(n, self.first - self.sent) if self.sent < self.first else n)
        self.sent += len(data)
        return data


def random_package(tmp_path, name, disk_size=32 << 20, data=8 << 20):
    """An OVF (text) and its streamOptimized VMDK holding `data` random bytes."""
    raw = str(tmp_path / f"{name}.raw")
    with open(raw, "wb") as f:
        f.truncate(disk_size)
        f.write(os.urandom(data))
    vmdk = str(tmp_path / f"{name}-disk1.vmdk")
    stream_optimized(raw, vmdk)
    text = descriptor(name=name, disks=(((os.path.basename(vmdk), os.path.getsize(vmdk)), disk_size),),
                      network="VM Network")
    return text, vmdk, raw


def start_import(si, text):
    datacenter, pool, datastore = placement(si)
    spec = si.content.ovfManager.CreateImportSpec(text, pool, datastore, vim.OvfManager.CreateImportSpecParams())
    assert not spec.error
    lease = pool.ImportVApp(spec.importSpec, datacenter.vmFolder)
    wait_ready(lease)
    return lease, spec


def vm_names(si):
    """The VM folder's names; a VM destroyed between the listing and the read of its name is left out."""
    names = []
    for vm in si.content.rootFolder.childEntity[0].vmFolder.childEntity:
        try:
            names.append(vm.name)
        except vmodl.fault.ManagedObjectNotFound:
            pass
    return names


def wait_gone(vireod, si, name):
    folder = os.path.join(vireod.datastore_dir, name)
    deadline = time.monotonic() + 60
    while name in vm_names(si) or os.path.exists(folder):
        assert time.monotonic() < deadline, (vm_names(si), os.listdir(folder) if os.path.exists(folder) else None)
        time.sleep(0.2)


@pytest.mark.parametrize("sent", ["streamOptimized", "flat"])
def test_abort_mid_upload_leaves_nothing(vireod, si, tmp_path, sent):
    text, vmdk, raw = random_package(tmp_path, "aborted-import")
    if sent == "flat":
        vmdk = raw  # a flat extent: the disk's bytes
    lease, spec = start_import(si, text)
    vm = lease.info.entity
    assert vm.name == "aborted-import" and vm.runtime.powerState == "poweredOff"
    with pytest.raises(vim.fault.InvalidState):
        vm.PowerOnVM_Task()
    stream = HeldStream(vmdk, os.path.getsize(vmdk) // 2)
    result = {}
    url = lease.info.deviceUrl[0].url

    def send():
        try:
            result["answer"] = upload(vireod, url, stream, os.path.getsize(vmdk), cookie=si._stub.cookie)[0]
        except (OSError, http.client.HTTPException) as error:
            result["answer"] = error

    sender = threading.Thread(target=send)
    sender.start()
    assert stream.reached.wait(60)
    lease.HttpNfcLeaseAbort(vmodl.fault.SystemError(reason="the client gave up", msg="upload abandoned"))
    # The lease records the client's fault as sent: its type, fields and message.
    assert lease.state == "error" and isinstance(lease.error, vmodl.fault.SystemError), lease.error
    assert (lease.error.reason, lease.error.msg) == ("the client gave up", "upload abandoned")
    wait_gone(vireod, si, "aborted-import")
    stream.go.set()
    sender.join(120)
    # The upload was refused (410 Gone), or cut off while the client was still sending.
    assert result["answer"] == 410 or isinstance(result["answer"], Exception), result


def test_lease_urls_refuse_strangers_other_leases_and_oversized_uploads(vireod, si, tmp_path):
    text, vmdk, raw = random_package(tmp_path, "guarded-import", disk_size=8 << 20, data=1 << 20)
    lease, _ = start_import(si, text)
    url = lease.info.deviceUrl[0].url
    lease_id = url.split("/")[4]
    size = os.path.getsize(vmdk)
    cookie = si._stub.cookie

    def send(target=url, stream=None, length=size, method="POST", who=cookie):
        return upload(vireod, target, stream or open(vmdk, "rb"), length, method=method, cookie=who)[0]

    assert send(who='vmware_soap_session="52-forged"') == 401
    # Another lease's URLs reach only that lease's disks: an export lease refuses uploads.
    source, _ = deploy(si, vireod, descriptor(name="export-source", disks=((None, 1 << 20),), network="VM Network"), None)
    other = source.ExportVm()
    wait_ready(other)
    other_id = other.info.deviceUrl[0].url.split("/")[4]
    assert send(f"https://*:{vireod.port}/nfc/{other_id}/disk-0.vmdk") == 405
    other.HttpNfcLeaseAbort()
    WaitForTask(source.Destroy_Task())
    for name in ["disk-1.vmdk", "..%2Fguarded-import.vmx", "../guarded-import/guarded-import.vmx", ""]:
        assert send(f"https://*:{vireod.port}/nfc/{lease_id}/{name}") == 404, name
    assert send(f"https://*:{vireod.port}/nfc/52-no-such-lease/disk-0.vmdk") == 404
    # A user without VApp.Import.
    spec = vim.host.LocalAccountManager.AccountSpecification(id="importless", password="Importless-pass-1")
    si.content.accountManager.CreateUser(spec)
    permission = vim.AuthorizationManager.Permission(principal="importless", group=False, roleId=-2, propagate=True)
    si.content.authorizationManager.SetEntityPermissions(si.content.rootFolder, [permission])
    reader = vireod.connect("importless", "Importless-pass-1")
    assert send(who=reader._stub.cookie) == 403
    # Beyond what the disk can take: declared, then sent chunked without a length.
    assert send(length=1 << 40) == 413

    class Endless:
        def read(self, n):
            return b"\0" * n

    assert send(stream=Endless(), length=None) in (400, 413)
    # A VMDK of a larger disk than the one declared.
    bigger = str(tmp_path / "bigger.raw")
    write_pattern(bigger, 64 << 20, [(0, 4096, 1)])
    stream_optimized(bigger, str(tmp_path / "bigger.vmdk"))
    assert send(stream=open(str(tmp_path / "bigger.vmdk"), "rb"), length=os.path.getsize(str(tmp_path / "bigger.vmdk"))) == 400
    assert send(method="GET", length=None) == 405
    # A flat extent (no VMDK header) one sector larger than the disk, and a VMDK descriptor
    # (it holds no data): refused with the reason, nothing kept.
    flat = str(tmp_path / "flat.raw")
    write_pattern(flat, (8 << 20) + 512, [(0, 4096, 7)])
    status, body = upload(vireod, url, open(flat, "rb"), os.path.getsize(flat), cookie=cookie)
    assert status == 400 and b"flat extent" in body and b"larger than the disk" in body, (status, body)
    status, body = upload(vireod, url, open(flat, "rb"), None, cookie=cookie)
    assert status == 400 and b"larger than the disk" in body, (status, body)
    descriptor_file = b'# Disk DescriptorFile\nversion=1\nRW 16384 FLAT "guarded-flat.vmdk" 0\n'
    status, body = upload(vireod, url, io.BytesIO(descriptor_file), len(descriptor_file), cookie=cookie)
    assert status == 400 and b"descriptor" in body, (status, body)
    assert not [f for f in os.listdir(os.path.join(vireod.datastore_dir, "guarded-import")) if f.endswith(".upload")]
    # Then the real upload (PUT works as POST does), once.
    status, body = upload(vireod, url, open(vmdk, "rb"), size, method="PUT", cookie=cookie)
    assert status == 200, body
    assert send() == 409
    manifest = lease.HttpNfcLeaseGetManifest()
    with open(vmdk, "rb") as f:
        assert [(m.sha1, m.size, m.disk) for m in manifest] == [(hashlib.sha1(f.read()).hexdigest(), size, True)]
    lease.HttpNfcLeaseComplete()
    vm = lease.info.entity
    assert qemu_compare(raw, host_path(vireod, vm_disks(vm)[0].backing.fileName)).returncode == 0
    assert not [f for f in os.listdir(os.path.join(vireod.datastore_dir, "guarded-import")) if f.endswith(".upload")]
    WaitForTask(vm.Destroy_Task())


def test_import_vapp_makes_only_new_bounded_disks(si):
    datacenter, pool, datastore = placement(si)
    spec = si.content.ovfManager.CreateImportSpec(descriptor(name="bounded-import", disks=((None, 1 << 20),), network="VM Network"),
                                                  pool, datastore, vim.OvfManager.CreateImportSpecParams()).importSpec
    disk_change = next(c for c in spec.configSpec.deviceChange if isinstance(c.device, vim.vm.device.VirtualDisk))
    disk_change.device.capacityInBytes = 1 << 62
    disk_change.device.capacityInKB = 1 << 52
    with pytest.raises(vmodl.fault.InvalidArgument):
        pool.ImportVApp(spec, datacenter.vmFolder)
    disk_change.device.capacityInBytes = 1 << 20
    disk_change.device.capacityInKB = 1 << 10
    disk_change.fileOperation = None
    disk_change.device.backing.fileName = "[datastore1] e2e-vm/e2e-vm.vmx"
    with pytest.raises(vmodl.fault.InvalidArgument):
        pool.ImportVApp(spec, datacenter.vmFolder)
    assert "bounded-import" not in vm_names(si)


def test_an_export_lease_gives_its_manifest(vireod, si, tmp_path):
    text, vmdk, raw = random_package(tmp_path, "manifested", disk_size=4 << 20, data=1 << 20)
    vm, _ = deploy(si, vireod, text, lambda path: (open(vmdk, "rb"), os.path.getsize(vmdk)))
    lease = vm.ExportVm()
    wait_ready(lease)
    url = lease.info.deviceUrl[0].url.replace("*", vireod.host)
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=ssl._create_unverified_context())
    connection.request("GET", parts.path, headers={"Cookie": si._stub.cookie})
    body = connection.getresponse().read()
    connection.close()
    manifest = lease.HttpNfcLeaseGetManifest()
    assert [(m.key, m.sha1, m.size) for m in manifest] == [(lease.info.deviceUrl[0].key, hashlib.sha1(body).hexdigest(), len(body))]
    lease.HttpNfcLeaseComplete()
    with pytest.raises(vim.fault.InvalidState):
        lease.HttpNfcLeaseGetManifest()
    out = tmp_path / "back.vmdk"
    out.write_bytes(body)
    assert qemu_compare(raw, str(out)).returncode == 0
    WaitForTask(vm.Destroy_Task())


def test_an_idle_import_lease_times_out_and_leaves_nothing(tmp_path):
    with start_vireod(config="lease_timeout_secs = 2\n") as server:
        connection = server.connect()
        try:
            lease, _ = start_import(connection, descriptor(name="idle-import", network="VM Network"))
            assert lease.info.leaseTimeout == 2
            deadline = time.monotonic() + 60
            while lease.state == "ready":
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert lease.state == "error" and isinstance(lease.error, vim.fault.Timedout)
            wait_gone(server, connection, "idle-import")
            with pytest.raises(vim.fault.Timedout):
                lease.HttpNfcLeaseComplete()
        finally:
            Disconnect(connection)


def export_package(vireod, si, vm, folder):
    """A stock export script: ExportVm, every deviceUrl downloaded with the session cookie,
    CreateDescriptor with the files, HttpNfcLeaseComplete. Returns the OVF text."""
    lease = vm.ExportVm()
    wait_ready(lease)
    files = []
    for url in lease.info.deviceUrl:
        parts = urllib.parse.urlsplit(url.url.replace("*", vireod.host))
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=ssl._create_unverified_context(),
                                                 timeout=120)
        connection.request("GET", parts.path, headers={"Cookie": si._stub.cookie})
        response = connection.getresponse()
        assert response.status == 200
        target = folder / url.targetId
        with open(target, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        connection.close()
        files.append(vim.OvfManager.OvfFile(deviceId=url.key, path=url.targetId, size=os.path.getsize(target)))
        lease.HttpNfcLeaseProgress(int(100 * len(files) / len(lease.info.deviceUrl)))
    cdp = vim.OvfManager.CreateDescriptorParams(name=vm.name, ovfFiles=files)
    descriptor_result = si.content.ovfManager.CreateDescriptor(obj=vm, cdp=cdp)
    assert not descriptor_result.error
    lease.HttpNfcLeaseComplete()
    (folder / f"{vm.name}.ovf").write_text(descriptor_result.ovfDescriptor)
    return descriptor_result.ovfDescriptor


def test_an_exported_vm_imports_back_and_boots_with_its_data(agent, vireod, si, tmp_path):
    spec = config_spec("roundtrip", scenario="shell", disk_kb=16384)
    second = vim.vm.device.VirtualDisk(key=-5, controllerKey=1000, unitNumber=1, capacityInKB=8192,
                                       backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                                           diskMode="persistent", thinProvisioned=True))
    spec.deviceChange.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=second))
    folder = si.content.rootFolder.childEntity[0].vmFolder
    task = folder.CreateVM_Task(config=spec, pool=root_pool(si))
    WaitForTask(task)
    vm = task.info.result
    power_on_booted(agent, vm)
    assert type_command(agent, vm, "blk write 0 0 64 7", "write") == "write ok"
    assert type_command(agent, vm, "blk write 1 100 64 8", "write") == "write ok"
    assert type_command(agent, vm, "blk flush 0", "flush") == "flush ok"
    assert type_command(agent, vm, "blk flush 1", "flush") == "flush ok"
    WaitForTask(vm.PowerOffVM_Task())

    ovf_text = export_package(vireod, si, vm, tmp_path)
    copy, _ = deploy(si, vireod, ovf_text,
                     lambda path: (open(tmp_path / path, "rb"), os.path.getsize(tmp_path / path)),
                     name="roundtrip-copy")
    assert copy.runtime.powerState == "poweredOff"
    original, imported = vm.config.hardware, copy.config.hardware
    assert (imported.numCPU, imported.memoryMB) == (original.numCPU, original.memoryMB)
    assert [d.capacityInBytes for d in vm_disks(copy)] == [d.capacityInBytes for d in vm_disks(vm)]
    assert len([d for d in imported.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]) == 1
    assert copy.config.guestId == vm.config.guestId
    for mine, theirs in zip(vm_disks(vm), vm_disks(copy)):
        compare = qemu_compare(host_path(vireod, mine.backing.fileName), host_path(vireod, theirs.backing.fileName))
        assert compare.returncode == 0, compare.stdout + compare.stderr

    # Where the guest kernel is, is this host's business (vireo.* never travels in a package).
    boot = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key="vireo.boot.kernel", value=KERNEL),
                                          vim.option.OptionValue(key="vireo.boot.cmdline", value="scenario=shell")])
    WaitForTask(copy.ReconfigVM_Task(boot))
    power_on_booted(agent, copy)
    assert type_command(agent, copy, "blk verify 0 0 64 7", "verify") == "verify ok"
    assert type_command(agent, copy, "blk verify 1 100 64 8", "verify") == "verify ok"
    WaitForTask(copy.PowerOffVM_Task())
    WaitForTask(copy.Destroy_Task())
    WaitForTask(vm.Destroy_Task())
