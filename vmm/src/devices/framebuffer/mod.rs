//! A linear framebuffer (32 bits per pixel, XRGB) in its own KVM memory slot inside the MMIO
//! hole. Linux's efifb finds it through boot_params.screen_info, the test guest through the
//! command line (`vireo.fb=ADDR,WIDTH,HEIGHT,STRIDE`); screenshots are PNGs of what is there.
//! With `--framebuffer-file` the slot is a shared mapping of that file (see [`shared_file`]).

pub mod png;
pub mod shared_file;

use linux_loader::bootparam::screen_info;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::layout;

/// Default mode.
pub const DEFAULT_WIDTH: u32 = 1024;
/// Default mode.
pub const DEFAULT_HEIGHT: u32 = 768;
const BYTES_PER_PIXEL: u32 = 4;
/// screen_info.orig_video_isVGA value for an EFI framebuffer.
const VIDEO_TYPE_EFI: u8 = 0x70;
/// screen_info.capabilities bit: ext_lfb_base holds the high half of the base.
const VIDEO_CAPABILITY_64BIT_BASE: u32 = 1 << 1;

/// Geometry of the framebuffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramebufferInfo {
    /// Guest physical address of the first pixel.
    pub addr: u64,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
}

impl FramebufferInfo {
    /// A `width`×`height` framebuffer at the layout's framebuffer address.
    pub fn new(width: u32, height: u32) -> Self {
        FramebufferInfo {
            addr: layout::FRAMEBUFFER_START,
            width,
            height,
            stride: width * BYTES_PER_PIXEL,
        }
    }

    /// Bytes the framebuffer occupies (rounded to whole pages).
    pub fn size(&self) -> u64 {
        (u64::from(self.stride) * u64::from(self.height)).next_multiple_of(4096)
    }

    /// The EFI framebuffer description Linux's efifb reads from the zero page.
    pub fn screen_info(&self) -> screen_info {
        screen_info {
            orig_video_isVGA: VIDEO_TYPE_EFI,
            lfb_width: self.width as u16,
            lfb_height: self.height as u16,
            lfb_depth: 32,
            lfb_base: self.addr as u32,
            ext_lfb_base: (self.addr >> 32) as u32,
            capabilities: VIDEO_CAPABILITY_64BIT_BASE,
            lfb_size: self.size() as u32,
            lfb_linelength: self.stride as u16,
            red_size: 8,
            red_pos: 16,
            green_size: 8,
            green_pos: 8,
            blue_size: 8,
            blue_pos: 0,
            rsvd_size: 8,
            rsvd_pos: 24,
            ..Default::default()
        }
    }

    /// The command-line entry telling the test guest where the framebuffer is.
    pub fn cmdline_entry(&self) -> String {
        format!(
            "vireo.fb={:#x},{},{},{}",
            self.addr, self.width, self.height, self.stride
        )
    }
}

/// Errors taking a screenshot.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// The framebuffer memory could not be read.
    #[error("cannot read the framebuffer: {0}")]
    Read(#[from] vm_memory::GuestMemoryError),
    /// The PNG could not be written.
    #[error("cannot write screenshot {path}: {source}")]
    Write {
        /// Target file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A PNG of the framebuffer's current contents (`memory` must contain its slot).
pub fn screenshot_png(
    memory: &GuestMemoryMmap,
    fb: &FramebufferInfo,
) -> Result<Vec<u8>, ScreenshotError> {
    let mut rows = Vec::with_capacity(fb.height as usize);
    let mut raw = vec![0u8; fb.stride as usize];
    for y in 0..u64::from(fb.height) {
        memory.read_slice(&mut raw, GuestAddress(fb.addr + y * u64::from(fb.stride)))?;
        // XRGB little-endian: bytes are B, G, R, X.
        let rgb: Vec<u8> = raw[..(fb.width * BYTES_PER_PIXEL) as usize]
            .chunks_exact(4)
            .flat_map(|px| [px[2], px[1], px[0]])
            .collect();
        rows.push(rgb);
    }
    Ok(png::encode_rgb(fb.width, fb.height, rows.into_iter()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screenshot_converts_xrgb_pixels() {
        let fb = FramebufferInfo {
            addr: 0x1000,
            width: 2,
            height: 2,
            stride: 8,
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        mem.write_slice(
            &[0x00, 0x00, 0xff, 0, 0xff, 0x00, 0x00, 0],
            GuestAddress(0x1000),
        )
        .unwrap();
        let png = screenshot_png(&mem, &fb).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(fb.size(), 4096);
        assert_eq!(
            FramebufferInfo::new(1024, 768).cmdline_entry(),
            "vireo.fb=0xe0000000,1024,768,4096"
        );
    }
}
