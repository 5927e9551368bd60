//! A VMM started ahead of its restore (`--standby FD`, see docs/memory.md): jailed and
//! filtered as any VMM, it creates its KVM VM (irqchip) and registers memory slots over
//! anonymous placeholder memory of the size it was given, then waits on the channel vireod
//! handed it for the restore's own command line and files (SCM_RIGHTS). Creating a VM mostly
//! waits for KVM grace periods — milliseconds each on a loaded host —, which a standby has
//! done before the request to resume comes. If the channel ends first (vireod gone, or the
//! standby no longer wanted), the VMM exits.

use std::ffi::OsString;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use clap::Parser;
use vireo_vmm_protocol::{HandedFd, VmmArgs};
use vm_memory::GuestMemoryMmap;

use crate::devices::framebuffer::FramebufferInfo;
use crate::fd_lines::{LineError, LineReader};
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vm::{Vm, VmError};

/// Longest command line a standby accepts.
const MAX_LINE_BYTES: usize = 1 << 20;

/// Why a standby VMM could not get ready or take its restore.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// Placeholder memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The VM could not be made.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The channel could not be read.
    #[error("standby channel: {0}")]
    Channel(#[from] LineError),
    /// The channel ended before a restore came.
    #[error("standby no longer wanted (its channel ended)")]
    Ended,
    /// The command line sent is not a restore's.
    #[error("standby: bad restore command line: {0}")]
    Args(String),
}

/// A KVM VM made ahead, with slots registered over placeholder memory laid out as a VM of the
/// standby's size (RAM and framebuffer).
pub struct Premade {
    /// The VM and irqchip made.
    pub vm: Vm,
    /// The placeholder memory its slots point at; a restore maps the memory file over it.
    pub memory: GuestMemoryMmap,
}

impl Premade {
    /// Makes the VM and its slots for `memory_mib` of RAM and `framebuffer`.
    pub fn make(memory_mib: u64, framebuffer: (u32, u32)) -> Result<Premade, StandbyError> {
        let framebuffer = FramebufferInfo::new(framebuffer.0, framebuffer.1);
        let memory =
            create_guest_memory(memory_mib << 20, &[(framebuffer.addr, framebuffer.size())])?;
        let vm = Vm::new(&memory)?;
        Ok(Premade { vm, memory })
    }
}

/// Waits on `channel` for the restore's command line (after the program name, as
/// [`VmmArgs::to_argv`] makes it) and the files it hands over, in the order of its `--file`
/// options; returns the arguments naming the received descriptors.
pub fn wait_for_restore(channel: RawFd) -> Result<VmmArgs, StandbyError> {
    // SAFETY: vireod handed this descriptor for the channel alone; nothing else owns it.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(channel) });
    let line = LineReader::new(stream, MAX_LINE_BYTES)
        .next_line()?
        .ok_or(StandbyError::Ended)?;
    let argv: Vec<OsString> = serde_json::from_str::<Vec<String>>(&line.text)
        .map_err(|e| StandbyError::Args(e.to_string()))?
        .into_iter()
        .map(OsString::from)
        .collect();
    let mut args =
        VmmArgs::try_parse_from(std::iter::once(OsString::from("vireo-vmm")).chain(argv))
            .map_err(|e| StandbyError::Args(e.to_string()))?;
    if args.restore.is_none() || args.standby.is_some() {
        return Err(StandbyError::Args("not a restore".into()));
    }
    if args.files.len() != line.fds.len() {
        return Err(StandbyError::Args(format!(
            "{} files named, {} sent",
            args.files.len(),
            line.fds.len()
        )));
    }
    args.files = args
        .files
        .into_iter()
        .zip(line.fds)
        .map(|(file, fd)| HandedFd {
            fd: fd.into_raw_fd(),
            path: file.path,
        })
        .collect();
    Ok(args)
}
