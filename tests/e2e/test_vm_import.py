"""Importing OVF packages the way stock clients do: OvfManager.ParseDescriptor, ValidateHost and
CreateImportSpec on descriptors in the form ESXi exports (and hostile ones: entity expansion,
file names that climb out of the package, absurd capacities), then ResourcePool.ImportVApp and
the disk uploads through the lease."""
import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from conftest import start_vireod

STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def descriptor(name="tiny", disks=((("tiny-disk1.vmdk", 68096), 2 << 30),), network="Lab", extra=(),
               families="vmx-13 vmx-19", head=""):
    """An OVF envelope as ESXi writes it: `disks` are ((href, size) or None, capacity in bytes)."""
    files, disk_section, items = [], [], []
    instance = 5
    for n, (file, capacity) in enumerate(disks):
        ref = ""
        if file:
            files.append(f'<File ovf:href="{file[0]}" ovf:id="file{n + 1}" ovf:size="{file[1]}"/>')
            ref = f' ovf:fileRef="file{n + 1}"'
        disk_section.append(f'<Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" '
                            f'ovf:diskId="vmdisk{n + 1}"{ref} ovf:format="{STREAM_OPTIMIZED}"/>')
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
def vireod():
    """A vireod of this module's own: the VMs imported here stay out of other tests' inventory."""
    with start_vireod() as server:
        yield server


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
