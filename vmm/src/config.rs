//! What one VM is made of, as given on the `vireo-vmm` command line, and its validation.

use std::path::PathBuf;

use crate::arch::layout;

/// Largest vCPU count (APIC ids are one byte and the IOAPIC takes the id after the last CPU).
pub const MAX_VCPUS: u8 = 254;
/// Smallest guest memory we boot (the boot structures and a kernel must fit).
pub const MIN_MEMORY_MIB: u64 = 8;

/// One virtio-blk disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskConfig {
    /// Image file (raw or qcow2).
    pub path: PathBuf,
    /// Whether the guest may only read it.
    pub read_only: bool,
    /// Serial number the guest reads with GET_ID.
    pub serial: Option<String>,
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// Parses `path=FILE[,readonly=on|off][,serial=TEXT]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut disk = DiskConfig::default();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("path", path)) if !path.is_empty() => disk.path = PathBuf::from(path),
                Some(("readonly", "on")) => disk.read_only = true,
                Some(("readonly", "off")) => disk.read_only = false,
                Some(("serial", serial)) => disk.serial = Some(serial.to_owned()),
                _ => {
                    return Err(format!(
                    "unknown disk option {part:?} (expected path=FILE,readonly=on|off,serial=TEXT)"
                ))
                }
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err("a disk needs path=FILE".into());
        }
        Ok(disk)
    }
}

/// One virtio-net card on an existing TAP.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// TAP interface name (the VMM opens it; it creates nothing).
    pub tap: String,
    /// MAC address; derived from the TAP name when absent.
    pub mac: Option<[u8; 6]>,
}

impl NetConfig {
    /// The MAC the guest sees: the given one, or a locally administered one from the TAP name.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac.unwrap_or_else(|| {
            let hash = self.tap.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            let [a, b, c, _] = hash.to_le_bytes();
            [0x52, 0x54, 0x00, a, b, c]
        })
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// Parses `tap=NAME[,mac=52:54:00:12:34:56]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut net = NetConfig::default();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("tap", name)) if !name.is_empty() => net.tap = name.to_owned(),
                Some(("mac", mac)) => {
                    net.mac =
                        Some(parse_mac(mac).ok_or_else(|| format!("bad MAC address {mac:?}"))?)
                }
                _ => {
                    return Err(format!(
                        "unknown net option {part:?} (expected tap=NAME,mac=XX:XX:XX:XX:XX:XX)"
                    ))
                }
            }
        }
        if net.tap.is_empty() {
            return Err("a NIC needs tap=NAME".into());
        }
        Ok(net)
    }
}

/// The VM to build.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VmConfig {
    /// Kernel image: a PVH ELF (our test guest, Linux vmlinux) or a Linux bzImage.
    pub kernel: PathBuf,
    /// Optional initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// File receiving the serial console (appended).
    pub serial_log: Option<PathBuf>,
    /// Whether the serial console also goes to stdout and stdin feeds it.
    pub serial_stdio: bool,
    /// Unix socket on which to serve the control protocol.
    pub control_socket: Option<PathBuf>,
    /// virtio-blk disks, in the order the guest sees them.
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards, after the disks.
    pub nets: Vec<NetConfig>,
    /// Framebuffer width and height in pixels.
    pub framebuffer: (u32, u32),
    /// File whose shared mapping backs the framebuffer (readers see the pixels live).
    #[serde(default)]
    pub framebuffer_file: Option<PathBuf>,
    /// Unix socket for the host end of the tools channel (a virtio-console port).
    pub tools_socket: Option<PathBuf>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: PathBuf::new(),
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            memory_mib: 128,
            serial_log: None,
            serial_stdio: false,
            control_socket: None,
            disks: Vec::new(),
            nets: Vec::new(),
            framebuffer: (1024, 768),
            framebuffer_file: None,
            tools_socket: None,
        }
    }
}

/// Why a configuration cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// vCPU count out of range.
    #[error("--vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    VcpuCount(u8),
    /// Guest memory too small.
    #[error("--memory-mib must be at least {MIN_MEMORY_MIB}, got {0}")]
    MemoryTooSmall(u64),
    /// Guest memory too large to address.
    #[error("--memory-mib {0} is larger than this VMM can map")]
    MemoryTooLarge(u64),
    /// Command line too long.
    #[error("kernel command line is {0} bytes; the limit is {limit}", limit = layout::CMDLINE_MAX_SIZE - 1)]
    CmdlineTooLong(usize),
    /// More virtio devices than interrupt lines for them.
    #[error("{0} virtio devices requested; at most {max} fit", max = layout::VIRTIO_GSIS.len())]
    TooManyDevices(usize),
    /// Framebuffer size out of range.
    #[error("framebuffer {0}x{1} is outside 64x64..4096x4096")]
    FramebufferSize(u32, u32),
    /// The command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
}

impl VmConfig {
    /// Checks every limit that does not need the files.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpus));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if self.memory_mib > (1 << 30) {
            return Err(ConfigError::MemoryTooLarge(self.memory_mib));
        }
        if self.cmdline.len() >= layout::CMDLINE_MAX_SIZE {
            return Err(ConfigError::CmdlineTooLong(self.cmdline.len()));
        }
        let (width, height) = self.framebuffer;
        if !(64..=4096).contains(&width) || !(64..=4096).contains(&height) {
            return Err(ConfigError::FramebufferSize(width, height));
        }
        let devices = self.disks.len() + self.nets.len() + usize::from(self.tools_socket.is_some());
        if devices > layout::VIRTIO_GSIS.len() {
            return Err(ConfigError::TooManyDevices(devices));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        Ok(())
    }

    /// Guest memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 64,
            ..Default::default()
        }
    }

    #[test]
    fn limits_are_enforced_with_clear_errors() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(
            VmConfig {
                memory_mib: 0,
                ..config()
            }
            .validate(),
            Err(ConfigError::MemoryTooSmall(0))
        );
        assert_eq!(
            VmConfig {
                vcpus: 0,
                ..config()
            }
            .validate(),
            Err(ConfigError::VcpuCount(0))
        );
        assert_eq!(
            VmConfig {
                vcpus: 255,
                ..config()
            }
            .validate(),
            Err(ConfigError::VcpuCount(255))
        );
        let long = "x".repeat(layout::CMDLINE_MAX_SIZE);
        assert_eq!(
            VmConfig {
                cmdline: long,
                ..config()
            }
            .validate(),
            Err(ConfigError::CmdlineTooLong(4096))
        );
        assert_eq!(
            ConfigError::MemoryTooSmall(0).to_string(),
            "--memory-mib must be at least 8, got 0"
        );
    }
}
