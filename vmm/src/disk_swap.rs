//! Closing and reopening disk images under a paused VM, so that vireod can freeze the active
//! layer of each disk and start a child (a live snapshot) or merge layers, then hand the VMM
//! the new active layers. The guest sees nothing: its block devices are quiesced meanwhile —
//! unless a disk grew while detached: the guest is then told its new size. Read-only disks
//! (CD-ROM drives) are left open; their medium changes on its own ([`change_medium`]).

use std::path::PathBuf;

use vireo_vmm_protocol::{DiskConfig, DiskFormat};

use crate::devices::virtio::block::disk::{open_image, open_medium};

use crate::devices::bus::lock;
use crate::handle::VmHandle;
use crate::run_state::Phase;

/// Why disks could not be detached or attached.
#[derive(Debug, thiserror::Error)]
pub enum DiskSwapError {
    /// The VM must be paused first.
    #[error("pause the VM before detaching or attaching disks")]
    NotPaused,
    /// The number of paths is not the number of writable disks.
    #[error("{given} paths given for {disks} writable disks")]
    Count {
        /// Paths given.
        given: usize,
        /// Disks the VM has.
        disks: usize,
    },
    /// Flushing an image before closing it failed.
    #[error("cannot flush disk {index}: {source}")]
    Flush {
        /// Disk index.
        index: usize,
        /// Why.
        source: vireo_disk::block::BlockError,
    },
    /// A new image could not be opened.
    #[error("cannot open disk {index} ({path}): {source}")]
    Open {
        /// Disk index.
        index: usize,
        /// The image.
        path: PathBuf,
        /// Why.
        source: vireo_disk::open::OpenError,
    },
    /// A new image's size differs from the disk the guest knows (or is smaller than it).
    #[error("disk {index}: {path} holds {actual} bytes, the guest's disk {expected}")]
    Capacity {
        /// Disk index.
        index: usize,
        /// The image.
        path: PathBuf,
        /// Its capacity.
        actual: u64,
        /// The guest's disk capacity.
        expected: u64,
    },
}

fn ensure_paused(handle: &VmHandle) -> Result<(), DiskSwapError> {
    match handle.run_state.phase() {
        Phase::Paused => Ok(()),
        _ => Err(DiskSwapError::NotPaused),
    }
}

/// The indices of the writable disks (the ones detached and attached).
fn writable(handle: &VmHandle) -> Vec<usize> {
    let config = lock(&handle.config);
    (0..handle.disk_slots.len())
        .filter(|&i| config.disks.get(i).is_some_and(|d| !d.read_only))
        .collect()
}

/// Quiesces every writable block device, flushes and closes its image.
pub fn detach_disks(handle: &VmHandle) -> Result<(), DiskSwapError> {
    ensure_paused(handle)?;
    for index in writable(handle) {
        let slot = &handle.disk_slots[index];
        lock(&handle.transports[index]).quiesce();
        let mut image = lock(&slot.image);
        if let Some(disk) = image.as_ref() {
            disk.flush()
                .map_err(|source| DiskSwapError::Flush { index, source })?;
        }
        // Dropping the image closes it (qcow2: bitmaps written back, lock released).
        *image = None;
    }
    Ok(())
}

/// Opens `paths` as the writable disks (same sizes as before, or larger with `may_grow`) and
/// restarts their block devices; the driver of a disk that grew gets a configuration-change
/// interrupt.
pub fn attach_disks(
    handle: &VmHandle,
    paths: &[PathBuf],
    formats: &[DiskFormat],
    may_grow: bool,
) -> Result<(), DiskSwapError> {
    ensure_paused(handle)?;
    let indices = writable(handle);
    if paths.len() != indices.len() {
        return Err(DiskSwapError::Count {
            given: paths.len(),
            disks: indices.len(),
        });
    }
    let mut config = lock(&handle.config);
    // Open everything first so that a failure changes nothing.
    let mut opened = Vec::with_capacity(indices.len());
    for (&index, path) in indices.iter().zip(paths) {
        let (read_only, cache) = (config.disks[index].read_only, config.disks[index].cache);
        let format = formats.get(opened.len()).copied();
        let image =
            open_image(path, format, read_only, cache).map_err(|source| DiskSwapError::Open {
                index,
                path: path.clone(),
                source,
            })?;
        let expected = handle.disk_slots[index].capacity();
        let grows = may_grow && image.capacity() > expected;
        if image.capacity() != expected && !grows {
            return Err(DiskSwapError::Capacity {
                index,
                path: path.clone(),
                actual: image.capacity(),
                expected,
            });
        }
        opened.push(image);
    }
    for (n, (index, image)) in indices.into_iter().zip(opened).enumerate() {
        let slot = &handle.disk_slots[index];
        let grown = image.capacity() != slot.capacity();
        slot.set_capacity(image.capacity());
        *lock(&slot.image) = Some(image);
        config.disks[index].path = paths[n].clone();
        config.disks[index].format = formats.get(n).copied();
        let mut transport = lock(&handle.transports[index]);
        transport.reactivate();
        if grown {
            transport.config_changed();
        }
    }
    Ok(())
}

/// Why a drive's medium could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum MediumError {
    /// No such disk, or one the guest may write (only read-only drives take media).
    #[error("disk {0} is not a read-only drive")]
    NotADrive(usize),
    /// The new medium could not be opened.
    #[error("cannot open the medium {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: vireo_disk::open::OpenError,
    },
}

/// Puts the raw image at `path` into read-only drive `index` (or empties it): its device is
/// stopped, given the new medium and restarted, and the guest is told the new size.
pub fn change_medium(
    handle: &VmHandle,
    index: usize,
    path: Option<PathBuf>,
) -> Result<(), MediumError> {
    let mut config = lock(&handle.config);
    let disk = config
        .disks
        .get_mut(index)
        .filter(|d| d.read_only)
        .ok_or(MediumError::NotADrive(index))?;
    let medium = DiskConfig {
        path: path.clone().unwrap_or_default(),
        format: path.as_ref().map(|_| DiskFormat::Raw),
        read_only: true,
        serial: disk.serial.clone(),
        no_medium: path.is_none(),
        cache: disk.cache,
    };
    let image = open_medium(&medium).map_err(|source| MediumError::Open {
        path: medium.path.clone(),
        source,
    })?;
    let slot = &handle.disk_slots[index];
    let mut transport = lock(&handle.transports[index]);
    transport.quiesce();
    slot.set_capacity(image.capacity());
    *lock(&slot.image) = Some(image);
    *disk = medium;
    transport.reactivate();
    transport.config_changed();
    Ok(())
}
