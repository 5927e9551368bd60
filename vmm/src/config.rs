//! What one VM is made of, as given on the `vireo-vmm` command line, and its validation.

use std::path::PathBuf;

use crate::arch::layout;

/// Largest vCPU count (APIC ids are one byte and the IOAPIC takes the id after the last CPU).
pub const MAX_VCPUS: u8 = 254;
/// Smallest guest memory we boot (the boot structures and a kernel must fit).
pub const MIN_MEMORY_MIB: u64 = 8;

pub use vireo_vmm_protocol::{DiskConfig, LogRotation, NetConfig};

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
    /// vCPUs per socket (all in one socket when absent).
    #[serde(default)]
    pub cores_per_socket: Option<u8>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// File receiving the serial console (appended).
    pub serial_log: Option<PathBuf>,
    /// How the serial log rotates.
    #[serde(default)]
    pub serial_log_rotation: LogRotation,
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
            cores_per_socket: None,
            memory_mib: 128,
            serial_log: None,
            serial_log_rotation: LogRotation::default(),
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
    /// Cores per socket that do not split the vCPUs into whole sockets on APIC id bounds.
    #[error("--cores-per-socket {0} must be a power of two dividing --vcpus {1}")]
    CoresPerSocket(u8, u8),
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
        if let Some(cores) = self.cores_per_socket {
            if !cores.is_power_of_two() || !self.vcpus.is_multiple_of(cores) {
                return Err(ConfigError::CoresPerSocket(cores, self.vcpus));
            }
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
