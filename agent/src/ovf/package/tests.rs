//! The descriptor reader against what CreateDescriptor writes, a hand-written ESXi-style
//! descriptor, and hostile descriptors.

use super::*;
use crate::ovf::envelope;
use crate::ovf::plan::{plan, Finding};
use crate::ovf::tests::two_disk_system;

fn exported() -> String {
    envelope(&two_disk_system("web"))
}

#[test]
fn reads_back_what_create_descriptor_writes() {
    let package = parse(&exported()).unwrap();
    assert_eq!(
        package.files,
        vec![FileRef {
            id: "file1".into(),
            href: "disk-0.vmdk".into(),
            size: Some(1234)
        }]
    );
    assert_eq!(package.disks.len(), 2);
    assert_eq!(package.disks[0].capacity, 1 << 30);
    assert_eq!(package.disks[0].populated, Some(65536));
    assert_eq!(package.disks[1].file, None);
    assert_eq!(package.networks[0].name, "VM Network");
    assert_eq!(
        (package.download_size(), package.sparse_size()),
        (1234, 65536)
    );
    let plan = plan(&package, None);
    assert_eq!(plan.name, "web");
    assert_eq!(plan.annotation, "a & b");
    assert_eq!(plan.guest_id, "debian12_64Guest");
    assert_eq!(
        (plan.hw_version, plan.num_cpus, plan.memory_mb),
        (19, 2, 512)
    );
    assert_eq!(plan.disks.len(), 2);
    assert_eq!(plan.disks[0].file.as_ref().unwrap().href, "disk-0.vmdk");
    assert_eq!(plan.nics[0].device_type, "VirtualE1000");
    assert_eq!(plan.nics[0].ovf_network, "VM Network");
    assert_eq!(
        plan.extra_config,
        vec![("guestinfo.role".into(), "web".into())]
    );
    assert!(plan.findings.is_empty(), "{:?}", plan.findings);
    assert_eq!(
        super::super::plan::plan(&package, Some("other")).name,
        "other"
    );
}

/// An ESXi 8-style descriptor: GiB capacity units, IDE/SATA controllers, a CD-ROM, a
/// floppy, a host-owned extraConfig key, a product section.
const ESXI_STYLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="tiny-disk1.vmdk" ovf:id="file1" ovf:size="68096"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="0"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="Lab"><Description>The Lab network</Description></Network>
  </NetworkSection>
  <VirtualSystem ovf:id="tiny">
    <Info>A virtual machine</Info>
    <Name>tiny</Name>
    <OperatingSystemSection ovf:id="101" vmw:osType="otherLinux64Guest"><Info>os</Info></OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>tiny</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-13 vmx-19 vmx-99</vssd:VirtualSystemType>
      </System>
      <Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:ElementName>1 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:ElementName>1GB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SATA Controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:AutomaticAllocation>false</rasd:AutomaticAllocation><rasd:ElementName>CD/DVD drive 1</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>7</rasd:AddressOnParent><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>Lab</rasd:Connection><rasd:ElementName>Network adapter 1</rasd:ElementName><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
      <Item ovf:required="false"><rasd:ElementName>Floppy 1</rasd:ElementName><rasd:InstanceID>7</rasd:InstanceID><rasd:ResourceType>14</rasd:ResourceType></Item>
      <vmw:ExtraConfig ovf:required="false" vmw:key="vireo.boot.kernel" vmw:value="/etc/shadow"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="scsi0:0.fileName" vmw:value="/etc/passwd"/>
      <vmw:ExtraConfig ovf:required="false" vmw:key="guestinfo.x" vmw:value="1"/>
    </VirtualHardwareSection>
    <ProductSection><Info>p</Info><Product>Tiny</Product></ProductSection>
  </VirtualSystem>
</Envelope>
"#;

#[test]
fn reads_an_esxi_style_descriptor_and_reports_what_it_leaves_out() {
    let package = parse(ESXI_STYLE).unwrap();
    assert_eq!(package.disks[0].capacity, 2 << 30);
    let plan = plan(&package, None);
    assert_eq!((plan.name.as_str(), plan.hw_version), ("tiny", 19));
    assert_eq!((plan.num_cpus, plan.memory_mb), (1, 1024));
    assert_eq!(plan.guest_id, "otherLinux64Guest");
    assert_eq!(plan.nics[0].ovf_network, "Lab");
    assert_eq!(plan.nics[0].device_type, "VirtualVmxnet3");
    assert_eq!(plan.extra_config, vec![("guestinfo.x".into(), "1".into())]);
    let warnings: Vec<_> = plan.findings.iter().filter(|f| !f.is_error()).collect();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert!(plan
        .findings
        .contains(&Finding::ExtraConfigRefused("vireo.boot.kernel".into())));
    assert!(plan.findings.iter().all(|f| !f.is_error()));
}

#[test]
fn refuses_hostile_descriptors() {
    let with = |from: &str, to: &str| ESXI_STYLE.replace(from, to);
    for name in [
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        "a/b.vmdk",
        "c:\\x.vmdk",
        "",
    ] {
        let text = with("\"tiny-disk1.vmdk\"", &format!("\"{name}\""));
        assert!(
            matches!(parse(&text), Err(PackageError::BadFileName(_))),
            "{name}"
        );
    }
    let huge = with("ovf:capacity=\"2\"", "ovf:capacity=\"63\"");
    let huge = huge.replace("byte * 2^30", "byte * 2^40");
    assert!(matches!(
        parse(&huge),
        Err(PackageError::DiskTooLarge { .. })
    ));
    let overflow = with(
        "ovf:capacity=\"2\"",
        "ovf:capacity=\"18446744073709551615\"",
    );
    assert!(matches!(
        parse(&overflow),
        Err(PackageError::DiskTooLarge { .. })
    ));
    let dangling = with("ovf:fileRef=\"file1\"", "ovf:fileRef=\"file9\"");
    assert!(matches!(
        parse(&dangling),
        Err(PackageError::InvalidValue { .. })
    ));
    let entity = ESXI_STYLE.replacen(
        "<Envelope",
        "<!DOCTYPE Envelope [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Envelope",
        1,
    );
    assert!(matches!(
        parse(&entity),
        Err(PackageError::Xml(xml::XmlError::Doctype))
    ));
    let collection = "<Envelope><VirtualSystemCollection/></Envelope>";
    assert_eq!(parse(collection), Err(PackageError::Collection));
    assert!(matches!(
        parse("<Other/>"),
        Err(PackageError::NotAnEnvelope(_))
    ));
    let many_files = format!(
        "<Envelope><References>{}</References><VirtualSystem/></Envelope>",
        (0..=MAX_ENTRIES)
            .map(|n| format!("<File id=\"f{n}\" href=\"d{n}.vmdk\"/>"))
            .collect::<String>()
    );
    assert_eq!(parse(&many_files), Err(PackageError::TooMany("files")));
}

#[test]
fn plans_report_errors_for_unusable_packages() {
    let families = ESXI_STYLE.replace("vmx-13 vmx-19 vmx-99", "virtualbox-2.2");
    let planned = plan(&parse(&families).unwrap(), None);
    assert!(planned
        .findings
        .contains(&Finding::NoHardwareFamily("virtualbox-2.2".into())));
    let lost = ESXI_STYLE.replace("ovf:/disk/vmdisk1", "ovf:/disk/nowhere");
    let planned = plan(&parse(&lost).unwrap(), None);
    assert!(planned.findings.iter().any(Finding::is_error));
    let planned = plan(&parse(ESXI_STYLE).unwrap(), Some("../x"));
    assert!(planned
        .findings
        .contains(&Finding::InvalidName("../x".into())));
}

#[test]
fn units_scale_by_powers_of_two_and_ten() {
    assert_eq!(unit_bytes("byte * 2^20"), Some(1 << 20));
    assert_eq!(unit_bytes("byte*10^3"), Some(1000));
    assert_eq!(unit_bytes("MegaBytes"), Some(1 << 20));
    assert_eq!(unit_bytes("byte * 3^2"), None);
    assert_eq!(unit_bytes("byte * 2^99"), None);
}
