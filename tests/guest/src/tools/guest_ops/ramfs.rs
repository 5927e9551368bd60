//! The test guest's RAM file system: a flat table of at most [`MAX_ENTRIES`] files and
//! directories named by their full paths (the root always exists), file contents in
//! [`FILE_SLOTS`] fixed slots of [`FILE_BYTES`].

use core::fmt::{self, Write as _};

use super::base64::{decode, encode};
use super::{
    Failure, Outcome, Path, Request, ResultWriter, State, Text, TextWriter, BAD_PATH, CHUNK_BYTES,
    EXISTS, FILE_BYTES, FILE_SLOTS, FULL, LIST_PAGE, MAX_ENTRIES, NOT_DIR, NOT_FILE, NOT_FOUND,
};
use crate::cell::BootCpuCell;
use crate::tools::json::Escaped;

/// One file or directory.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    used: bool,
    dir: bool,
    path: Path,
    slot: usize,
    size: usize,
    mtime: u64,
    mode: u32,
}

pub(super) const FREE: Entry = Entry {
    used: false,
    dir: false,
    path: Path::EMPTY,
    slot: 0,
    size: 0,
    mtime: 0,
    mode: 0,
};

/// The files' contents, one slot per file (all zero at boot, so it lives in .bss and costs the
/// image nothing).
pub(super) static DATA: BootCpuCell<[[u8; FILE_BYTES]; FILE_SLOTS]> =
    BootCpuCell::new([[0; FILE_BYTES]; FILE_SLOTS]);

/// Checks a path: absolute, no empty, `.` or `..` parts, not the root itself.
fn check_path(path: &str) -> Result<&str, Failure> {
    let valid = path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    valid.then_some(path).ok_or(BAD_PATH)
}

/// The parent directory of a checked path ("/" for top-level entries).
fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

impl State {
    /// `stat-file`: the entry at `path`.
    pub(super) fn stat<W: fmt::Write>(&self, path: &str, out: &mut ResultWriter<'_, W>) -> Outcome {
        let entry = self.entries[self.find(check_path(path)?).ok_or(NOT_FOUND)?];
        write_entry(out.result(), entry.path.as_str(), &entry).map_err(|_| FULL)
    }

    /// `change-attributes`: permission bits and modification time (seconds) are kept.
    pub(super) fn change_attributes(
        &mut self,
        path: &str,
        mode: Option<u64>,
        mtime: Option<u64>,
    ) -> Outcome {
        let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
        let entry = &mut self.entries[index];
        entry.mode = mode.map_or(entry.mode, |m| (m & 0o7777) as u32);
        entry.mtime = mtime.map_or(entry.mtime, |s| s * 1000);
        Ok(())
    }

    pub(super) fn find(&self, path: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.used && e.path.as_str() == path)
    }

    pub(super) fn is_directory(&self, path: &str) -> bool {
        path == "/" || self.find(path).is_some_and(|i| self.entries[i].dir)
    }

    /// Checks that `path` can be created: its parent is a directory, it does not exist.
    pub(super) fn creatable(&self, path: &str) -> Outcome {
        if !self.is_directory(parent(path)) {
            return Err(if self.find(parent(path)).is_some() {
                NOT_DIR
            } else {
                NOT_FOUND
            });
        }
        if self.find(path).is_some() {
            return Err(EXISTS);
        }
        Ok(())
    }

    pub(super) fn add(&mut self, path: &str, dir: bool) -> Result<usize, Failure> {
        let index = self.entries.iter().position(|e| !e.used).ok_or(FULL)?;
        let slot = if dir {
            0
        } else {
            let slot = self.slot_used.iter().position(|used| !used).ok_or(FULL)?;
            self.slot_used[slot] = true;
            slot
        };
        self.entries[index] = Entry {
            used: true,
            dir,
            path: Text::of(path).ok_or(BAD_PATH)?,
            slot,
            size: 0,
            mtime: self.now,
            mode: if dir { 0o755 } else { 0o644 },
        };
        Ok(index)
    }

    pub(super) fn remove(&mut self, index: usize) {
        let entry = self.entries[index];
        if !entry.dir {
            self.slot_used[entry.slot] = false;
        }
        self.entries[index] = FREE;
    }

    pub(super) fn make_directory(&mut self, path: &str, parents: bool) -> Outcome {
        let path = check_path(path)?;
        if parents && !self.is_directory(parent(path)) && parent(path) != "/" {
            self.make_directory(parent(path), true)?;
        }
        if parents && self.is_directory(path) {
            return Ok(());
        }
        self.creatable(path)?;
        self.add(path, true).map(drop)
    }

    /// Whether anything lies below directory `path`.
    pub(super) fn has_children(&self, path: &str) -> bool {
        self.entries.iter().any(|e| {
            e.used
                && e.path
                    .as_str()
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    pub(super) fn delete(&mut self, path: &str, dir: bool, recursive: bool) -> Outcome {
        let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
        match (dir, self.entries[index].dir) {
            (false, true) => return Err(NOT_FILE),
            (true, false) => return Err(NOT_DIR),
            _ => {}
        }
        if dir && self.has_children(path) {
            if !recursive {
                return Err(Failure("directory-not-empty", "the directory is not empty"));
            }
            for child in 0..MAX_ENTRIES {
                let below = self.entries[child]
                    .path
                    .as_str()
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'));
                if self.entries[child].used && below {
                    self.remove(child);
                }
            }
        }
        self.remove(index);
        Ok(())
    }

    pub(super) fn rename(&mut self, from: &str, to: &str, dir: bool, overwrite: bool) -> Outcome {
        let index = self.find(check_path(from)?).ok_or(NOT_FOUND)?;
        let to = check_path(to)?;
        match (dir, self.entries[index].dir) {
            (false, true) => return Err(NOT_FILE),
            (true, false) => return Err(NOT_DIR),
            _ => {}
        }
        if let Some(existing) = self.find(to) {
            if dir || !overwrite || self.entries[existing].dir {
                return Err(EXISTS);
            }
            self.remove(existing);
        }
        if to.starts_with(from) && to[from.len()..].starts_with('/') {
            return Err(Failure(
                "bad-request",
                "a directory cannot move into itself",
            ));
        }
        self.creatable(to)?;
        for entry in self.entries.iter_mut().filter(|e| e.used) {
            let moved = match entry.path.as_str().strip_prefix(from) {
                Some("") => Text::of(to),
                Some(rest) if rest.starts_with('/') && dir => {
                    let mut path = Path::EMPTY;
                    write!(TextWriter(&mut path), "{to}{rest}")
                        .ok()
                        .map(|()| path)
                }
                _ => continue,
            };
            entry.path = moved.ok_or(BAD_PATH)?;
        }
        Ok(())
    }

    pub(super) fn create_temporary<W: fmt::Write>(
        &mut self,
        r: &Request<'_>,
        out: &mut ResultWriter<'_, W>,
    ) -> Outcome {
        let dir = if r.path.len == 0 {
            "/tmp"
        } else {
            r.path.as_str()
        };
        if !self.is_directory(dir) {
            return Err(NOT_FOUND);
        }
        if r.prefix.as_str().contains('/') || r.suffix.as_str().contains('/') {
            return Err(BAD_PATH);
        }
        let mut path = Path::EMPTY;
        let number = self.next_temp;
        self.next_temp += 1;
        write!(
            TextWriter(&mut path),
            "{}/{}{number}{}",
            dir.trim_end_matches('/'),
            r.prefix.as_str(),
            r.suffix.as_str()
        )
        .map_err(|_| BAD_PATH)?;
        let path = path;
        self.creatable(check_path(path.as_str())?)?;
        self.add(path.as_str(), r.flag)?;
        write!(out.result(), r#""path":"{}""#, Escaped(path.as_str())).map_err(|_| FULL)
    }

    pub(super) fn list_files<W: fmt::Write>(
        &self,
        r: &Request<'_>,
        out: &mut ResultWriter<'_, W>,
    ) -> Outcome {
        let path = r.path.as_str();
        let dir = path == "/"
            || self
                .find(check_path(path)?)
                .is_some_and(|i| self.entries[i].dir);
        let single = (!dir).then(|| self.find(path)).flatten();
        if !dir && single.is_none() {
            return Err(NOT_FOUND);
        }
        let pattern = r.pattern.as_str();
        let listed = |e: &&Entry| {
            let name = e.path.as_str().rsplit('/').next().unwrap_or("");
            let in_dir = match single {
                Some(i) => e.path.as_str() == self.entries[i].path.as_str(),
                None => e.used && parent(e.path.as_str()) == path,
            };
            in_dir && (pattern.is_empty() || pattern == ".*" || glob(pattern, name))
        };
        let total = self.entries.iter().filter(listed).count();
        let max = if r.max == 0 {
            LIST_PAGE
        } else {
            (r.max as usize).min(LIST_PAGE)
        };
        let skip = r.index as usize;
        let out = out.result();
        out.write_str(r#""files":["#).map_err(|_| FULL)?;
        let mut shown = 0;
        for entry in self.entries.iter().filter(listed).skip(skip).take(max) {
            out.write_str(if shown > 0 { ",{" } else { "{" })
                .map_err(|_| FULL)?;
            let name = entry.path.as_str().rsplit('/').next().unwrap_or("");
            write_entry(out, name, entry).map_err(|_| FULL)?;
            out.write_str("}").map_err(|_| FULL)?;
            shown += 1;
        }
        let remaining = total.saturating_sub(skip + shown);
        write!(out, r#"],"remaining":{remaining}"#).map_err(|_| FULL)
    }

    pub(super) fn file(&self, path: &str) -> Result<usize, Failure> {
        let index = self.find(check_path(path)?).ok_or(NOT_FOUND)?;
        if self.entries[index].dir {
            return Err(NOT_FILE);
        }
        Ok(index)
    }

    pub(super) fn read<W: fmt::Write>(
        &self,
        path: &str,
        offset: u64,
        length: u64,
        out: &mut ResultWriter<'_, W>,
    ) -> Outcome {
        let entry = self.entries[self.file(path)?];
        let start = (offset as usize).min(entry.size);
        let end = start + (length as usize).min(CHUNK_BYTES).min(entry.size - start);
        let out = out.result();
        out.write_str(r#""data":""#).map_err(|_| FULL)?;
        DATA.with(|data| encode(&data[entry.slot][start..end], out))
            .map_err(|_| FULL)?;
        write!(out, r#"","size":{}"#, entry.size).map_err(|_| FULL)
    }

    pub(super) fn write(
        &mut self,
        path: &str,
        offset: u64,
        data: &[u8],
        overwrite: bool,
    ) -> Outcome {
        let path = check_path(path)?;
        let index = match (offset, self.find(path)) {
            (0, Some(existing)) if !overwrite => {
                return Err(if self.entries[existing].dir {
                    NOT_FILE
                } else {
                    EXISTS
                })
            }
            (0, Some(existing)) => {
                if self.entries[existing].dir {
                    return Err(NOT_FILE);
                }
                self.entries[existing].size = 0;
                existing
            }
            (0, None) => {
                self.creatable(path)?;
                self.add(path, false)?
            }
            (_, found) => found.ok_or(NOT_FOUND)?,
        };
        let entry = &mut self.entries[index];
        if entry.dir || entry.size as u64 != offset {
            return Err(Failure(
                "bad-request",
                "a chunk must start at the file's end",
            ));
        }
        let slot = entry.slot;
        let start = entry.size;
        let written = DATA
            .with(|files| decode(data, &mut files[slot][start..]))
            .ok_or(Failure(
                "bad-request",
                "bad base64, or the file would outgrow its 128 KiB",
            ))?;
        let entry = &mut self.entries[index];
        entry.size += written;
        entry.mtime = self.now;
        Ok(())
    }
}

/// An entry's fields (the caller adds the braces).
fn write_entry(out: &mut impl fmt::Write, name: &str, entry: &Entry) -> fmt::Result {
    let kind = if entry.dir { "directory" } else { "file" };
    write!(
        out,
        r#""name":"{}","kind":"{kind}","size":{},"mtime":{},"mode":{},"uid":0,"gid":0"#,
        Escaped(name),
        entry.size,
        entry.mtime / 1000,
        entry.mode
    )
}

/// `*` and `?` wildcards.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
