//! How a parsed OVF package becomes a VM on this host (what CreateImportSpec answers): the
//! name, guest OS, hardware version, CPUs, memory, the disks in hardware order with the files
//! that fill them, the network adapters and their networks, the portable extraConfig — and the
//! findings ESXi reports as warnings (devices and sections this host leaves out) or errors
//! (no usable hardware family, a disk item naming no disk, more devices than a VM may have).

use super::package::{unit_bytes, DiskDecl, FileRef, Item, Package};
use crate::vm::spec::{is_owned_key, MAX_DISKS, MAX_NICS};

/// The newest virtual hardware version this host presents (ESXi 8.0 U3's `vmx-21`).
pub const MAX_HW_VERSION: i32 = 21;

/// A VM to make from a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportPlan {
    /// The VM's name.
    pub name: String,
    /// The guest OS id.
    pub guest_id: String,
    /// Virtual hardware version.
    pub hw_version: i32,
    /// Virtual CPUs.
    pub num_cpus: i64,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// The annotation.
    pub annotation: String,
    /// The disks in hardware order.
    pub disks: Vec<PlannedDisk>,
    /// The network adapters in hardware order.
    pub nics: Vec<PlannedNic>,
    /// extraConfig carried over.
    pub extra_config: Vec<(String, String)>,
    /// What the host reports about the package.
    pub findings: Vec<Finding>,
}

/// One disk of the new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDisk {
    /// Its size in bytes.
    pub capacity: u64,
    /// The package file that fills it (none: it stays empty).
    pub file: Option<FileRef>,
}

/// One network adapter of the new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNic {
    /// The package's network name it connects to.
    pub ovf_network: String,
    /// The vim25 device type (`VirtualVmxnet3`, `VirtualE1000`...).
    pub device_type: &'static str,
    /// Whether it is connected at power on.
    pub start_connected: bool,
}

/// Something the host reports about a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A hardware item this host does not provide (warning; it is left out).
    UnsupportedDevice {
        /// Its InstanceID.
        instance_id: String,
        /// Its ElementName.
        name: String,
        /// Its CIM ResourceType.
        resource_type: u32,
    },
    /// A section this host does not act on (warning).
    UnsupportedSection(String),
    /// An extraConfig key a package may not set here (warning; it is left out).
    ExtraConfigRefused(String),
    /// None of the hardware families is one this host runs (error).
    NoHardwareFamily(String),
    /// A disk item names no disk of the DiskSection (error).
    DiskNotFound(String),
    /// More disks or adapters than a VM may have (error).
    TooManyDevices {
        /// "disks" or "network adapters".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The VM name cannot be used (error).
    InvalidName(String),
}

impl Finding {
    /// Whether it stops the import.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Finding::NoHardwareFamily(_)
                | Finding::DiskNotFound(_)
                | Finding::TooManyDevices { .. }
                | Finding::InvalidName(_)
        )
    }

    /// The message a client shows.
    pub fn message(&self) -> String {
        match self {
            Finding::UnsupportedDevice {
                instance_id,
                name,
                resource_type,
            } => format!(
                "Unsupported hardware: '{name}' (instance {instance_id}, resource type \
                 {resource_type}) is left out"
            ),
            Finding::UnsupportedSection(section) => {
                format!("The {section} section is not used by this host")
            }
            Finding::ExtraConfigRefused(key) => {
                format!("extraConfig '{key}' is not imported: the host owns it")
            }
            Finding::NoHardwareFamily(families) => {
                format!(
                    "No supported hardware family among '{families}' (up to vmx-{MAX_HW_VERSION})"
                )
            }
            Finding::DiskNotFound(resource) => {
                format!("The disk item's host resource '{resource}' names no disk")
            }
            Finding::TooManyDevices { what, max } => {
                format!("A VM on this host has at most {max} {what}")
            }
            Finding::InvalidName(name) => format!("'{name}' is not a usable VM name"),
        }
    }
}

/// Plans the VM for `package` named `entity_name` (or the package's own name).
pub fn plan(package: &Package, entity_name: Option<&str>) -> ImportPlan {
    let system = &package.system;
    let mut findings: Vec<Finding> = system
        .ignored_sections
        .iter()
        .filter(|s| !matches!(s.as_str(), "ProductSection" | "EulaSection"))
        .map(|s| Finding::UnsupportedSection(s.clone()))
        .collect();
    let name = entity_name
        .map(str::to_string)
        .or_else(|| system.name.clone())
        .unwrap_or_else(|| system.id.clone());
    if !crate::vm::create::usable_name(&name) {
        findings.push(Finding::InvalidName(name.clone()));
    }
    let hw_version = hardware_version(&system.families, &mut findings);
    let mut num_cpus = 1;
    let mut memory_mb = 256;
    let mut disks = Vec::new();
    let mut nics = Vec::new();
    for item in &system.items {
        match item.resource_type {
            3 => num_cpus = item.quantity.map_or(1, |q| q.min(i64::MAX as u64) as i64),
            4 => memory_mb = memory_of(item),
            17 => match disk_of(package, item) {
                Some(disk) => disks.push(PlannedDisk {
                    capacity: disk.capacity,
                    file: disk.file.clone(),
                }),
                None => findings.push(Finding::DiskNotFound(item.host_resource.clone())),
            },
            10 => nics.push(PlannedNic {
                ovf_network: item.connection.clone(),
                device_type: nic_type(&item.subtype),
                start_connected: item.automatic_allocation.unwrap_or(true),
            }),
            // Controllers (disks sit on the VM's paravirtual SCSI controller), the video
            // card and VMCI, which every VM here has.
            1 | 5 | 6 | 20 | 24 => {}
            _ => findings.push(Finding::UnsupportedDevice {
                instance_id: item.instance_id.clone(),
                name: item.element_name.clone(),
                resource_type: item.resource_type,
            }),
        }
    }
    if disks.len() > MAX_DISKS {
        findings.push(Finding::TooManyDevices {
            what: "disks",
            max: MAX_DISKS,
        });
    }
    if nics.len() > MAX_NICS {
        findings.push(Finding::TooManyDevices {
            what: "network adapters",
            max: MAX_NICS,
        });
    }
    let extra_config = portable_extra_config(&system.extra_config, &mut findings);
    ImportPlan {
        name,
        guest_id: guest_id(system.os_type.as_deref(), system.os_id),
        hw_version,
        num_cpus,
        memory_mb,
        annotation: system.annotation.clone(),
        disks,
        nics,
        extra_config,
        findings,
    }
}

/// The newest `vmx-N` family this host runs; the newest version when none is named.
fn hardware_version(families: &[String], findings: &mut Vec<Finding>) -> i32 {
    if families.is_empty() {
        return MAX_HW_VERSION;
    }
    let best = families
        .iter()
        .filter_map(|f| f.strip_prefix("vmx-")?.parse::<i32>().ok())
        .filter(|v| (4..=MAX_HW_VERSION).contains(v))
        .max();
    best.unwrap_or_else(|| {
        findings.push(Finding::NoHardwareFamily(families.join(" ")));
        MAX_HW_VERSION
    })
}

/// Memory in MiB from an item's quantity and units (MiB when no units are given).
fn memory_of(item: &Item) -> i64 {
    let units = if item.units.is_empty() {
        "byte * 2^20"
    } else {
        &item.units
    };
    let bytes = unit_bytes(units)
        .and_then(|scale| item.quantity?.checked_mul(scale))
        .unwrap_or(u64::MAX);
    (bytes >> 20).min(i64::MAX as u64) as i64
}

/// The disk a disk item's `HostResource` names (`ovf:/disk/<id>`).
fn disk_of<'p>(package: &'p Package, item: &Item) -> Option<&'p DiskDecl> {
    let resource = item.host_resource.trim();
    let id = resource
        .strip_prefix("ovf:/disk/")
        .or_else(|| resource.strip_prefix("/disk/"))?;
    package.disks.iter().find(|d| d.id == id)
}

/// The vim25 device type of an OVF NIC subtype.
fn nic_type(subtype: &str) -> &'static str {
    match subtype.to_ascii_lowercase().as_str() {
        "e1000" => "VirtualE1000",
        "e1000e" => "VirtualE1000e",
        "pcnet32" => "VirtualPCNet32",
        "vmxnet" | "vmxnet2" => "VirtualVmxnet2",
        _ => "VirtualVmxnet3",
    }
}

/// The guest id: `vmw:osType` when it is a plausible id, else from the CIM id.
fn guest_id(os_type: Option<&str>, os_id: Option<u32>) -> String {
    if let Some(os_type) = os_type.filter(|t| {
        !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    }) {
        return os_type.to_string();
    }
    match os_id {
        Some(36) => "otherLinuxGuest",
        Some(101) => "otherLinux64Guest",
        Some(102) => "otherGuest64",
        _ => "otherGuest",
    }
    .to_string()
}

/// The extraConfig entries a package may set: not the host's own (`vireo.*`, device and file
/// keys), and only well-formed keys.
fn portable_extra_config(
    entries: &[(String, String)],
    findings: &mut Vec<Finding>,
) -> Vec<(String, String)> {
    entries
        .iter()
        .filter(|(key, value)| {
            let usable = !key.is_empty()
                && key.len() <= 256
                && value.len() <= 64 << 10
                && !key.contains(['=', '"', '\n'])
                && !key.to_ascii_lowercase().starts_with("vireo.")
                && !is_owned_key(key);
            if !usable {
                findings.push(Finding::ExtraConfigRefused(key.clone()));
            }
            usable
        })
        .cloned()
        .collect()
}
