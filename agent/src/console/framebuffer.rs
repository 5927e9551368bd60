//! A running VM's framebuffer as vireod sees it: the VMM backs the guest's framebuffer with a
//! shared file in the VM's run directory (`--framebuffer-file`), and this maps that file
//! read-only, so reading the screen costs no copy through the VMM. Geometry comes from the
//! VMM's `status` reply.

use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::vm::{control, Vm};

/// How long the VMM may take to report its framebuffer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes per pixel (XRGB8888).
pub const BYTES_PER_PIXEL: usize = 4;

/// The framebuffer file of `vm` (what vireod passes to the VMM as `--framebuffer-file`).
pub fn file_of(vm: &Vm) -> PathBuf {
    vm.run_dir.join("framebuffer")
}

/// Why the framebuffer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenFramebufferError {
    /// The VMM did not answer `status`.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The VMM's reply has no usable framebuffer description.
    #[error("the VMM reports no framebuffer file (was it started without --framebuffer-file?)")]
    NoFile,
    /// Opening or mapping the file failed.
    #[error("cannot map framebuffer file {path}: {source}")]
    Map {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is smaller than the geometry says.
    #[error("framebuffer file {path} holds {actual} bytes, {needed} needed")]
    Short {
        /// The file.
        path: PathBuf,
        /// Its size.
        actual: u64,
        /// What the geometry needs.
        needed: u64,
    },
}

/// The framebuffer part of the VMM's `status` reply.
pub use vireo_vmm_protocol::FramebufferStatus as Geometry;

/// A read-only mapping of a VM's framebuffer.
pub struct FramebufferView {
    geometry: Geometry,
    base: *const u8,
    len: usize,
    _file: File,
}

// SAFETY: the mapping is read-only and owned by the view; reads go through raw pointer copies
// (never references into memory the guest writes), so moving the view between threads is sound.
unsafe impl Send for FramebufferView {}

impl FramebufferView {
    /// Asks the running VMM of `vm` where its framebuffer is and maps it.
    pub fn open(vm: &Vm) -> Result<FramebufferView, OpenFramebufferError> {
        let status = control::status(&vm.run_dir.join("control.sock"), STATUS_TIMEOUT)?;
        let geometry = status.framebuffer;
        let path = geometry.file.clone().ok_or(OpenFramebufferError::NoFile)?;
        FramebufferView::map(&path, geometry)
    }

    /// Maps `path` read-only as a framebuffer of `geometry`.
    pub fn map(path: &Path, geometry: Geometry) -> Result<FramebufferView, OpenFramebufferError> {
        let map_error = |source| OpenFramebufferError::Map {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(map_error)?;
        let actual = file.metadata().map_err(map_error)?.len();
        let needed = u64::from(geometry.stride) * u64::from(geometry.height);
        let row = u64::from(geometry.width) * BYTES_PER_PIXEL as u64;
        if actual < needed || row > u64::from(geometry.stride) || needed == 0 {
            return Err(OpenFramebufferError::Short {
                path: path.to_owned(),
                actual,
                needed,
            });
        }
        let len = needed as usize;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file, checked above
        // to be at least that long; it is unmapped in Drop and never handed out as a reference.
        let base = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).expect("checked above to be non-zero"),
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .map_err(|errno| map_error(errno.into()))?;
        Ok(FramebufferView {
            geometry,
            base: base.cast().as_ptr(),
            len,
            _file: file,
        })
    }

    /// Its geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Copies `out.len()` bytes of row `y`, starting at pixel `x`, as the guest has them now.
    pub fn read(&self, x: usize, y: usize, out: &mut [u8]) {
        let offset = y * self.geometry.stride as usize + x * BYTES_PER_PIXEL;
        assert!(offset + out.len() <= self.len, "read past the framebuffer");
        // SAFETY: the range lies inside the mapping (asserted); the guest may be writing it,
        // which can only tear pixels, and a raw copy creates no reference to racing memory.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(offset), out.as_mut_ptr(), out.len()) }
    }
}

impl Drop for FramebufferView {
    fn drop(&mut self) {
        if let Some(base) = NonNull::new(self.base.cast_mut()) {
            // SAFETY: unmaps exactly the mapping made in `map`.
            let _ = unsafe { munmap(base.cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_through_the_stride_and_short_files_refused() {
        let dir = std::env::temp_dir().join(format!("vireo-fbview-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("framebuffer");
        // 2x2 pixels, 16-byte stride: row 1 starts at byte 16.
        let mut bytes = vec![0u8; 32];
        bytes[16..24].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        std::fs::write(&path, &bytes).unwrap();
        let geometry = Geometry {
            width: 2,
            height: 2,
            stride: 16,
            file: Some(path.clone()),
        };
        let view = FramebufferView::map(&path, geometry.clone()).unwrap();
        let mut pixel = [0u8; 4];
        view.read(1, 1, &mut pixel);
        assert_eq!(pixel, [5, 6, 7, 8]);
        // the guest's later writes are seen
        std::fs::write(&path, vec![9u8; 32]).unwrap();
        view.read(0, 0, &mut pixel);
        assert_eq!(pixel, [9; 4]);

        let tall = Geometry {
            height: 3,
            ..geometry
        };
        assert!(matches!(
            FramebufferView::map(&path, tall),
            Err(OpenFramebufferError::Short { needed: 48, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
