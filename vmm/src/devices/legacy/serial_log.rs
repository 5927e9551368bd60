//! The serial log with a size cap, so that a guest cannot fill the host's disk through its
//! console: when `serial.log` would pass [`LOG_CAP_BYTES`] its text moves to `serial.log.1`
//! (`.1` to `.2`, ... the oldest of [`LOG_ROTATIONS`] dropped), as ESXi keeps vmware.log
//! rotations. Every file is opened at start-up and rotation copies between the open files, so
//! a jailed VMM needs no right to create or rename files in the VM folder, and the copy uses
//! only positional reads and writes (the vCPU threads that write the console are filtered).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest `serial.log` before it rotates.
pub const LOG_CAP_BYTES: u64 = 4 << 20;
/// Rotated logs kept beside it.
pub const LOG_ROTATIONS: usize = vireo_vmm_protocol::args::SERIAL_LOG_ROTATIONS;

/// `serial.log` and its rotations, open.
pub struct RotatingLog {
    /// The live log first, then `.1`, `.2`, ...
    files: Vec<File>,
    len: u64,
    cap: u64,
}

/// The path of rotation `n` of `path` (`serial.log.1`).
fn rotation(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl RotatingLog {
    /// Opens (creating) `path` for appending and its `rotations` older files, capped at `cap`.
    pub fn open(path: &Path, cap: u64, rotations: usize) -> io::Result<RotatingLog> {
        let live = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let len = live.metadata()?.len();
        let mut files = vec![live];
        for n in 1..=rotations {
            let older = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(rotation(path, n))?;
            files.push(older);
        }
        Ok(RotatingLog { files, len, cap })
    }

    /// Moves every file's text one rotation older and empties the live log.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.files.len()).rev() {
            copy_file(&self.files[n - 1], &self.files[n])?;
        }
        self.files[0].set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

/// Replaces `to`'s content with `from`'s.
fn copy_file(from: &File, to: &File) -> io::Result<()> {
    to.set_len(0)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut offset = 0;
    loop {
        let n = from.read_at(&mut buf, offset)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.cap {
            self.rotate()?;
        }
        // Bytes beyond the cap in one write (a guest's huge burst) are dropped.
        let room = self.cap.saturating_sub(self.len).min(buf.len() as u64) as usize;
        self.files[0].write_all(&buf[..room])?;
        self.len += room as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.files[0].flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_at_its_cap_and_keeps_the_newest_rotations() {
        let dir = std::env::temp_dir().join(format!("vireo-serial-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("serial.log");
        std::fs::write(&path, b"old\n").unwrap();
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // old\naaaa\n (9) + bbbb\n > 10: rotate; bbbb\ncccc\n; dddd rotates again; eeee joins it.
        assert_eq!(read(&path), "dddd\neeee\n");
        assert_eq!(read(&rotation(&path, 1)), "bbbb\ncccc\n");
        assert_eq!(read(&rotation(&path, 2)), "old\naaaa\n");
        assert!(!rotation(&path, 3).exists());
        // A burst larger than the cap keeps only what fits.
        log.write_all(&[b'x'; 25]).unwrap();
        assert_eq!(read(&path), "x".repeat(10));
        assert_eq!(read(&rotation(&path, 1)), "dddd\neeee\n");
        // Reopening goes on from the live log's size.
        let mut again = RotatingLog::open(&path, 10, 2).unwrap();
        again.write_all(b"y").unwrap();
        assert_eq!(read(&path), "y");
        assert_eq!(read(&rotation(&path, 1)), "x".repeat(10));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
