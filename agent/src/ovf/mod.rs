//! OVF 1.x envelopes as ESXi writes them for an export (OvfManager.CreateDescriptor): the
//! file references, the disk section (capacity, populated size, streamOptimized format), the
//! networks, and one virtual system with its annotation, guest OS and virtual hardware (CPUs,
//! memory, the SCSI controller, disks, network adapters, portable extraConfig). Pure text
//! building: the caller gathers the facts.

pub mod package;
pub mod plan;
pub mod xml;

use std::fmt::Write;

use crate::datastore::listing::escape;

/// The format URI of a streamOptimized VMDK in an OVF disk section.
pub const STREAM_OPTIMIZED: &str =
    "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// A VM as an OVF package describes it.
pub struct OvfSystem<'a> {
    /// The virtual system's name.
    pub name: &'a str,
    /// The annotation (empty: no annotation section).
    pub annotation: &'a str,
    /// The guest OS id (`vmw:osType`).
    pub guest_id: &'a str,
    /// Virtual hardware version (`vmx-N`).
    pub hw_version: i32,
    /// Virtual CPUs.
    pub num_cpus: i32,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// The disks in the VM's order.
    pub disks: Vec<OvfDisk>,
    /// The network adapters in the VM's order.
    pub nics: Vec<OvfNic<'a>>,
    /// extraConfig entries that mean the same on any host.
    pub extra_config: Vec<(&'a str, &'a str)>,
}

/// One disk of the package.
pub struct OvfDisk {
    /// Size in bytes.
    pub capacity: u64,
    /// Bytes holding data.
    pub populated: u64,
    /// The file carrying it in the package (name, size), when the client listed one.
    pub file: Option<(String, u64)>,
}

/// One network adapter.
pub struct OvfNic<'a> {
    /// The network it is on.
    pub network: &'a str,
    /// Device model (`vmxnet3`, `e1000`, `e1000e`...).
    pub device: &'a str,
    /// Whether it is connected at power on.
    pub start_connected: bool,
}

/// The OVF envelope of `system`.
pub fn envelope(system: &OvfSystem<'_>) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Envelope vmw:buildId=\"vireo\" xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:cim=\"http://schemas.dmtf.org/wbem/wscim/1/common\" \
         xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n",
    );
    references(&mut out, &system.disks);
    disk_section(&mut out, &system.disks);
    network_section(&mut out, &system.nics);
    virtual_system(&mut out, system);
    out.push_str("</Envelope>\n");
    out
}

fn references(out: &mut String, disks: &[OvfDisk]) {
    out.push_str("  <References>\n");
    for (n, disk) in disks.iter().enumerate() {
        if let Some((href, size)) = &disk.file {
            let _ = writeln!(
                out,
                "    <File ovf:href=\"{}\" ovf:id=\"file{}\" ovf:size=\"{size}\"/>",
                escape(href),
                n + 1
            );
        }
    }
    out.push_str("  </References>\n");
}

fn disk_section(out: &mut String, disks: &[OvfDisk]) {
    out.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (n, disk) in disks.iter().enumerate() {
        let file_ref = match disk.file {
            Some(_) => format!(" ovf:fileRef=\"file{}\"", n + 1),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" \
             ovf:diskId=\"vmdisk{}\"{file_ref} ovf:format=\"{STREAM_OPTIMIZED}\" \
             ovf:populatedSize=\"{}\"/>",
            disk.capacity,
            n + 1,
            disk.populated
        );
    }
    out.push_str("  </DiskSection>\n");
}

fn network_section(out: &mut String, nics: &[OvfNic<'_>]) {
    out.push_str("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n");
    let mut seen: Vec<&str> = Vec::new();
    for nic in nics {
        if seen.contains(&nic.network) {
            continue;
        }
        seen.push(nic.network);
        let name = escape(nic.network);
        let _ = writeln!(
            out,
            "    <Network ovf:name=\"{name}\">\n      <Description>The {name} network</Description>\n    </Network>"
        );
    }
    out.push_str("  </NetworkSection>\n");
}

fn virtual_system(out: &mut String, system: &OvfSystem<'_>) {
    let name = escape(system.name);
    let _ = writeln!(
        out,
        "  <VirtualSystem ovf:id=\"{name}\">\n    <Info>A virtual machine</Info>\n    <Name>{name}</Name>"
    );
    if !system.annotation.is_empty() {
        let _ = writeln!(
            out,
            "    <AnnotationSection>\n      <Info>A human-readable annotation</Info>\n      \
             <Annotation>{}</Annotation>\n    </AnnotationSection>",
            escape(system.annotation)
        );
    }
    let _ = writeln!(
        out,
        "    <OperatingSystemSection ovf:id=\"{}\" vmw:osType=\"{}\">\n      \
         <Info>The kind of installed guest operating system</Info>\n    </OperatingSystemSection>",
        cim_os_id(system.guest_id),
        escape(system.guest_id)
    );
    let _ = writeln!(
        out,
        "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n      \
         <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n        \
         <vssd:InstanceID>0</vssd:InstanceID>\n        \
         <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n        \
         <vssd:VirtualSystemType>vmx-{}</vssd:VirtualSystemType>\n      </System>",
        system.hw_version
    );
    hardware_items(out, system);
    for (key, value) in &system.extra_config {
        let _ = writeln!(
            out,
            "      <vmw:ExtraConfig ovf:required=\"false\" vmw:key=\"{}\" vmw:value=\"{}\"/>",
            escape(key),
            escape(value)
        );
    }
    out.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n");
}

/// The CIM_OperatingSystem id OVF wants next to VMware's guest id: Other (1) or Other 64-Bit
/// (102); `vmw:osType` carries the precise id.
fn cim_os_id(guest_id: &str) -> u32 {
    if guest_id.contains("64") {
        102
    } else {
        1
    }
}

/// The `<Item>`s: CPUs, memory, the SCSI controller, disks and network adapters. Their
/// `rasd:` elements are in the alphabetical order the CIM schema requires.
fn hardware_items(out: &mut String, system: &OvfSystem<'_>) {
    let mut item = |fields: &[(&str, String)]| {
        out.push_str("      <Item>\n");
        for (name, value) in fields {
            let _ = writeln!(out, "        <rasd:{name}>{value}</rasd:{name}>");
        }
        out.push_str("      </Item>\n");
    };
    let cpus = system.num_cpus;
    item(&[
        ("AllocationUnits", "hertz * 10^6".into()),
        ("Description", "Number of Virtual CPUs".into()),
        ("ElementName", format!("{cpus} virtual CPU(s)")),
        ("InstanceID", "1".into()),
        ("ResourceType", "3".into()),
        ("VirtualQuantity", cpus.to_string()),
    ]);
    let memory = system.memory_mb;
    item(&[
        ("AllocationUnits", "byte * 2^20".into()),
        ("Description", "Memory Size".into()),
        ("ElementName", format!("{memory}MB of memory")),
        ("InstanceID", "2".into()),
        ("ResourceType", "4".into()),
        ("VirtualQuantity", memory.to_string()),
    ]);
    const SCSI_ID: usize = 3;
    item(&[
        ("Address", "0".into()),
        ("Description", "SCSI Controller".into()),
        ("ElementName", "SCSI controller 0".into()),
        ("InstanceID", SCSI_ID.to_string()),
        ("ResourceSubType", "VirtualSCSI".into()),
        ("ResourceType", "6".into()),
    ]);
    let mut id = SCSI_ID;
    for n in 0..system.disks.len() {
        id += 1;
        let unit = if n >= 7 { n + 1 } else { n };
        item(&[
            ("AddressOnParent", unit.to_string()),
            ("ElementName", format!("Hard disk {}", n + 1)),
            ("HostResource", format!("ovf:/disk/vmdisk{}", n + 1)),
            ("InstanceID", id.to_string()),
            ("Parent", SCSI_ID.to_string()),
            ("ResourceType", "17".into()),
        ]);
    }
    for (n, nic) in system.nics.iter().enumerate() {
        id += 1;
        let subtype = match nic.device {
            "e1000" => "E1000",
            "e1000e" => "E1000e",
            "vmxnet2" => "VmxNet2",
            "pcnet32" => "PCNet32",
            _ => "VmxNet3",
        };
        item(&[
            ("AddressOnParent", (7 + n).to_string()),
            ("AutomaticAllocation", nic.start_connected.to_string()),
            ("Connection", escape(nic.network)),
            (
                "Description",
                format!(
                    "{subtype} ethernet adapter on &quot;{}&quot;",
                    escape(nic.network)
                ),
            ),
            ("ElementName", format!("Network adapter {}", n + 1)),
            ("InstanceID", id.to_string()),
            ("ResourceSubType", subtype.into()),
            ("ResourceType", "10".into()),
        ]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-disk, one-NIC system named `name`, as an export describes it (shared with the
    /// import tests, which parse it back).
    pub(crate) fn two_disk_system(name: &str) -> OvfSystem<'_> {
        OvfSystem {
            name,
            annotation: "a & b",
            guest_id: "debian12_64Guest",
            hw_version: 19,
            num_cpus: 2,
            memory_mb: 512,
            disks: vec![
                OvfDisk {
                    capacity: 1 << 30,
                    populated: 65536,
                    file: Some(("disk-0.vmdk".into(), 1234)),
                },
                OvfDisk {
                    capacity: 1 << 20,
                    populated: 0,
                    file: None,
                },
            ],
            nics: vec![OvfNic {
                network: "VM Network",
                device: "e1000",
                start_connected: true,
            }],
            extra_config: vec![("guestinfo.role", "web")],
        }
    }

    #[test]
    fn envelope_lists_files_disks_networks_and_hardware() {
        let system = two_disk_system("web <1>");
        let text = envelope(&system);
        assert!(
            text.contains("<File ovf:href=\"disk-0.vmdk\" ovf:id=\"file1\" ovf:size=\"1234\"/>")
        );
        assert!(text.contains("ovf:capacity=\"1073741824\""));
        assert!(text.contains("ovf:diskId=\"vmdisk1\" ovf:fileRef=\"file1\""));
        assert!(
            text.contains("ovf:diskId=\"vmdisk2\" ovf:format"),
            "no file, no fileRef"
        );
        assert!(text.contains("<Network ovf:name=\"VM Network\">"));
        assert!(text.contains("<Name>web &lt;1&gt;</Name>"));
        assert!(text.contains("<Annotation>a &amp; b</Annotation>"));
        assert!(text.contains("<vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>"));
        assert!(text.contains("<rasd:ResourceSubType>E1000</rasd:ResourceSubType>"));
        assert!(text.contains("vmw:key=\"guestinfo.role\" vmw:value=\"web\""));
        assert_eq!(
            text.matches("<rasd:ResourceType>17</rasd:ResourceType>")
                .count(),
            2
        );
    }
}
