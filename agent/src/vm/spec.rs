//! What a VM is made of, as its `.vmx` records it: name, guest OS, CPUs, memory, identities,
//! disks (`diskN.fileName`, `.mode`), NICs (`ethernetN.*`), CD-ROMs (`ideC:U.*`), the template
//! flag, and every other key as extraConfig (the boot source among them: `vireo.boot.kernel`,
//! `.initrd`, `.cmdline`).

use vireo_disk::open::ImageFormat;
use vireo_vmm_protocol::CacheMode;

use super::macs::{self, MacsInUse};
use super::slots::{self, Bus, DiskSlot};
use super::uuid;
use super::vmx_file::VmxFile;

/// extraConfig key naming the kernel (a datastore path) the VM boots.
pub const BOOT_KERNEL: &str = "vireo.boot.kernel";
/// extraConfig key naming the initial ramdisk (a datastore path).
pub const BOOT_INITRD: &str = "vireo.boot.initrd";
/// extraConfig key holding the kernel command line.
pub const BOOT_CMDLINE: &str = "vireo.boot.cmdline";

/// Most disks and NICs a VM may have (the VMM's virtio slots are shared with the tools port).
pub const MAX_DISKS: usize = 8;
/// Most NICs a VM may have.
pub const MAX_NICS: usize = 4;
/// virtio devices the VMM gives a VM: its disks, NICs, CD-ROM drives and the tools channel.
pub const MAX_VIRTIO_DEVICES: usize = 15;
/// IDE controllers a VM has, and units on each (CD-ROM slots `ide0:0` .. `ide1:1`).
pub const IDE_CONTROLLERS: u8 = 2;
/// Units on one IDE controller.
pub const IDE_UNITS: u8 = 2;

/// How a disk takes part in snapshots (VirtualDiskMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskMode {
    /// Snapshots include the disk.
    #[default]
    Persistent,
    /// Snapshots leave the disk out; writes go straight to it.
    IndependentPersistent,
    /// Snapshots leave the disk out; what the guest writes is gone at power-off.
    IndependentNonpersistent,
}

impl DiskMode {
    /// The VirtualDiskMode value.
    pub fn api_name(self) -> &'static str {
        match self {
            DiskMode::Persistent => "persistent",
            DiskMode::IndependentPersistent => "independent_persistent",
            DiskMode::IndependentNonpersistent => "independent_nonpersistent",
        }
    }

    /// The mode of a VirtualDiskMode value this host applies.
    pub fn from_api(name: &str) -> Option<DiskMode> {
        [
            DiskMode::Persistent,
            DiskMode::IndependentPersistent,
            DiskMode::IndependentNonpersistent,
        ]
        .into_iter()
        .find(|m| m.api_name() == name)
    }

    /// The `.vmx` spelling (`independent-persistent`).
    fn vmx_name(self) -> String {
        self.api_name().replace('_', "-")
    }

    /// Whether snapshots leave the disk out.
    pub fn is_independent(self) -> bool {
        self != DiskMode::Persistent
    }
}

/// One virtual disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// File name as stored: relative to the VM folder, or a datastore path.
    pub file_name: String,
    /// Its base file's format, pinned in the `.vmx` (`diskN.format`): a raw disk is never
    /// probed again, whatever the guest writes into it. Unset until registration records it.
    pub format: Option<ImageFormat>,
    /// How it takes part in snapshots (`diskN.mode`).
    pub mode: DiskMode,
    /// Its controller and unit (`diskN.slot`).
    pub slot: DiskSlot,
    /// How the host caches it (`diskN.cache`: `writeback`, the default, or `none` for direct
    /// I/O).
    pub cache: CacheMode,
}

/// One virtual NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// Name of the network it is on ("VM Network").
    pub network: String,
    /// MAC address, `00:50:56:xx:xx:xx` style, lower case.
    pub mac: String,
    /// Device model the client chose (`vmxnet3`, `e1000`, ...); the guest sees virtio-net.
    pub virtual_dev: String,
    /// Whether the host chose the MAC (`addressType = "generated"`) rather than the client.
    pub generated_mac: bool,
    /// Whether its cable is plugged in when the VM powers on (`ethernetN.startConnected`).
    pub start_connected: bool,
}

/// The controller a CD-ROM drive sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CdromBus {
    /// One of the two IDE controllers.
    Ide,
    /// The SATA controller (which the VM's disks may share).
    Sata,
}

/// One CD-ROM drive in an IDE slot (`ideC:U.*`) or a SATA one (`sata0:U.*`); the guest sees a
/// read-only virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdromSpec {
    /// Its controller.
    pub bus: CdromBus,
    /// IDE controller (0 or 1; 0 on SATA).
    pub controller: u8,
    /// Unit on it (IDE: 0 or 1; SATA: 0 to 29).
    pub unit: u8,
    /// The ISO image (a datastore path, or a name in the VM folder); none: an empty drive.
    pub iso: Option<String>,
    /// Whether the medium is inserted when the VM powers on (`startConnected`).
    pub start_connected: bool,
}

impl CdromSpec {
    /// Its slot as the `.vmx` names it (`ide1:0`, `sata0:3`).
    pub fn slot_name(&self) -> String {
        match self.bus {
            CdromBus::Ide => format!("ide{}:{}", self.controller, self.unit),
            CdromBus::Sata => format!("sata0:{}", self.unit),
        }
    }

    /// Where it sits, in the order drives are listed.
    pub fn order(&self) -> (CdromBus, u8, u8) {
        (self.bus, self.controller, self.unit)
    }

    /// Its SATA slot, if it sits on the SATA controller.
    pub fn sata_slot(&self) -> Option<DiskSlot> {
        (self.bus == CdromBus::Sata).then_some(DiskSlot {
            bus: Bus::Sata,
            unit: self.unit,
        })
    }
}

/// A VM's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Display name.
    pub name: String,
    /// vSphere guest id (`otherLinux64Guest`).
    pub guest_id: String,
    /// vCPUs.
    pub num_cpus: i32,
    /// Memory in MiB.
    pub memory_mb: i64,
    /// BIOS UUID (config.uuid).
    pub uuid: String,
    /// Instance UUID (config.instanceUuid).
    pub instance_uuid: String,
    /// Free text.
    pub annotation: String,
    /// Whether this is a template (cannot power on).
    pub template: bool,
    /// Virtual hardware version number (`vmx-21`).
    pub hw_version: i32,
    /// Disks in device order.
    pub disks: Vec<DiskSpec>,
    /// NICs in device order.
    pub nics: Vec<NicSpec>,
    /// CD-ROM drives in slot order.
    pub cdroms: Vec<CdromSpec>,
    /// Whether it has a SATA controller (`sata0.present`).
    pub sata: bool,
    /// Every other setting, in file order.
    pub extra_config: Vec<(String, String)>,
}

/// Keys the model owns (compared case-insensitively); `diskN.*` and `ethernetN.*` too.
const OWN_KEYS: &[&str] = &[
    ".encoding",
    "config.version",
    "displayName",
    "guestOS",
    "numvcpus",
    "memsize",
    "uuid.bios",
    "vc.uuid",
    "annotation",
    "templateVM",
    "virtualHW.version",
];

fn is_device_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    ["disk", "ethernet", "ide", "sata"].iter().any(|prefix| {
        lower
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(n, _)| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b':')
            })
    })
}

/// Whether a client's extraConfig may not set `key` because the VM's model owns it: the
/// keys above, devices (`diskN.*`, `ethernetN.*`, `scsiN*`, `ideN*`, `sataN*`, `nvmeN*`),
/// identities (`uuid.*`) and file names (`*fileName`), compared case-insensitively.
pub fn is_owned_key(key: &str) -> bool {
    let lower = key.trim().to_ascii_lowercase();
    let device = ["disk", "ethernet", "scsi", "ide", "sata", "nvme"]
        .iter()
        .any(|prefix| {
            lower
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        });
    device
        || lower.starts_with("uuid.")
        || lower.ends_with("filename")
        || OWN_KEYS.iter().any(|o| o.eq_ignore_ascii_case(&lower))
}

impl VmSpec {
    /// Reads a VM from its `.vmx` settings; `default_name` names it when displayName is absent.
    pub fn from_vmx(vmx: &VmxFile, default_name: &str) -> VmSpec {
        let number = |key: &str, default: i64| {
            vmx.get(key)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        let present = |prefix: String| {
            vmx.get(&format!("{prefix}.present"))
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        let read: Vec<(Option<DiskSlot>, DiskSpec)> = (0..MAX_DISKS)
            .filter(|n| present(format!("disk{n}")))
            .filter_map(|n| {
                let get = |k: &str| vmx.get(&format!("disk{n}.{k}"));
                let disk = DiskSpec {
                    file_name: get("fileName")?.to_string(),
                    format: get("format").and_then(ImageFormat::from_name),
                    mode: get("mode")
                        .and_then(|m| DiskMode::from_api(&m.replace('-', "_")))
                        .unwrap_or_default(),
                    cache: get("cache")
                        .and_then(CacheMode::from_name)
                        .unwrap_or_default(),
                    // Settled below, with the other disks' slots.
                    slot: DiskSlot {
                        bus: Bus::Scsi,
                        unit: 0,
                    },
                };
                Some((get("slot").and_then(DiskSlot::parse), disk))
            })
            .collect();
        let recorded: Vec<Option<DiskSlot>> = read.iter().map(|(slot, _)| *slot).collect();
        let disks: Vec<DiskSpec> = read
            .into_iter()
            .zip(slots::settle(&recorded))
            .map(|((_, disk), slot)| DiskSpec { slot, ..disk })
            .collect();
        let cdroms = cdroms(vmx);
        let sata = present("sata0".into())
            || disks.iter().any(|d| d.slot.bus == Bus::Sata)
            || cdroms.iter().any(|c| c.bus == CdromBus::Sata);
        let nics = (0..MAX_NICS)
            .filter(|n| present(format!("ethernet{n}")))
            .map(|n| {
                let get = |k: &str| vmx.get(&format!("ethernet{n}.{k}")).map(str::to_string);
                // Without an addressType (a hand-written file), ESXi generates the MAC unless
                // the file gives one.
                let generated_mac = match get("addressType") {
                    Some(t) => t.eq_ignore_ascii_case("generated") || t.eq_ignore_ascii_case("vpx"),
                    None => get("address").is_none(),
                };
                let (first, second) = if generated_mac {
                    ("generatedAddress", "address")
                } else {
                    ("address", "generatedAddress")
                };
                NicSpec {
                    network: get("networkName").unwrap_or_else(|| "VM Network".into()),
                    mac: get(first)
                        .or_else(|| get(second))
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    virtual_dev: get("virtualDev").unwrap_or_else(|| "vmxnet3".into()),
                    generated_mac,
                    start_connected: !get("startConnected")
                        .is_some_and(|v| v.eq_ignore_ascii_case("false")),
                }
            })
            .collect();
        let guest_os = vmx.get("guestOS").unwrap_or("otherLinux64");
        VmSpec {
            name: vmx.get("displayName").unwrap_or(default_name).to_string(),
            guest_id: format!(
                "{}Guest",
                guest_os.strip_suffix("Guest").unwrap_or(guest_os)
            ),
            num_cpus: number("numvcpus", 1) as i32,
            memory_mb: number("memsize", 256),
            uuid: vmx.get("uuid.bios").map(uuid::to_api).unwrap_or_default(),
            instance_uuid: vmx.get("vc.uuid").map(uuid::to_api).unwrap_or_default(),
            annotation: vmx.get("annotation").unwrap_or_default().to_string(),
            template: vmx
                .get("templateVM")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            hw_version: number("virtualHW.version", 21) as i32,
            disks,
            nics,
            cdroms,
            sata,
            extra_config: vmx
                .entries()
                .filter(|(k, _)| {
                    !is_device_key(k) && !OWN_KEYS.iter().any(|o| o.eq_ignore_ascii_case(k))
                })
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The `.vmx` settings for this VM.
    pub fn to_vmx(&self) -> VmxFile {
        let mut vmx = VmxFile::default();
        vmx.set("config.version", "8");
        vmx.set("virtualHW.version", &self.hw_version.to_string());
        vmx.set("displayName", &self.name);
        vmx.set(
            "guestOS",
            self.guest_id
                .strip_suffix("Guest")
                .unwrap_or(&self.guest_id),
        );
        vmx.set("numvcpus", &self.num_cpus.to_string());
        vmx.set("memsize", &self.memory_mb.to_string());
        vmx.set("uuid.bios", &uuid::to_vmx(&self.uuid));
        vmx.set("vc.uuid", &uuid::to_vmx(&self.instance_uuid));
        if !self.annotation.is_empty() {
            vmx.set("annotation", &self.annotation);
        }
        if self.template {
            vmx.set("templateVM", "TRUE");
        }
        for (n, disk) in self.disks.iter().enumerate() {
            vmx.set(&format!("disk{n}.present"), "TRUE");
            vmx.set(&format!("disk{n}.fileName"), &disk.file_name);
            if let Some(format) = disk.format {
                vmx.set(&format!("disk{n}.format"), format.name());
            }
            if disk.mode != DiskMode::Persistent {
                vmx.set(&format!("disk{n}.mode"), &disk.mode.vmx_name());
            }
            vmx.set(&format!("disk{n}.slot"), &disk.slot.to_vmx());
            if disk.cache != CacheMode::default() {
                vmx.set(&format!("disk{n}.cache"), disk.cache.name());
            }
        }
        if self.sata {
            vmx.set("sata0.present", "TRUE");
        }
        for (n, nic) in self.nics.iter().enumerate() {
            vmx.set(&format!("ethernet{n}.present"), "TRUE");
            vmx.set(&format!("ethernet{n}.networkName"), &nic.network);
            vmx.set(&format!("ethernet{n}.virtualDev"), &nic.virtual_dev);
            if nic.generated_mac {
                vmx.set(&format!("ethernet{n}.addressType"), "generated");
                vmx.set(&format!("ethernet{n}.generatedAddress"), &nic.mac);
            } else {
                vmx.set(&format!("ethernet{n}.addressType"), "static");
                vmx.set(&format!("ethernet{n}.address"), &nic.mac);
            }
            if !nic.start_connected {
                vmx.set(&format!("ethernet{n}.startConnected"), "FALSE");
            }
        }
        for cdrom in &self.cdroms {
            let key = |k: &str| format!("{}.{k}", cdrom.slot_name());
            vmx.set(&key("present"), "TRUE");
            match &cdrom.iso {
                Some(iso) => {
                    vmx.set(&key("deviceType"), "cdrom-image");
                    vmx.set(&key("fileName"), iso);
                }
                None => vmx.set(&key("deviceType"), "atapi-cdrom"),
            }
            vmx.set(
                &key("startConnected"),
                if cdrom.start_connected {
                    "TRUE"
                } else {
                    "FALSE"
                },
            );
        }
        for (key, value) in &self.extra_config {
            vmx.set(key, value);
        }
        vmx
    }

    /// An extraConfig value.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra_config
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// A new BIOS UUID and new generated MACs: the identity of a copy of the VM. A manual MAC
    /// stays unless a NIC of `used` (the host's other VMs) has it; then it is replaced by a
    /// generated one too.
    pub fn renew_identity(&mut self, used: &MacsInUse) {
        self.uuid = uuid::random();
        let mut taken = used.clone();
        for nic in &mut self.nics {
            if nic.generated_mac || nic.mac.is_empty() || taken.contains_key(&nic.mac) {
                nic.mac = macs::unique(&taken);
                nic.generated_mac = true;
            }
            taken.insert(nic.mac.clone(), self.name.clone());
        }
    }

    /// Sets (or, with an empty value, removes) an extraConfig value, as ReconfigVM does.
    pub fn set_extra(&mut self, key: &str, value: &str) {
        self.extra_config
            .retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        if !value.is_empty() {
            self.extra_config.push((key.to_string(), value.to_string()));
        }
    }
}

/// The CD-ROM drives of `ideC:U.present = "TRUE"` slots whose deviceType is a CD-ROM.
fn cdroms(vmx: &VmxFile) -> Vec<CdromSpec> {
    let ide = (0..IDE_CONTROLLERS)
        .flat_map(|controller| (0..IDE_UNITS).map(move |unit| (CdromBus::Ide, controller, unit)));
    let sata = (0..slots::SATA_UNITS).map(|unit| (CdromBus::Sata, 0, unit));
    ide.chain(sata)
        .filter_map(|(bus, controller, unit)| {
            let slot = CdromSpec {
                bus,
                controller,
                unit,
                iso: None,
                start_connected: true,
            };
            let prefix = slot.slot_name();
            let get = |k: &str| vmx.get(&format!("{prefix}.{k}"));
            let yes = |k: &str| get(k).map(|v| v.eq_ignore_ascii_case("true"));
            let cdrom = get("deviceType").is_some_and(|t| t.to_ascii_lowercase().contains("cdrom"));
            if yes("present") != Some(true) || !cdrom {
                return None;
            }
            let image = get("deviceType").is_some_and(|t| t.eq_ignore_ascii_case("cdrom-image"));
            Some(CdromSpec {
                iso: get("fileName").filter(|_| image).map(str::to_string),
                start_connected: yes("startConnected").unwrap_or(true),
                ..slot
            })
        })
        .collect()
}

/// Whether `mac` (lower case) is in the range ESXi lets a client set by hand:
/// `00:50:56:00:00:00` .. `00:50:56:3f:ff:ff`.
pub fn is_manual_mac(mac: &str) -> bool {
    let bytes: Vec<Option<u8>> = mac
        .split(':')
        .map(|p| {
            (p.len() == 2)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect();
    matches!(
        bytes[..],
        [Some(0x00), Some(0x50), Some(0x56), Some(fourth), Some(_), Some(_)] if fourth <= 0x3f
    )
}

/// A random MAC in VMware's manually-assigned range `00:50:56:00:00:00..00:50:56:3f:ff:ff`.
pub fn random_mac() -> String {
    let mut bytes = [0u8; 3];
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    format!(
        "00:50:56:{:02x}:{:02x}:{:02x}",
        bytes[0] & 0x3f,
        bytes[1],
        bytes[2]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_owns_devices_identities_sizes_and_file_names() {
        for key in [
            "disk0.fileName",
            "DISK7.present",
            "disk0.format",
            "ethernet0.address",
            "ethernet3.networkName",
            "scsi0:0.fileName",
            "ide1:0.deviceType",
            "sata0.present",
            "memsize",
            "numvcpus",
            "uuid.bios",
            "uuid.location",
            "vc.uuid",
            "displayName",
            "guestOS",
            "nvram.fileName",
            "serial0.fileName",
        ] {
            assert!(is_owned_key(key), "{key}");
        }
        for key in [
            "vireo.boot.kernel",
            "ctkEnabled",
            "guestinfo.x",
            "diskless",
            "ideal",
        ] {
            assert!(!is_owned_key(key), "{key}");
        }
    }

    #[test]
    fn vmx_round_trip_keeps_devices_and_extra_config() {
        let text = "displayName = \"web\"\nguestOS = \"debian12-64\"\nnumvcpus = \"2\"\n\
                    memsize = \"512\"\nuuid.bios = \"56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc\"\n\
                    disk0.present = \"TRUE\"\ndisk0.fileName = \"web.qcow2\"\n\
                    disk1.present = \"FALSE\"\ndisk1.fileName = \"gone.qcow2\"\n\
                    ethernet0.present = \"TRUE\"\nethernet0.address = \"00:50:56:01:02:03\"\n\
                    vireo.boot.kernel = \"[datastore1] k.elf\"\n";
        let spec = VmSpec::from_vmx(&VmxFile::parse(text), "x");
        assert_eq!(spec.guest_id, "debian12-64Guest");
        assert_eq!(spec.uuid, "564d1234-5678-9abc-def0-123456789abc");
        assert_eq!(spec.disks.len(), 1);
        assert_eq!(spec.nics[0].network, "VM Network");
        assert_eq!(spec.extra(BOOT_KERNEL), Some("[datastore1] k.elf"));
        assert_eq!(spec.extra_config.len(), 1);
        let back = VmSpec::from_vmx(&spec.to_vmx(), "x");
        assert_eq!(back, spec);
    }

    #[test]
    fn macs_have_vmware_s_prefix() {
        assert!(random_mac().starts_with("00:50:56:"));
        assert!(is_manual_mac(&random_mac()));
        assert!(is_manual_mac("00:50:56:3f:ff:ff"));
        for refused in [
            "00:50:56:40:00:00",
            "00:0c:29:01:02:03",
            "00:50:56:01:02",
            "x",
        ] {
            assert!(!is_manual_mac(refused), "{refused}");
        }
    }

    #[test]
    fn modes_connections_and_cdroms_round_trip_through_the_vmx() {
        let text = "disk0.present = \"TRUE\"\ndisk0.fileName = \"a.qcow2\"\n\
                    disk0.mode = \"independent-nonpersistent\"\n\
                    disk0.cache = \"none\"\n\
                    disk1.present = \"TRUE\"\ndisk1.fileName = \"b.qcow2\"\n\
                    disk1.cache = \"writeback\"\n\
                    ethernet0.present = \"TRUE\"\nethernet0.addressType = \"generated\"\n\
                    ethernet0.generatedAddress = \"00:0C:29:01:02:03\"\n\
                    ethernet0.startConnected = \"FALSE\"\n\
                    ide1:0.present = \"TRUE\"\nide1:0.deviceType = \"cdrom-image\"\n\
                    ide1:0.fileName = \"[datastore1] iso/tools.iso\"\n\
                    ide0:1.present = \"TRUE\"\nide0:1.deviceType = \"atapi-cdrom\"\n\
                    ide0:1.startConnected = \"FALSE\"\n";
        let spec = VmSpec::from_vmx(&VmxFile::parse(text), "x");
        assert_eq!(spec.disks[0].mode, DiskMode::IndependentNonpersistent);
        assert_eq!(spec.disks[0].cache, CacheMode::None);
        assert_eq!(spec.disks[1].cache, CacheMode::Writeback);
        let vmx = spec.to_vmx();
        assert_eq!(vmx.get("disk0.cache"), Some("none"));
        assert_eq!(vmx.get("disk1.cache"), None, "the default is not written");
        assert!(spec.nics[0].generated_mac && !spec.nics[0].start_connected);
        assert_eq!(spec.nics[0].mac, "00:0c:29:01:02:03");
        assert_eq!(spec.cdroms.len(), 2);
        assert_eq!((spec.cdroms[0].controller, spec.cdroms[0].unit), (0, 1));
        assert_eq!(spec.cdroms[0].iso, None);
        assert_eq!(
            spec.cdroms[1].iso.as_deref(),
            Some("[datastore1] iso/tools.iso")
        );
        assert!(spec.cdroms[1].start_connected && !spec.cdroms[0].start_connected);
        assert!(spec.extra_config.is_empty(), "{:?}", spec.extra_config);
        assert_eq!(VmSpec::from_vmx(&spec.to_vmx(), "x"), spec);
    }

    #[test]
    fn cdroms_on_sata_round_trip_after_the_ide_ones() {
        let text = "sata0:3.present = \"TRUE\"\nsata0:3.deviceType = \"cdrom-image\"\n\
                    sata0:3.fileName = \"[datastore1] iso/a.iso\"\n\
                    ide1:1.present = \"TRUE\"\nide1:1.deviceType = \"atapi-cdrom\"\n";
        let spec = VmSpec::from_vmx(&VmxFile::parse(text), "x");
        assert!(
            spec.sata,
            "a CD-ROM on SATA means the VM has the controller"
        );
        let slots: Vec<String> = spec.cdroms.iter().map(CdromSpec::slot_name).collect();
        assert_eq!(slots, ["ide1:1", "sata0:3"]);
        assert_eq!(
            spec.cdroms[1].iso.as_deref(),
            Some("[datastore1] iso/a.iso")
        );
        assert_eq!(spec.cdroms[1].sata_slot(), DiskSlot::parse("sata0:3"));
        let vmx = spec.to_vmx();
        assert_eq!(vmx.get("sata0:3.deviceType"), Some("cdrom-image"));
        assert_eq!(VmSpec::from_vmx(&vmx, "x"), spec);
    }

    #[test]
    fn disk_slots_the_sata_controller_and_unset_address_types_round_trip() {
        let text = "disk0.present = \"TRUE\"\ndisk0.fileName = \"a.qcow2\"\n\
                    disk0.slot = \"sata0:2\"\ndisk1.present = \"TRUE\"\n\
                    disk1.fileName = \"b.qcow2\"\nethernet0.present = \"TRUE\"\n";
        let spec = VmSpec::from_vmx(&VmxFile::parse(text), "x");
        assert!(spec.sata, "a disk on SATA means the VM has the controller");
        assert_eq!(spec.disks[0].slot, DiskSlot::parse("sata0:2").unwrap());
        assert_eq!(spec.disks[1].slot, DiskSlot::parse("scsi0:0").unwrap());
        assert!(
            spec.nics[0].generated_mac,
            "ESXi generates a MAC nobody wrote"
        );
        let vmx = spec.to_vmx();
        assert_eq!(vmx.get("sata0.present"), Some("TRUE"));
        assert_eq!(VmSpec::from_vmx(&vmx, "x"), spec);
        assert!(spec.extra_config.is_empty(), "{:?}", spec.extra_config);
    }
}
