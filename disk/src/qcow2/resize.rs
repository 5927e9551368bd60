//! Growing a qcow2 image: a larger guest size in the header, with the L1 table extended in
//! place (its clusters hold 4 TiB of guest space at 64 KiB clusters). Shrinking, images with
//! persistent bitmaps (their tables are sized for the old disk) and an L1 table that would
//! outgrow its clusters are refused; nothing is written then.

use super::header::MAX_L1_ENTRIES;
use super::image::Qcow2Image;
use crate::block::BlockError;

/// Why an image could not grow.
#[derive(Debug, thiserror::Error)]
pub enum Qcow2GrowError {
    /// The image is open read-only.
    #[error("the image is read-only")]
    ReadOnly,
    /// The new size is smaller than the disk.
    #[error("{size} bytes is smaller than the disk's {current}: disks never shrink")]
    Shrink {
        /// Asked for.
        size: u64,
        /// The disk's size.
        current: u64,
    },
    /// The image carries persistent dirty bitmaps (changed-block tracking).
    #[error("the image carries change-tracking bitmaps sized for its current size")]
    Bitmaps,
    /// The L1 table would need more clusters than it has.
    #[error("{size} bytes needs {entries} L1 entries; the table has room for {room}")]
    L1Room {
        /// Asked for.
        size: u64,
        /// L1 entries that size needs.
        entries: u64,
        /// Entries the table's clusters hold.
        room: u64,
    },
    /// Writing the image failed.
    #[error(transparent)]
    Write(#[from] BlockError),
}

impl Qcow2Image {
    /// Grows the guest-visible size to `size` bytes (same size: nothing happens). Metadata is
    /// written back first, the new L1 entries are zeroed and synced, then the header moves.
    pub fn grow(&mut self, size: u64) -> Result<(), Qcow2GrowError> {
        let current = self.header.size;
        if self.read_only {
            return Err(Qcow2GrowError::ReadOnly);
        }
        if size < current {
            return Err(Qcow2GrowError::Shrink { size, current });
        }
        if size == current {
            return Ok(());
        }
        if self.bitmaps.as_ref().is_some_and(|b| !b.entries.is_empty()) {
            return Err(Qcow2GrowError::Bitmaps);
        }
        let cs = self.cluster_size();
        let entries = size.div_ceil(cs / 8 * cs);
        let room = ((self.l1.len() as u64 * 8).div_ceil(cs) * cs / 8).min(MAX_L1_ENTRIES);
        if entries > room {
            return Err(Qcow2GrowError::L1Room {
                size,
                entries,
                room,
            });
        }
        self.write_back_metadata()?;
        let old = self.l1.len() as u64;
        if entries > old {
            let zeros = vec![0u8; ((entries - old) * 8) as usize];
            self.file
                .write_all(&zeros, self.header.l1_table_offset + old * 8)?;
            self.file.sync()?;
            self.l1.resize(entries as usize, 0);
        }
        self.header.size = size;
        self.header.l1_size = self.l1.len() as u32;
        self.write_header()?;
        Ok(())
    }
}
