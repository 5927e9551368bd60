//! Facts about this machine's storage, firmware, scheduler and processes, read from /sys and
//! /proc for the host's storage, power, boot-device, CPU-scheduler and service views. Each
//! reader has a pure parser beside it so the parsing is tested without the machine's files.

use std::path::Path;

/// A physical block device (one with a `device` link in /sys/block; loop, zram and device-mapper
/// devices are not disks of the machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vda`, `sda`, `nvme0n1`).
    pub name: String,
    /// Vendor string (or PCI vendor id for virtio).
    pub vendor: String,
    /// Model string, when the device reports one.
    pub model: String,
    /// Logical block size in bytes.
    pub block_size: i32,
    /// Size in logical blocks.
    pub blocks: i64,
    /// Spinning (`queue/rotational`).
    pub rotational: bool,
}

impl BlockDevice {
    /// Size in bytes.
    pub fn bytes(&self) -> i64 {
        self.blocks * i64::from(self.block_size)
    }
}

/// The machine's physical block devices, by name.
pub fn block_devices() -> Vec<BlockDevice> {
    let root = Path::new("/sys/block");
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut devices: Vec<BlockDevice> = entries
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .filter_map(|e| block_device(&e.path()))
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

fn block_device(dir: &Path) -> Option<BlockDevice> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let sectors: i64 = read("size").parse().ok()?;
    let block_size: i32 = read("queue/logical_block_size").parse().unwrap_or(512);
    Some(BlockDevice {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        vendor: read("device/vendor"),
        model: read("device/model"),
        // /sys/block/*/size counts 512-byte sectors whatever the logical block size.
        blocks: sectors * 512 / i64::from(block_size.max(512)),
        block_size: block_size.max(512),
        rotational: read("queue/rotational") == "1",
    })
}

/// One mounted filesystem from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// The mount source (`/dev/vda`).
    pub source: String,
    /// Filesystem type (`ext4`).
    pub fstype: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The machine's mounted filesystems.
pub fn mounts() -> Vec<Mount> {
    parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Parses mountinfo text (the first mount of each point wins).
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(point), Some(options), Some(fstype), Some(source)) =
            (left.get(4), left.get(5), right.first(), right.get(1))
        else {
            continue;
        };
        if mounts.iter().any(|m| m.point == unescape(point)) {
            continue;
        }
        mounts.push(Mount {
            point: unescape(point),
            source: unescape(source),
            fstype: fstype.to_string(),
            read_only: options.split(',').any(|o| o == "ro"),
        });
    }
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Mount {
    /// A filesystem on a block device of the machine (its source is under /dev/).
    pub fn on_disk(&self) -> bool {
        self.source.starts_with("/dev/")
    }
}

/// The mount holding `path`: the longest mount point that is a prefix of it.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.len())
}

/// The firmware's identity from DMI (absent on machines without SMBIOS tables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firmware {
    /// BIOS vendor.
    pub vendor: Option<String>,
    /// BIOS version.
    pub version: Option<String>,
    /// BIOS release date as DMI writes it (`MM/DD/YYYY`).
    pub date: Option<String>,
    /// System vendor.
    pub system_vendor: Option<String>,
    /// System product name.
    pub product: Option<String>,
    /// Booted through UEFI (`/sys/firmware/efi` exists).
    pub uefi: bool,
}

/// Reads the firmware facts.
pub fn firmware() -> Firmware {
    let dmi = |name: &str| {
        std::fs::read_to_string(Path::new("/sys/class/dmi/id").join(name))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    Firmware {
        vendor: dmi("bios_vendor"),
        version: dmi("bios_version"),
        date: dmi("bios_date"),
        system_vendor: dmi("sys_vendor"),
        product: dmi("product_name"),
        uefi: Path::new("/sys/firmware/efi").exists(),
    }
}

/// Simultaneous multithreading: whether the CPUs have it and whether it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Smt {
    /// The processors support SMT and the kernel can control it.
    pub available: bool,
    /// SMT is on.
    pub active: bool,
}

/// Reads /sys/devices/system/cpu/smt.
pub fn smt() -> Smt {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new("/sys/devices/system/cpu/smt").join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    parse_smt(&read("control"), &read("active"))
}

/// Interprets the SMT `control` and `active` files.
pub fn parse_smt(control: &str, active: &str) -> Smt {
    Smt {
        available: matches!(control, "on" | "off" | "forceoff"),
        active: active == "1",
    }
}

/// The cpufreq governor of CPU 0, when the machine scales its frequency.
pub fn cpufreq_governor() -> Option<String> {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The names (`comm`) of every process running on the machine.
pub fn process_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 254:0 / /srv/my\\040data ro,relatime - ext4 /dev/vdb1 ro
29 27 254:0 / / rw,relatime - ext4 /dev/vdc rw
";

    #[test]
    fn mountinfo_keeps_each_point_once_with_escapes_undone() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 3);
        assert!(!mounts[0].on_disk());
        let mounts: Vec<_> = mounts.into_iter().filter(Mount::on_disk).collect();
        assert_eq!(mounts[0].point, "/");
        assert_eq!(mounts[0].source, "/dev/vda");
        assert!(!mounts[0].read_only);
        assert_eq!(mounts[1].point, "/srv/my data");
        assert!(mounts[1].read_only);
        assert_eq!(mounts[1].fstype, "ext4");
    }

    #[test]
    fn the_longest_mount_point_holds_a_path() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let held = |p: &str| mount_of(&mounts, Path::new(p)).map(|m| m.source.clone());
        assert_eq!(held("/srv/my data/x").as_deref(), Some("/dev/vdb1"));
        assert_eq!(held("/srv/other").as_deref(), Some("/dev/vda"));
    }

    #[test]
    fn smt_control_states() {
        assert_eq!(
            parse_smt("notsupported", "0"),
            Smt {
                available: false,
                active: false
            }
        );
        assert_eq!(
            parse_smt("on", "1"),
            Smt {
                available: true,
                active: true
            }
        );
        assert!(parse_smt("off", "0").available);
    }

    #[test]
    fn this_machines_disks_have_sizes() {
        for disk in block_devices() {
            assert!(disk.bytes() >= 0 && disk.block_size >= 512, "{disk:?}");
        }
    }
}
