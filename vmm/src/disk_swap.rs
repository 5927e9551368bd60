//! Closing and reopening disk images under a paused VM, so that vireod can freeze the active
//! layer of each disk and start a child (a live snapshot) or merge layers, then hand the VMM
//! the new active layers. The guest sees nothing: its block devices are quiesced meanwhile.

use std::path::PathBuf;

use vireo_vmm_protocol::DiskFormat;

use crate::devices::virtio::block::disk::open_image;

use crate::devices::bus::lock;
use crate::handle::VmHandle;
use crate::run_state::Phase;

/// Why disks could not be detached or attached.
#[derive(Debug, thiserror::Error)]
pub enum DiskSwapError {
    /// The VM must be paused first.
    #[error("pause the VM before detaching or attaching disks")]
    NotPaused,
    /// The number of paths is not the number of disks.
    #[error("{given} paths given for {disks} disks")]
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
    /// A new image's size differs from the disk the guest knows.
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

/// Quiesces every block device, flushes and closes its image.
pub fn detach_disks(handle: &VmHandle) -> Result<(), DiskSwapError> {
    ensure_paused(handle)?;
    for (index, slot) in handle.disk_slots.iter().enumerate() {
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

/// Opens `paths` as the disks (same sizes as before) and restarts the block devices.
pub fn attach_disks(
    handle: &VmHandle,
    paths: &[PathBuf],
    formats: &[DiskFormat],
) -> Result<(), DiskSwapError> {
    ensure_paused(handle)?;
    let disks = handle.disk_slots.len();
    if paths.len() != disks {
        return Err(DiskSwapError::Count {
            given: paths.len(),
            disks,
        });
    }
    let mut config = lock(&handle.config);
    // Open everything first so that a failure changes nothing.
    let mut opened = Vec::with_capacity(disks);
    for (index, path) in paths.iter().enumerate() {
        let read_only = config.disks[index].read_only;
        let format = formats.get(index).copied();
        let image = open_image(path, format, read_only).map_err(|source| DiskSwapError::Open {
            index,
            path: path.clone(),
            source,
        })?;
        let expected = handle.disk_slots[index].capacity;
        if image.capacity() != expected {
            return Err(DiskSwapError::Capacity {
                index,
                path: path.clone(),
                actual: image.capacity(),
                expected,
            });
        }
        opened.push(image);
    }
    for (index, image) in opened.into_iter().enumerate() {
        *lock(&handle.disk_slots[index].image) = Some(image);
        config.disks[index].path = paths[index].clone();
        config.disks[index].format = formats.get(index).copied();
        lock(&handle.transports[index]).reactivate();
    }
    Ok(())
}
