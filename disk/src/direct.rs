//! Positional I/O on an image file that may be open with `O_DIRECT` (a disk with cache=none):
//! [`FileIo`] passes aligned requests straight to the file and bounces the others through an
//! aligned buffer — reads of the enclosing aligned range, and read-modify-write for writes (one
//! at a time, so two unaligned writes into one block cannot lose each other's bytes). Without
//! `O_DIRECT` it is plain `pread`/`pwrite`. Formats hold their files as `FileIo`, so metadata
//! updates keep their order and their syncs in both modes.

use std::alloc::Layout;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// What `O_DIRECT` I/O on a file must be aligned to, in bytes (powers of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// File offsets and lengths.
    pub offset: usize,
    /// Buffer addresses in memory.
    pub memory: usize,
}

/// Used when the file system does not say (`statx` without `STATX_DIOALIGN`): a page satisfies
/// every device.
const FALLBACK_ALIGN: usize = 4096;

impl Alignment {
    /// The file's direct-I/O alignment as the kernel reports it (`statx`, `STATX_DIOALIGN`).
    pub fn of(file: &File) -> Alignment {
        let fallback = Alignment {
            offset: FALLBACK_ALIGN,
            memory: FALLBACK_ALIGN,
        };
        // SAFETY: statx fills the zeroed struct we own; the empty path with AT_EMPTY_PATH
        // names the descriptor itself.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the path is a valid NUL-terminated string.
        let rc = unsafe {
            libc::statx(
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_DIOALIGN,
                &mut stx,
            )
        };
        let valid = |n: u32| n.is_power_of_two().then_some(n as usize);
        match (rc, stx.stx_mask & libc::STATX_DIOALIGN != 0) {
            (0, true) => Alignment {
                offset: valid(stx.stx_dio_offset_align).unwrap_or(fallback.offset),
                memory: valid(stx.stx_dio_mem_align).unwrap_or(fallback.memory),
            },
            _ => fallback,
        }
    }

    /// Whether `buf` at file offset `offset` may go to the file directly.
    pub fn fits(&self, buf: &[u8], offset: u64) -> bool {
        (buf.as_ptr() as usize).is_multiple_of(self.memory)
            && offset.is_multiple_of(self.offset as u64)
            && buf.len().is_multiple_of(self.offset)
    }

    /// `[offset, offset + len)` widened to whole aligned blocks: (start, length).
    fn widen(&self, offset: u64, len: usize) -> (u64, usize) {
        let block = self.offset as u64;
        let start = offset / block * block;
        let end = (offset + len as u64).div_ceil(block) * block;
        (start, (end - start) as usize)
    }
}

/// Whether `file` is open with `O_DIRECT`.
pub fn is_direct(file: &File) -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(file, FcntlArg::F_GETFL)
        .is_ok_and(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_DIRECT))
}

/// Turns `O_DIRECT` on for `file`'s open file description (every duplicate of it).
pub fn set_direct(file: &File) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(file, FcntlArg::F_GETFL)?);
    fcntl(file, FcntlArg::F_SETFL(flags | OFlag::O_DIRECT))?;
    Ok(())
}

/// A heap buffer aligned for direct I/O.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain owned memory, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` zeroed bytes (at least one) aligned to `align` (a power of two).
    pub fn zeroed(len: usize, align: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len.max(1), align).expect("bad buffer layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// An image file and how to do I/O on it: directly when it is open with `O_DIRECT`.
pub struct FileIo {
    file: File,
    direct: Option<Alignment>,
    /// Held by read-modify-write cycles.
    rmw: Mutex<()>,
}

impl FileIo {
    /// Wraps `file`, direct when it is open with `O_DIRECT`.
    pub fn new(file: File) -> FileIo {
        let direct = is_direct(&file).then(|| Alignment::of(&file));
        FileIo {
            file,
            direct,
            rmw: Mutex::new(()),
        }
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The alignment direct I/O needs; `None` when the file goes through the page cache.
    pub fn direct(&self) -> Option<Alignment> {
        self.direct
    }

    /// One positional read into `buf` at `offset`; fewer bytes only at end-of-file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        match self.direct {
            Some(align) if !align.fits(buf, offset) => self.bounced_read(align, buf, offset),
            _ => self.file.read_at(buf, offset),
        }
    }

    /// Fills `buf` from `offset`; end-of-file before that is `UnexpectedEof`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        match self.direct {
            Some(align) if !align.fits(buf, offset) => self.bounced_write(align, buf, offset),
            _ => self.file.write_all_at(buf, offset),
        }
    }

    /// Reads the aligned blocks around the request into an aligned buffer and copies out.
    fn bounced_read(
        &self,
        align: Alignment,
        buf: &mut [u8],
        offset: u64,
    ) -> std::io::Result<usize> {
        let (start, len) = align.widen(offset, buf.len());
        let mut bounce = AlignedBuf::zeroed(len, align.memory.max(align.offset));
        let got = fill(&self.file, &mut bounce, start)?;
        let skip = (offset - start) as usize;
        let n = got.saturating_sub(skip).min(buf.len());
        buf[..n].copy_from_slice(&bounce[skip..skip + n]);
        Ok(n)
    }

    /// Read-modify-write of the aligned blocks around the request; the file keeps its length
    /// when the last block lay partly beyond its end.
    fn bounced_write(&self, align: Alignment, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let _one_at_a_time = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let (start, len) = align.widen(offset, buf.len());
        let mut bounce = AlignedBuf::zeroed(len, align.memory.max(align.offset));
        let skip = (offset - start) as usize;
        if skip > 0 || buf.len() != len {
            fill(&self.file, &mut bounce, start)?;
        }
        bounce[skip..skip + buf.len()].copy_from_slice(buf);
        let size = self.file.metadata()?.len();
        self.file.write_all_at(&bounce, start)?;
        let end = offset + buf.len() as u64;
        if start + len as u64 > size.max(end) {
            self.file.set_len(size.max(end))?;
        }
        Ok(())
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; the bytes read.
fn fill(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    /// A file open with O_DIRECT, or None where the file system refuses it (tmpfs).
    fn direct_file(name: &str, data: &[u8]) -> Option<(std::path::PathBuf, FileIo)> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("vireo-direct-{}-{name}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .ok()?;
        Some((path, FileIo::new(file)))
    }

    #[test]
    fn unaligned_reads_and_writes_through_o_direct_match_buffered_ones() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let Some((path, io)) = direct_file("rw", &data) else {
            return eprintln!("no O_DIRECT here: skipped");
        };
        let align = io.direct().expect("opened with O_DIRECT");
        let mut expect = data.clone();
        // Unaligned in every way, one crossing the end of the file, one within a block.
        for (offset, len, byte) in [
            (3u64, 700usize, 0xa1u8),
            (4090, 9000, 0xb2),
            (19_990, 30, 0xc3),
            (512, 8, 0xd4),
        ] {
            io.write_all_at(&vec![byte; len], offset).unwrap();
            let end = offset as usize + len;
            if end > expect.len() {
                expect.resize(end, 0);
            }
            expect[offset as usize..end].fill(byte);
        }
        // An aligned one goes straight through.
        let mut aligned = AlignedBuf::zeroed(align.offset * 2, align.memory.max(align.offset));
        aligned.fill(0xe5);
        io.write_all_at(&aligned, align.offset as u64).unwrap();
        expect[align.offset..align.offset * 3].fill(0xe5);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            expect,
            "the file as a buffered reader sees it"
        );
        let mut back = vec![0u8; expect.len() - 5];
        io.read_exact_at(&mut back, 5).unwrap();
        assert_eq!(back, &expect[5..]);
        let mut past = [0u8; 16];
        assert_eq!(io.read_at(&mut past, expect.len() as u64 - 4).unwrap(), 4);
        std::fs::remove_file(&path).unwrap();
    }
}
