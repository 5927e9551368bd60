//! Virtual disks as VirtualDiskManager handles them, by datastore path: create (qcow2 for
//! thin types, raw preallocated for thick ones), copy (the guest-visible content, backing chain
//! flattened, into qcow2 or raw), extend, inflate, zero-fill, move, delete, and the disk's UUID (kept in
//! a qcow2 header extension; raw disks have nowhere to keep one). Files are reached through
//! [`files::Entry`] (the datastore resolver) and new disks appear under their name only when
//! complete. A disk a running VM uses is refused: its VMM has it open.

use std::path::Path;

use nix::fcntl::{fallocate, FallocateFlags};
use vireo_disk::grow::grow_image;
use vireo_disk::open::{probe_format, ImageFormat};
use vireo_disk::qcow2::{self, CreateOptions, Qcow2Image, Qcow2Options};
use vireo_disk::{open_disk, open_disk_as, BlockDevice, BlockError};

use super::files::{self, Entry, EntryKind, FileError};
use crate::host::Host;
use crate::vm::datastore_path::DatastorePath;
use crate::vm::{uuid, Power};

/// The qcow2 header extension holding a disk's UUID (16 bytes): "vidu".
pub const UUID_EXTENSION: u32 = 0x7669_6475;
/// Bytes copied, inflated or zeroed per step (progress is reported between steps).
const STEP_BYTES: u64 = 4 << 20;
/// The blocks a copy checks for zeros (a qcow2 cluster): all-zero ones are not written.
const ZERO_CHECK_BYTES: usize = 64 << 10;

/// Why a virtual disk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VirtualDiskError {
    /// The file could not be reached, made, moved or deleted.
    #[error(transparent)]
    File(#[from] FileError),
    /// The disk type is not one this host makes.
    #[error(
        "disk type '{0}' is not supported (thin, sparse, preallocated, thick, eagerZeroedThick)"
    )]
    UnsupportedType(String),
    /// The file is not a disk, or its content could not be read or written.
    #[error("{path}: {why}")]
    Disk {
        /// The datastore path.
        path: String,
        /// What failed.
        why: String,
    },
    /// A running VM has the disk open.
    #[error("{path} is in use by the running virtual machine '{vm}'")]
    InUse {
        /// The datastore path.
        path: String,
        /// The VM's name.
        vm: String,
    },
    /// A raw disk carries no metadata, hence no UUID.
    #[error("{0} is a raw disk: it has no place for a UUID")]
    NoUuid(String),
    /// Not sixteen hex bytes.
    #[error("'{0}' is not a disk UUID (sixteen hex bytes)")]
    BadUuid(String),
}

fn disk_error(path: &DatastorePath, why: impl std::fmt::Display) -> VirtualDiskError {
    VirtualDiskError::Disk {
        path: path.to_string(),
        why: why.to_string(),
    }
}

/// What a new disk is made as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewDisk {
    /// A qcow2 image growing as it is written (thin).
    Thin,
    /// A raw file with all its blocks allocated (thick).
    Thick,
}

impl NewDisk {
    /// The kind a VirtualDiskSpec `diskType` asks for.
    pub fn of_type(disk_type: &str) -> Result<NewDisk, VirtualDiskError> {
        match disk_type {
            "thin" | "sparse" | "sparseMonolithic" | "sparse2Gb" | "seSparse" | "delta" => {
                Ok(NewDisk::Thin)
            }
            "preallocated" | "thick" | "eagerZeroedThick" | "flatMonolithic" | "thick2Gb" => {
                Ok(NewDisk::Thick)
            }
            other => Err(VirtualDiskError::UnsupportedType(other.to_string())),
        }
    }

    fn of_format(format: ImageFormat) -> NewDisk {
        match format {
            ImageFormat::Qcow2 => NewDisk::Thin,
            ImageFormat::Raw => NewDisk::Thick,
        }
    }

    /// Makes an empty disk of `capacity` bytes at `path` (a new file).
    fn make(self, path: &Path, capacity: u64) -> Result<(), String> {
        match self {
            NewDisk::Thin => {
                qcow2::create(path, &CreateOptions::new(capacity)).map_err(|e| e.to_string())?;
                let mut image =
                    Qcow2Image::open(path, &Qcow2Options::default()).map_err(|e| e.to_string())?;
                let id = uuid::hex_bytes(&uuid::random()).expect("a fresh UUID");
                image
                    .set_extension(UUID_EXTENSION, Some(id.to_vec()))
                    .map_err(|e| e.to_string())?;
                image.close().map_err(|e| e.to_string())
            }
            NewDisk::Thick => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(|e| e.to_string())?;
                if capacity > 0 {
                    fallocate(&file, FallocateFlags::empty(), 0, capacity as i64)
                        .map_err(|e| e.to_string())?;
                }
                file.sync_all().map_err(|e| e.to_string())
            }
        }
    }
}

/// A disk found at a datastore path, checked not to be in a running VM's use.
struct Disk {
    entry: Entry,
    format: ImageFormat,
}

impl Disk {
    fn open(host: &Host, path: &DatastorePath) -> Result<Disk, VirtualDiskError> {
        let entry = Entry::locate(&host.datastores(), path)?;
        match entry.kind()? {
            Some(EntryKind::File) => {}
            None => return Err(FileError::NotFound(path.to_string()).into()),
            Some(_) => return Err(disk_error(path, "not a disk file")),
        }
        refuse_in_use(host, &entry)?;
        let format = probe_format(&entry.via_fd()).map_err(|e| disk_error(path, e))?;
        Ok(Disk { entry, format })
    }

    fn device(&self, read_only: bool) -> Result<Box<dyn BlockDevice>, VirtualDiskError> {
        open_disk_as(&self.entry.via_fd(), self.format, read_only)
            .map_err(|e| disk_error(&self.entry.path, e))
    }

    fn qcow2(&self, read_only: bool) -> Result<Qcow2Image, VirtualDiskError> {
        if self.format != ImageFormat::Qcow2 {
            return Err(VirtualDiskError::NoUuid(self.entry.path.to_string()));
        }
        let options = Qcow2Options {
            read_only,
            ..Qcow2Options::default()
        };
        Qcow2Image::open(&self.entry.via_fd(), &options)
            .map_err(|e| disk_error(&self.entry.path, e))
    }
}

/// InUse when a VM that is not powered off uses the file (its base, as the `.vmx` names it).
fn refuse_in_use(host: &Host, entry: &Entry) -> Result<(), VirtualDiskError> {
    let file = entry.host_path()?;
    for vm in host.vms.all() {
        let state = vm.state();
        if state.power == Power::Off {
            continue;
        }
        let uses = state
            .spec
            .disks
            .iter()
            .filter_map(|d| vm.disk_path(&d.file_name, &host.datastores()).ok())
            .any(|p| p == file);
        if uses {
            return Err(VirtualDiskError::InUse {
                path: entry.path.to_string(),
                vm: state.spec.name.clone(),
            });
        }
    }
    Ok(())
}

/// CreateVirtualDisk: an empty disk of `capacity` bytes at `path`.
pub fn create(
    host: &Host,
    path: &DatastorePath,
    kind: NewDisk,
    capacity: u64,
) -> Result<(), VirtualDiskError> {
    let entry = Entry::locate(&host.datastores(), path)?;
    entry.build_new(|at| kind.make(at, capacity).map_err(|why| disk_error(path, why)))
}

/// CopyVirtualDisk: the guest-visible content of `from` (its backing chain flattened) into a
/// new disk at `to` made as `kind` (the source's own format when `None`); an existing `to` is
/// replaced only with `force`. `progress` hears the percentage done.
pub fn copy(
    host: &Host,
    from: &DatastorePath,
    to: &DatastorePath,
    kind: Option<NewDisk>,
    force: bool,
    progress: &dyn Fn(i32),
) -> Result<(), VirtualDiskError> {
    let source = Disk::open(host, from)?;
    let mut reader = source.device(true)?;
    let capacity = reader.capacity();
    let kind = kind.unwrap_or(NewDisk::of_format(source.format));
    let target = Entry::locate(&host.datastores(), to)?;
    if target.kind()?.is_some() {
        if !force {
            return Err(FileError::Exists(to.to_string()).into());
        }
        delete(host, to)?;
    }
    target.build_new(|at| {
        kind.make(at, capacity).map_err(|why| disk_error(to, why))?;
        let format = match kind {
            NewDisk::Thin => ImageFormat::Qcow2,
            NewDisk::Thick => ImageFormat::Raw,
        };
        let mut writer = open_disk_as(at, format, false).map_err(|e| disk_error(to, e))?;
        each_step(capacity, progress, |offset, buffer| {
            reader
                .read_at(buffer, offset)
                .map_err(|e| disk_error(from, e))?;
            // The new disk reads zeros where nothing is written: zero blocks stay unallocated
            // in a thin copy (a thick one is allocated already).
            for (i, block) in buffer.chunks(ZERO_CHECK_BYTES).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    let at = offset + (i * ZERO_CHECK_BYTES) as u64;
                    writer.write_at(block, at).map_err(|e| disk_error(to, e))?;
                }
            }
            Ok(())
        })?;
        writer.flush().map_err(|e| disk_error(to, e))
    })
}

/// Calls `step` on each [`STEP_BYTES`] span of a disk of `capacity` bytes with a buffer of the
/// span's length, reporting progress after each.
fn each_step(
    capacity: u64,
    progress: &dyn Fn(i32),
    mut step: impl FnMut(u64, &mut [u8]) -> Result<(), VirtualDiskError>,
) -> Result<(), VirtualDiskError> {
    let mut buffer = vec![0u8; STEP_BYTES.min(capacity) as usize];
    let mut offset = 0;
    while offset < capacity {
        let len = (capacity - offset).min(STEP_BYTES) as usize;
        step(offset, &mut buffer[..len])?;
        offset += len as u64;
        progress((offset * 100 / capacity) as i32);
    }
    Ok(())
}

/// InflateVirtualDisk: every block of the disk allocated, its content unchanged (a qcow2
/// disk has each cluster written; a raw one has its holes filled).
pub fn inflate(
    host: &Host,
    path: &DatastorePath,
    progress: &dyn Fn(i32),
) -> Result<(), VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    let mut device = disk.device(false)?;
    let capacity = device.capacity();
    if disk.format == ImageFormat::Raw {
        allocate_raw(&disk, capacity)?;
        progress(100);
        return Ok(());
    }
    rewrite(path, device.as_mut(), progress, |device, offset, buffer| {
        device.read_at(buffer, offset)
    })
}

/// Allocates the first `capacity` bytes of a raw disk's file (its holes filled with zeros).
fn allocate_raw(disk: &Disk, capacity: u64) -> Result<(), VirtualDiskError> {
    let path = &disk.entry.path;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(disk.entry.via_fd())
        .map_err(|e| disk_error(path, e))?;
    fallocate(
        &file,
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        0,
        capacity as i64,
    )
    .map_err(|e| disk_error(path, e))
}

/// ExtendVirtualDisk: the disk grown to `capacity` bytes, its content unchanged (a disk never
/// shrinks; one with snapshot layers is refused, as its layers would disagree on the size).
/// `eager_zero` allocates a raw disk's new blocks; a qcow2 disk stays thin.
pub fn extend(
    host: &Host,
    path: &DatastorePath,
    capacity: u64,
    eager_zero: bool,
) -> Result<(), VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    refuse_layered(host, &disk)?;
    grow_image(&disk.entry.via_fd(), disk.format, capacity).map_err(|e| disk_error(path, e))?;
    if eager_zero && disk.format == ImageFormat::Raw {
        allocate_raw(&disk, capacity)?;
    }
    Ok(())
}

/// Writes every step of `device` back with what `fill` leaves in the step's buffer, reporting
/// progress, then flushes.
fn rewrite(
    path: &DatastorePath,
    device: &mut dyn BlockDevice,
    progress: &dyn Fn(i32),
    fill: impl Fn(&mut dyn BlockDevice, u64, &mut [u8]) -> Result<(), BlockError>,
) -> Result<(), VirtualDiskError> {
    each_step(device.capacity(), progress, |offset, buffer| {
        fill(&mut *device, offset, buffer)
            .and_then(|()| device.write_at(buffer, offset))
            .map_err(|e| disk_error(path, e))
    })?;
    device.flush().map_err(|e| disk_error(path, e))
}

/// ZeroFillVirtualDisk: every block of the disk overwritten with zeros (all data lost),
/// written out rather than marked, so that the zeros are on the storage.
pub fn zero_fill(
    host: &Host,
    path: &DatastorePath,
    progress: &dyn Fn(i32),
) -> Result<(), VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    let mut device = disk.device(false)?;
    rewrite(path, device.as_mut(), progress, |_, _, buffer| {
        buffer.fill(0);
        Ok(())
    })
}

/// DeleteVirtualDisk: the disk file (a disk with snapshot layers belongs to its VM and is
/// refused).
pub fn delete(host: &Host, path: &DatastorePath) -> Result<(), VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    refuse_layered(host, &disk)?;
    Ok(files::delete(&host.datastores(), path)?)
}

/// MoveVirtualDisk: the disk file to `to` (replacing one there only with `force`).
pub fn rename(
    host: &Host,
    from: &DatastorePath,
    to: &DatastorePath,
    force: bool,
) -> Result<(), VirtualDiskError> {
    let disk = Disk::open(host, from)?;
    refuse_layered(host, &disk)?;
    if force && Entry::locate(&host.datastores(), to)?.kind()?.is_some() {
        delete(host, to)?;
    }
    Ok(files::move_entry(&host.datastores(), from, to, false)?)
}

/// A disk with a snapshot tree (a `.vtree` sidecar beside it) is one file of several; moving
/// or deleting it alone would break the others.
fn refuse_layered(host: &Host, disk: &Disk) -> Result<(), VirtualDiskError> {
    let name = Path::new(&disk.entry.path.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sidecar = disk.entry.path.parent().join(&format!("{name}.vtree"));
    if Entry::locate(&host.datastores(), &sidecar)?
        .kind()?
        .is_some()
    {
        return Err(disk_error(
            &disk.entry.path,
            "the disk has snapshot layers; remove its snapshots (or its VM) first",
        ));
    }
    Ok(())
}

/// QueryVirtualDiskUuid: the disk's UUID in ESXi's form (`60 00 c2 ...-...`); a qcow2 disk
/// made elsewhere gets one on first query.
pub fn query_uuid(host: &Host, path: &DatastorePath) -> Result<String, VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    let stored = disk
        .qcow2(true)?
        .extension(UUID_EXTENSION)
        .map(<[u8]>::to_vec);
    let bytes = match stored.as_deref().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        Some(bytes) => bytes,
        None => {
            let fresh = uuid::hex_bytes(&uuid::random()).expect("a fresh UUID");
            store_uuid(&disk, fresh)?;
            fresh
        }
    };
    Ok(uuid::to_vmx(&uuid::from_bytes(&bytes)))
}

/// SetVirtualDiskUuid: stores `text` (sixteen hex bytes in any spelling) as the disk's UUID.
pub fn set_uuid(host: &Host, path: &DatastorePath, text: &str) -> Result<(), VirtualDiskError> {
    let bytes = uuid::hex_bytes(text).ok_or_else(|| VirtualDiskError::BadUuid(text.to_string()))?;
    let disk = Disk::open(host, path)?;
    store_uuid(&disk, bytes)
}

fn store_uuid(disk: &Disk, bytes: [u8; 16]) -> Result<(), VirtualDiskError> {
    let mut image = disk.qcow2(false)?;
    image
        .set_extension(UUID_EXTENSION, Some(bytes.to_vec()))
        .and_then(|()| image.close())
        .map_err(|e| disk_error(&disk.entry.path, e))
}

/// The capacity in bytes of the disk at `path`.
pub fn capacity(host: &Host, path: &DatastorePath) -> Result<u64, VirtualDiskError> {
    let disk = Disk::open(host, path)?;
    let device = open_disk(&disk.entry.via_fd(), true).map_err(|e| disk_error(path, e))?;
    Ok(device.capacity())
}
