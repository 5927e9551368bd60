//! Save and restore of a whole VM (SuspendVM, memory snapshots): vCPU state, KVM's in-kernel
//! irqchip/PIT/clock, device state and the configuration go into a versioned state file
//! (`vm.state`: magic, version, length, CRC-32, JSON payload, size-capped); guest memory goes
//! into `vm.mem`, which a restore maps MAP_PRIVATE so the file is never written back.
//! The on-disk layout is described in vmm/FORMAT.md.

pub mod dirty;
pub mod memory;
pub mod restore;
pub mod save;
pub mod vcpu;
pub mod vm;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Crc;
use serde::{Deserialize, Serialize};

use crate::config::VmConfig;
use crate::devices::legacy::pit::PitState;
use crate::devices::legacy::pm::PmState;
use crate::devices::legacy::rtc::CmosState;
use crate::devices::legacy::serial::SerialPortState;
use crate::devices::virtio::mmio::TransportState;

/// First bytes of a state file.
pub const STATE_MAGIC: [u8; 8] = *b"VIREOVMS";
/// Version of the state payload this VMM writes and reads.
pub const STATE_VERSION: u32 = 1;
/// Largest payload accepted.
pub const STATE_MAX_BYTES: u64 = 64 << 20;
/// Name of the state file in a save directory.
pub const STATE_FILE: &str = "vm.state";
/// Name of the memory file in a save directory.
pub const MEMORY_FILE: &str = "vm.mem";
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

/// Everything but guest memory.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmSnapshot {
    /// What the VM was built from.
    pub config: VmConfig,
    /// One entry per vCPU, in index order.
    pub vcpus: Vec<vcpu::VcpuState>,
    /// KVM's VM-wide state.
    pub kvm: vm::KvmVmState,
    /// Legacy device state.
    pub serial: SerialPortState,
    /// ACPI PM1 registers.
    pub pm: PmState,
    /// CMOS index and NVRAM.
    pub cmos: CmosState,
    /// The PIT (absent from state files written while the PIT was KVM's: see `kvm.pit`).
    #[serde(default)]
    pub pit: Option<PitState>,
    /// One entry per virtio transport, in bus order.
    pub virtio: Vec<TransportState>,
    /// Guest memory regions as (guest address, length, offset in the memory file).
    pub memory: Vec<memory::MemoryRegionEntry>,
}

impl VmSnapshot {
    /// The PIT's saved state, from whichever place the file keeps it.
    pub fn pit_state(&self) -> Option<PitState> {
        self.pit
            .clone()
            .or_else(|| self.kvm.pit.as_ref().map(vm::pit_from_kvm))
    }
}

/// Errors reading or writing a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// File I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not a state file.
    #[error("{0}: not a vireo-vmm state file (bad magic)")]
    Magic(PathBuf),
    /// Written by an incompatible VMM.
    #[error("{path}: state version {found} is not the supported version {STATE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The length field is absurd or the file is short.
    #[error("{path}: payload of {len} bytes is truncated or over the {STATE_MAX_BYTES}-byte cap")]
    Length {
        /// The file.
        path: PathBuf,
        /// Declared length.
        len: u64,
    },
    /// The payload does not match its checksum.
    #[error("{0}: checksum mismatch (the file is corrupt)")]
    Checksum(PathBuf),
    /// The payload does not decode.
    #[error("{path}: cannot decode state: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Writes `snapshot` to `path` (through a temporary file renamed into place, then synced).
pub fn write_state_file(path: &Path, snapshot: &VmSnapshot) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = encode_state(path, snapshot)?;
    let partial = path.with_extension("state.partial");
    let mut file = File::create(&partial).map_err(io)?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&partial, path).map_err(io)
}

/// Writes `snapshot` into `file` (empty, sent by vireod, which names it `path` and syncs it
/// once the guest runs again).
pub fn write_state_into(
    mut file: File,
    path: &Path,
    snapshot: &VmSnapshot,
) -> Result<(), StateFileError> {
    let bytes = encode_state(path, snapshot)?;
    file.write_all(&bytes).map_err(|source| StateFileError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The bytes of a state file holding `snapshot` (`path` names it in errors).
fn encode_state(path: &Path, snapshot: &VmSnapshot) -> Result<Vec<u8>, StateFileError> {
    let payload = serde_json::to_vec(snapshot).map_err(|source| StateFileError::Decode {
        path: path.to_owned(),
        source,
    })?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&STATE_MAGIC);
    bytes.extend_from_slice(&STATE_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Reads and checks a state file.
pub fn read_state_file(path: &Path) -> Result<VmSnapshot, StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = crate::handed::open_once(path).map_err(io)?;
    let mut header = [0u8; HEADER_BYTES];
    file.read_exact(&mut header)
        .map_err(|_| StateFileError::Magic(path.to_owned()))?;
    if header[..8] != STATE_MAGIC {
        return Err(StateFileError::Magic(path.to_owned()));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
    if version != STATE_VERSION {
        return Err(StateFileError::Version {
            path: path.to_owned(),
            found: version,
        });
    }
    let len = u64::from_le_bytes(header[12..20].try_into().unwrap_or_default());
    let checksum = u32::from_le_bytes(header[20..24].try_into().unwrap_or_default());
    if len > STATE_MAX_BYTES {
        return Err(StateFileError::Length {
            path: path.to_owned(),
            len,
        });
    }
    let mut payload = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut payload).map_err(io)?;
    if payload.len() as u64 != len {
        return Err(StateFileError::Length {
            path: path.to_owned(),
            len,
        });
    }
    if crc32(&payload) != checksum {
        return Err(StateFileError::Checksum(path.to_owned()));
    }
    serde_json::from_slice(&payload).map_err(|source| StateFileError::Decode {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> VmSnapshot {
        VmSnapshot {
            config: VmConfig {
                kernel: "/k".into(),
                vcpus: 2,
                ..Default::default()
            },
            vcpus: Vec::new(),
            kvm: vm::KvmVmState {
                irqchips: Vec::new(),
                pit: None,
                clock: Default::default(),
            },
            serial: Default::default(),
            pm: Default::default(),
            cmos: CmosState {
                index: 3,
                nvram: vec![7; 128],
            },
            pit: Some(PitState::default()),
            virtio: Vec::new(),
            memory: vec![memory::MemoryRegionEntry {
                guest_addr: 0,
                len: 4096,
                file_offset: 0,
            }],
        }
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vireo-state-{}-{name}", std::process::id()))
    }

    #[test]
    fn state_files_round_trip_and_damage_is_detected() {
        let path = temp("roundtrip");
        write_state_file(&path, &snapshot()).unwrap();
        let back = read_state_file(&path).unwrap();
        assert_eq!(back.cmos.nvram, vec![7; 128]);
        assert_eq!(back.config.vcpus, 2);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateFileError::Checksum(_))
        ));

        bytes[0] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateFileError::Magic(_))
        ));

        write_state_file(&path, &snapshot()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 9;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateFileError::Version { found: 9, .. })
        ));

        // A huge declared length is refused before anything is allocated.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 1;
        bytes[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateFileError::Length { .. })
        ));

        // Truncated payload.
        write_state_file(&path, &snapshot()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            read_state_file(&path),
            Err(StateFileError::Length { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_state_file_with_kvm_s_pit_gives_its_pit_to_ours() {
        let path = temp("kvm-pit");
        let mut old = snapshot();
        old.pit = None;
        let mut kvm_pit = kvm_bindings::kvm_pit_state2::default();
        kvm_pit.channels[0].mode = 2;
        kvm_pit.channels[0].rw_mode = 3;
        kvm_pit.channels[0].count = 1193;
        old.kvm.pit = Some(kvm_pit);
        write_state_file(&path, &old).unwrap();
        let back = read_state_file(&path).unwrap();
        assert_eq!(back.pit_state(), Some(vm::pit_from_kvm(&kvm_pit)));
        assert_eq!(back.pit_state().unwrap().channels[0].reload, 1193);
        std::fs::remove_file(&path).unwrap();
    }
}
