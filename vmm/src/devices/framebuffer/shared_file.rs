//! The framebuffer's guest memory as a shared mapping of a file (`--framebuffer-file`), so that
//! a console server (vireod) can map the same file read-only and read the pixels the guest draws
//! without a copy through this process. The file is mapped over the framebuffer's region in
//! place; RAM stays as it is.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::FramebufferInfo;
use crate::vstate::memory::map_file_over;

/// Why the framebuffer could not be moved onto its file.
#[derive(Debug, thiserror::Error)]
pub enum FramebufferFileError {
    /// The file could not be created, sized or filled.
    #[error("cannot create framebuffer file {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The current pixels could not be read out of guest memory.
    #[error("cannot read the framebuffer region: {0}")]
    Read(#[from] vm_memory::GuestMemoryError),
    /// Mapping the file or swapping the region failed.
    #[error("cannot map framebuffer file {path}: {reason}")]
    Map {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Returns `memory` with the framebuffer region's pages replaced, at the same address, by a
/// shared mapping of a new file at `path` holding the same pixels. The file is built beside `path` and renamed into place, so
/// a reader never maps a half-written one and a previous VMM's file is replaced, not reused.
pub fn share_through_file(
    memory: &GuestMemoryMmap,
    info: &FramebufferInfo,
    path: &Path,
) -> Result<GuestMemoryMmap, FramebufferFileError> {
    let create = |source| FramebufferFileError::Create {
        path: path.to_owned(),
        source,
    };
    let map = |reason: String| FramebufferFileError::Map {
        path: path.to_owned(),
        reason,
    };
    let mut pixels = vec![0u8; info.size() as usize];
    memory.read_slice(&mut pixels, GuestAddress(info.addr))?;

    let partial = path.with_extension("partial");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(create)?;
    write_sparse(&file, &pixels).map_err(create)?;
    std::fs::rename(&partial, path).map_err(create)?;

    let region = memory
        .find_region(GuestAddress(info.addr))
        .filter(|region| region.start_addr().0 == info.addr && region.len() == info.size())
        .ok_or_else(|| map("no framebuffer region to map it over".into()))?;
    // In place: a memory slot already registered over the region (a standby VMM's) stays valid.
    map_file_over(region, &file, 0, true).map_err(|e| map(e.to_string()))?;
    Ok(memory.clone())
}

/// Writes `bytes` into the empty `file`, leaving pages that are zero as holes (a blank or
/// mostly dark screen costs next to no writing).
fn write_sparse(file: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.set_len(bytes.len() as u64)?;
    let mut offset = 0;
    for page in bytes.chunks(PAGE_BYTES) {
        if page.iter().any(|&b| b != 0) {
            file.write_all_at(page, offset)?;
        }
        offset += page.len() as u64;
    }
    Ok(())
}

/// The unit [`write_sparse`] leaves as a hole.
const PAGE_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_move_to_the_file_and_guest_writes_reach_it() {
        let info = FramebufferInfo {
            addr: 0x10_0000,
            width: 16,
            height: 4,
            stride: 64,
        };
        let memory = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(info.addr), info.size() as usize),
        ])
        .unwrap();
        memory
            .write_slice(&[1, 2, 3, 4], GuestAddress(info.addr))
            .unwrap();
        let dir = std::env::temp_dir().join(format!("vireo-fb-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("framebuffer");

        let shared = share_through_file(&memory, &info, &path).unwrap();
        shared
            .write_slice(&[9, 9], GuestAddress(info.addr + 64))
            .unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, info.size());
        assert_eq!(&file[..4], &[1, 2, 3, 4]);
        assert_eq!(&file[64..66], &[9, 9]);
        assert!(!path.with_extension("partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_mapped_in_place_and_blank_pages_stay_holes() {
        use std::os::unix::fs::MetadataExt;
        let info = FramebufferInfo {
            addr: 0x10_0000,
            width: 1024,
            height: 64,
            stride: 4096,
        };
        let memory =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(info.addr), info.size() as usize)])
                .unwrap();
        let at = |offset: u64| GuestAddress(info.addr + offset);
        memory.write_slice(&[7; 8], at(9 * 4096 + 5)).unwrap();
        let before = memory.find_region(at(0)).unwrap().as_ptr();
        let dir = std::env::temp_dir().join(format!("vireo-fb-holes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("framebuffer");

        let shared = share_through_file(&memory, &info, &path).unwrap();
        assert_eq!(
            shared.find_region(at(0)).unwrap().as_ptr(),
            before,
            "same address"
        );
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, info.size());
        assert_eq!(&file[9 * 4096 + 5..9 * 4096 + 13], &[7; 8]);
        assert_eq!(file.iter().filter(|&&b| b != 0).count(), 8);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < info.size() / 2, "{allocated} bytes allocated");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
