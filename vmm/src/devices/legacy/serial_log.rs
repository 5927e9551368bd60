//! The serial log with a size cap, so that a guest cannot fill the host's disk through its
//! console: when `serial.log` would pass its rotation size its text moves to `serial-1.log`
//! (`-1` to `-2`, ... the oldest kept one dropped), as ESXi rotates vmware.log
//! ([`LogRotation`]). Every file is opened at start-up — handed over open by vireod (a jailed
//! VMM does not see the VM folder), or opened by path when run by hand — and rotation copies
//! between the open files, so the VMM needs no right to create or rename files, and the copy
//! uses only positional reads and writes (the vCPU threads that write the console are
//! filtered).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use vireo_vmm_protocol::{log_rotation, LogRotation};

/// `serial.log` and its rotations, open.
pub struct RotatingLog {
    /// The live log first, then `-1`, `-2`, ...
    files: Vec<File>,
    len: u64,
    cap: u64,
}

/// The handed file at `path`, else `path` opened (created when missing) with `options`.
fn open_log(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    crate::handed::take(path).map_or_else(|| options.create(true).read(true).open(path), Ok)
}

impl RotatingLog {
    /// Opens `path` for appending and its older files, rotating as `rotation` says.
    pub fn open(path: &Path, rotation: LogRotation) -> io::Result<RotatingLog> {
        let live = open_log(path, OpenOptions::new().append(true))?;
        let len = live.metadata()?.len();
        let mut files = vec![live];
        for n in 1..=rotation.keep {
            let older = log_rotation(path, n);
            files.push(open_log(
                &older,
                OpenOptions::new().truncate(false).write(true),
            )?);
        }
        Ok(RotatingLog {
            files,
            len,
            cap: rotation.size,
        })
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
        let rotation = LogRotation { size: 10, keep: 2 };
        let mut log = RotatingLog::open(&path, rotation).unwrap();
        for line in ["aaaa\n", "bbbb\n", "cccc\n", "dddd\n", "eeee\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        // old\naaaa\n (9) + bbbb\n > 10: rotate; bbbb\ncccc\n; dddd rotates again; eeee joins it.
        assert_eq!(read(&path), "dddd\neeee\n");
        assert_eq!(read(&log_rotation(&path, 1)), "bbbb\ncccc\n");
        assert_eq!(read(&log_rotation(&path, 2)), "old\naaaa\n");
        assert!(!log_rotation(&path, 3).exists());
        // A burst larger than the cap keeps only what fits.
        log.write_all(&[b'x'; 25]).unwrap();
        assert_eq!(read(&path), "x".repeat(10));
        assert_eq!(read(&log_rotation(&path, 1)), "dddd\neeee\n");
        // Reopening goes on from the live log's size.
        let mut again = RotatingLog::open(&path, rotation).unwrap();
        again.write_all(b"y").unwrap();
        assert_eq!(read(&path), "y");
        assert_eq!(read(&log_rotation(&path, 1)), "x".repeat(10));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
