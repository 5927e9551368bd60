//! What an OVF 1.x/2.x descriptor says, read from its bounded XML tree: the files it
//! references (names checked to be plain file names), the disks with their capacities (in
//! bytes, checked against `MAX_DISK_BYTES`), the networks, and its one virtual system (name,
//! annotation, guest OS, hardware family, the virtual hardware items and extraConfig).
//! Collections of systems (vApps) are refused.

use super::xml::{self, Element, XmlError};

/// The largest disk an OVF may declare: ESXi's 62 TiB VMDK limit.
pub const MAX_DISK_BYTES: u64 = 62 << 40;
/// The most files, disks, networks or hardware items a descriptor may list.
pub const MAX_ENTRIES: usize = 256;

/// Why a descriptor cannot be imported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// Not usable XML
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// Not an OVF envelope
    #[error("not an OVF descriptor: the root element is <{0}>, not <Envelope>")]
    NotAnEnvelope(String),
    /// A required element or attribute is missing
    #[error("the descriptor lacks {0}")]
    Missing(String),
    /// A value is not what OVF allows
    #[error("invalid value '{value}' for {name}")]
    InvalidValue {
        /// The element or attribute.
        name: String,
        /// Its value.
        value: String,
    },
    /// A file name that is not a plain name in the package
    #[error("the file name '{0}' is not a plain file name in the package")]
    BadFileName(String),
    /// A disk larger than `MAX_DISK_BYTES`
    #[error("disk {disk} declares {bytes} bytes, more than the {MAX_DISK_BYTES} a disk may have")]
    DiskTooLarge {
        /// The disk's id.
        disk: String,
        /// Its declared capacity.
        bytes: u64,
    },
    /// More entries of some kind than `MAX_ENTRIES`
    #[error("more than {MAX_ENTRIES} {0}")]
    TooMany(&'static str),
    /// A collection of virtual systems (a vApp)
    #[error("virtual system collections (vApps) cannot be imported on this host")]
    Collection,
}

/// A file of the package (`References/File`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: a plain file name.
    pub href: String,
    /// `ovf:size`, when given.
    pub size: Option<u64>,
}

/// A disk of the package (`DiskSection/Disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDecl {
    /// `ovf:diskId`.
    pub id: String,
    /// The file carrying its contents (none: a new empty disk).
    pub file: Option<FileRef>,
    /// Its size in bytes.
    pub capacity: u64,
    /// `ovf:populatedSize`, when given.
    pub populated: Option<u64>,
}

/// A network of the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDecl {
    /// `ovf:name`.
    pub name: String,
    /// Its description.
    pub description: String,
}

/// One `Item` of the virtual hardware section (the `rasd:`/`sasd:`/`epasd:` fields used).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// `InstanceID`.
    pub instance_id: String,
    /// `ResourceType` (CIM: 3 CPU, 4 memory, 5 IDE, 6 SCSI, 10 NIC, 17 disk...).
    pub resource_type: u32,
    /// `ResourceSubType`.
    pub subtype: String,
    /// `ElementName`.
    pub element_name: String,
    /// `VirtualQuantity`.
    pub quantity: Option<u64>,
    /// `AllocationUnits`.
    pub units: String,
    /// `HostResource` (`ovf:/disk/<id>` for disks).
    pub host_resource: String,
    /// `Connection` (a NIC's network).
    pub connection: String,
    /// `AutomaticAllocation` (a NIC connected at power on).
    pub automatic_allocation: Option<bool>,
}

/// The one virtual system of the package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemDecl {
    /// `ovf:id`.
    pub id: String,
    /// `Name`, when given.
    pub name: Option<String>,
    /// The annotation.
    pub annotation: String,
    /// `vmw:osType` of the operating system section.
    pub os_type: Option<String>,
    /// `ovf:id` of the operating system section (CIM_OperatingSystem).
    pub os_id: Option<u32>,
    /// `VirtualSystemType`: the hardware families (`vmx-19 vmx-21`).
    pub families: Vec<String>,
    /// The hardware items.
    pub items: Vec<Item>,
    /// `vmw:ExtraConfig` as (key, value).
    pub extra_config: Vec<(String, String)>,
    /// Names of sections this host does not act on (ProductSection, EulaSection...).
    pub ignored_sections: Vec<String>,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// The referenced files.
    pub files: Vec<FileRef>,
    /// The disks.
    pub disks: Vec<DiskDecl>,
    /// The networks.
    pub networks: Vec<NetworkDecl>,
    /// The EULAs' texts.
    pub eulas: Vec<String>,
    /// The virtual system.
    pub system: SystemDecl,
}

impl Package {
    /// Bytes of the files a client sends (those whose size is given).
    pub fn download_size(&self) -> u64 {
        self.files.iter().filter_map(|f| f.size).sum()
    }

    /// The disks' full sizes.
    pub fn flat_size(&self) -> u64 {
        self.disks.iter().map(|d| d.capacity).sum()
    }

    /// The disks' populated sizes (their file sizes when no populated size is given).
    pub fn sparse_size(&self) -> u64 {
        self.disks
            .iter()
            .map(|d| {
                d.populated
                    .or_else(|| d.file.as_ref().and_then(|f| f.size))
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Parses an OVF descriptor.
pub fn parse(text: &str) -> Result<Package, PackageError> {
    let root = xml::parse(text)?;
    if root.name != "Envelope" {
        return Err(PackageError::NotAnEnvelope(root.name));
    }
    if root.child("VirtualSystemCollection").is_some() {
        return Err(PackageError::Collection);
    }
    let files = references(&root)?;
    let disks = match root.child("DiskSection") {
        Some(section) => disk_section(section, &files)?,
        None => Vec::new(),
    };
    let networks = root
        .child("NetworkSection")
        .map(|s| {
            s.children_named("Network")
                .map(|n| NetworkDecl {
                    name: n.attr("name").unwrap_or_default().to_string(),
                    description: n.child_text("Description").unwrap_or_default().to_string(),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    bounded(networks.len(), "networks")?;
    let mut systems = root.children_named("VirtualSystem");
    let system = systems
        .next()
        .ok_or_else(|| PackageError::Missing("a VirtualSystem".into()))?;
    if systems.next().is_some() {
        return Err(PackageError::Collection);
    }
    let eulas = root
        .children
        .iter()
        .chain(&system.children)
        .filter(|c| c.name == "EulaSection")
        .filter_map(|c| c.child_text("License").map(str::to_string))
        .collect();
    Ok(Package {
        files,
        disks,
        networks,
        eulas,
        system: virtual_system(system)?,
    })
}

fn bounded(count: usize, what: &'static str) -> Result<(), PackageError> {
    if count > MAX_ENTRIES {
        return Err(PackageError::TooMany(what));
    }
    Ok(())
}

fn invalid(name: &str, value: &str) -> PackageError {
    PackageError::InvalidValue {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn number(name: &str, value: &str) -> Result<u64, PackageError> {
    value.trim().parse().map_err(|_| invalid(name, value))
}

/// Whether `name` is a plain file name: what a client joins to its package folder or looks
/// up in the OVA, so no folders, no `..`, nothing a file system or tar reads specially.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !matches!(name, "." | "..")
        && !name.contains(['/', '\\', ':'])
        && !name.starts_with('-')
        && !name.chars().any(char::is_control)
}

fn references(root: &Element) -> Result<Vec<FileRef>, PackageError> {
    let Some(section) = root.child("References") else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for file in section.children_named("File") {
        let id = file
            .attr("id")
            .ok_or_else(|| PackageError::Missing("ovf:id of a File".into()))?;
        let href = file
            .attr("href")
            .ok_or_else(|| PackageError::Missing(format!("ovf:href of File {id}")))?;
        if !plain_file_name(href) {
            return Err(PackageError::BadFileName(href.to_string()));
        }
        if file.attr("chunkSize").is_some() || file.attr("compression").is_some() {
            return Err(invalid("File compression/chunkSize", href));
        }
        let size = file
            .attr("size")
            .map(|s| number("ovf:size", s))
            .transpose()?;
        files.push(FileRef {
            id: id.to_string(),
            href: href.to_string(),
            size,
        });
        bounded(files.len(), "files")?;
    }
    Ok(files)
}

fn disk_section(section: &Element, files: &[FileRef]) -> Result<Vec<DiskDecl>, PackageError> {
    let mut disks = Vec::new();
    for disk in section.children_named("Disk") {
        let id = disk
            .attr("diskId")
            .ok_or_else(|| PackageError::Missing("ovf:diskId of a Disk".into()))?;
        let capacity = disk
            .attr("capacity")
            .ok_or_else(|| PackageError::Missing(format!("ovf:capacity of disk {id}")))?;
        let unit = disk.attr("capacityAllocationUnits").unwrap_or("byte");
        let bytes = number("ovf:capacity", capacity).and_then(|n| {
            let scale = unit_bytes(unit).ok_or_else(|| invalid("capacityAllocationUnits", unit))?;
            n.checked_mul(scale)
                .ok_or_else(|| PackageError::DiskTooLarge {
                    disk: id.to_string(),
                    bytes: u64::MAX,
                })
        })?;
        if bytes > MAX_DISK_BYTES {
            return Err(PackageError::DiskTooLarge {
                disk: id.to_string(),
                bytes,
            });
        }
        let file = match disk.attr("fileRef") {
            Some(reference) => Some(
                files
                    .iter()
                    .find(|f| f.id == reference)
                    .cloned()
                    .ok_or_else(|| invalid("ovf:fileRef", reference))?,
            ),
            None => None,
        };
        let populated = disk
            .attr("populatedSize")
            .map(|s| number("ovf:populatedSize", s))
            .transpose()?;
        disks.push(DiskDecl {
            id: id.to_string(),
            file,
            capacity: bytes,
            populated,
        });
        bounded(disks.len(), "disks")?;
    }
    Ok(disks)
}

/// Bytes per unit of a DMTF programmatic unit (`byte`, `byte * 2^30`, `KB`, `MegaBytes`...).
pub fn unit_bytes(unit: &str) -> Option<u64> {
    let compact: String = unit.chars().filter(|c| !c.is_whitespace()).collect();
    let compact = compact.to_ascii_lowercase();
    let named = match compact.as_str() {
        "byte" | "bytes" | "" => Some(1),
        "kb" | "kilobytes" => Some(1 << 10),
        "mb" | "megabytes" => Some(1 << 20),
        "gb" | "gigabytes" => Some(1 << 30),
        "tb" | "terabytes" => Some(1 << 40),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    let exponent = compact.strip_prefix("byte*")?;
    let (base, power) = exponent.split_once('^')?;
    let base: u64 = base.parse().ok()?;
    let power: u32 = power.parse().ok()?;
    if !matches!(base, 2 | 10) {
        return None;
    }
    base.checked_pow(power)
}

fn virtual_system(system: &Element) -> Result<SystemDecl, PackageError> {
    let mut decl = SystemDecl {
        id: system.attr("id").unwrap_or_default().to_string(),
        name: system
            .child_text("Name")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        ..SystemDecl::default()
    };
    for section in &system.children {
        match section.name.as_str() {
            "Info" | "Name" => {}
            "AnnotationSection" => {
                decl.annotation = section
                    .child_text("Annotation")
                    .unwrap_or_default()
                    .to_string()
            }
            "OperatingSystemSection" => {
                decl.os_type = section.attr("osType").map(str::to_string);
                decl.os_id = section.attr("id").and_then(|id| id.parse().ok());
            }
            "VirtualHardwareSection" => hardware(section, &mut decl)?,
            other => decl.ignored_sections.push(other.to_string()),
        }
    }
    Ok(decl)
}

fn hardware(section: &Element, decl: &mut SystemDecl) -> Result<(), PackageError> {
    if !decl.items.is_empty() {
        return Err(invalid("VirtualHardwareSection", "more than one"));
    }
    if let Some(system) = section.child("System") {
        decl.families = system
            .child_text("VirtualSystemType")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
    }
    for child in &section.children {
        match child.name.as_str() {
            "Item" | "StorageItem" | "EthernetPortItem" => {
                decl.items.push(item(child)?);
                bounded(decl.items.len(), "hardware items")?;
            }
            "ExtraConfig" => {
                let key = child.attr("key").unwrap_or_default();
                let value = child.attr("value").unwrap_or_default();
                decl.extra_config.push((key.to_string(), value.to_string()));
                bounded(decl.extra_config.len(), "extraConfig entries")?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn item(element: &Element) -> Result<Item, PackageError> {
    let text = |name: &str| element.child_text(name).unwrap_or_default().to_string();
    let resource_type = text("ResourceType");
    Ok(Item {
        instance_id: text("InstanceID"),
        resource_type: number("ResourceType", &resource_type)
            .and_then(|n| u32::try_from(n).map_err(|_| invalid("ResourceType", &resource_type)))?,
        subtype: text("ResourceSubType"),
        element_name: text("ElementName"),
        quantity: element
            .child_text("VirtualQuantity")
            .map(|q| number("VirtualQuantity", q))
            .transpose()?,
        units: text("AllocationUnits"),
        host_resource: text("HostResource"),
        connection: text("Connection"),
        automatic_allocation: element
            .child_text("AutomaticAllocation")
            .map(|a| a.eq_ignore_ascii_case("true")),
    })
}

#[cfg(test)]
mod tests;
