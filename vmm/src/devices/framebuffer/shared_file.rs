//! The framebuffer's guest memory as a shared mapping of a file (`--framebuffer-file`), so that
//! a console server (vireod) can map the same file read-only and read the pixels the guest draws
//! without a copy through this process. The file is mapped over the framebuffer's region in
//! place; RAM stays as it is.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::copy_file_range;
use nix::unistd::{lseek, Whence};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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

/// The pixels a framebuffer file starts with.
#[derive(Clone, Copy, Debug)]
pub enum FirstPixels<'a> {
    /// A blank screen: the framebuffer's memory is new (the file is all holes).
    Blank,
    /// The region's bytes as `file` holds them from `offset` (a saved VM's memory file): copied
    /// file to file by the kernel, holes kept, so that a restore neither faults the saved
    /// pixels into this process nor writes a blank screen's zeros.
    Saved {
        /// The memory file.
        file: &'a File,
        /// Where the framebuffer region starts in it.
        offset: u64,
    },
}

/// Returns `memory` with the framebuffer region's pages replaced, at the same address, by a
/// shared mapping of a new file at `path` holding `first`. The file is built beside `path` and
/// renamed into place, so a reader never maps a half-written one and a previous VMM's file is
/// replaced, not reused.
pub fn share_through_file(
    memory: &GuestMemoryMmap,
    info: &FramebufferInfo,
    path: &Path,
    first: FirstPixels,
) -> Result<GuestMemoryMmap, FramebufferFileError> {
    let create = |source| FramebufferFileError::Create {
        path: path.to_owned(),
        source,
    };
    let map = |reason: String| FramebufferFileError::Map {
        path: path.to_owned(),
        reason,
    };
    let region = memory
        .find_region(GuestAddress(info.addr))
        .filter(|region| region.start_addr().0 == info.addr && region.len() == info.size())
        .ok_or_else(|| map("no framebuffer region to map it over".into()))?;

    let partial = path.with_extension("partial");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(create)?;
    file.set_len(info.size()).map_err(create)?;
    if let FirstPixels::Saved {
        file: saved,
        offset,
    } = first
    {
        copy_data(saved, offset, &file, info.size()).map_err(create)?;
    }
    std::fs::rename(&partial, path).map_err(create)?;

    // In place: a memory slot already registered over the region (a standby VMM's) stays valid.
    map_file_over(region, &file, 0, true).map_err(|e| map(e.to_string()))?;
    Ok(memory.clone())
}

/// Copies `len` bytes of `from` at `offset` to the start of `to` (as long already), only the
/// ranges holding data: holes stay holes.
fn copy_data(from: &File, offset: u64, to: &File, len: u64) -> std::io::Result<()> {
    let end = offset + len;
    let mut at = offset;
    while at < end {
        let data = match lseek(from, to_off(at)?, Whence::SeekData) {
            Ok(data) => data as u64,
            // Nothing but a hole from `at` to the end of the file.
            Err(Errno::ENXIO) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if data >= end {
            return Ok(());
        }
        let hole = (lseek(from, to_off(data)?, Whence::SeekHole)? as u64).min(end);
        let (mut from_at, mut to_at, stop) = (to_off(data)?, to_off(data - offset)?, to_off(hole)?);
        while from_at < stop {
            let left = (stop - from_at) as usize;
            if copy_file_range(from, Some(&mut from_at), to, Some(&mut to_at), left)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        at = hole;
    }
    Ok(())
}

fn to_off(at: u64) -> std::io::Result<i64> {
    i64::try_from(at).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use vm_memory::Bytes;

    const INFO: FramebufferInfo = FramebufferInfo {
        addr: 0x10_0000,
        width: 1024,
        height: 64,
        stride: 4096,
    };

    fn framebuffer_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(INFO.addr), INFO.size() as usize),
        ])
        .unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-fb-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_blank_screen_is_a_file_of_holes_mapped_in_place_that_guest_writes_reach() {
        let memory = framebuffer_memory();
        let before = memory
            .find_region(GuestAddress(INFO.addr))
            .unwrap()
            .as_ptr();
        let dir = scratch("blank");
        let path = dir.join("framebuffer");

        let shared = share_through_file(&memory, &INFO, &path, FirstPixels::Blank).unwrap();
        let region = shared.find_region(GuestAddress(INFO.addr)).unwrap();
        assert_eq!(region.as_ptr(), before, "same address");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), INFO.size());
        assert_eq!(allocated(&path), 0);
        shared
            .write_slice(&[9, 9], GuestAddress(INFO.addr + 64))
            .unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(&file[64..66], &[9, 9]);
        assert!(!path.with_extension("partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn saved_pixels_come_from_their_range_of_the_memory_file_with_its_holes() {
        let dir = scratch("saved");
        let saved_path = dir.join("vm.mem");
        let saved = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&saved_path)
            .unwrap();
        // The framebuffer's range starts after a page of other memory; data before and after
        // it must not be copied.
        let offset = 4096;
        saved.write_all_at(&[1; 4096], 0).unwrap();
        saved.write_all_at(&[7; 8], offset + 9 * 4096 + 5).unwrap();
        saved
            .write_all_at(&[3; 16], offset + INFO.size() - 16)
            .unwrap();
        saved
            .write_all_at(&[2; 4096], offset + INFO.size())
            .unwrap();
        let memory = framebuffer_memory();
        let path = dir.join("framebuffer");

        let first = FirstPixels::Saved {
            file: &saved,
            offset,
        };
        let shared = share_through_file(&memory, &INFO, &path, first).unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, INFO.size());
        let mut expected = vec![0u8; INFO.size() as usize];
        expected[9 * 4096 + 5..9 * 4096 + 13].fill(7);
        let len = expected.len();
        expected[len - 16..].fill(3);
        assert!(
            file == expected,
            "the file holds other bytes than the saved range"
        );
        assert!(
            allocated(&path) < INFO.size() / 2,
            "{} bytes allocated",
            allocated(&path)
        );
        let mut seen = [0u8; 8];
        shared
            .read_slice(&mut seen, GuestAddress(INFO.addr + 9 * 4096 + 5))
            .unwrap();
        assert_eq!(seen, [7; 8], "the guest sees the saved pixels");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
