//! The `.vmx` file format: `key = "value"` lines, in order, keys compared case-insensitively,
//! values escaped the way VMware does (`|22` for `"`, `|7C` for `|`, `|0A` for a newline).
//! Written atomically (temporary file, fsync, rename).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The settings of one `.vmx` file, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VmxFile {
    entries: Vec<(String, String)>,
}

impl VmxFile {
    /// Parses `key = "value"` lines; comments and lines without `=` are skipped.
    pub fn parse(text: &str) -> VmxFile {
        let mut file = VmxFile::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                file.set(key.trim(), &unescape(value));
            }
        }
        file
    }

    /// A setting's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a setting, keeping its place if it exists.
    pub fn set(&mut self, key: &str, value: &str) {
        match self
            .entries
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    /// Every setting, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::from(".encoding = \"UTF-8\"\n");
        for (key, value) in self.entries() {
            if key.eq_ignore_ascii_case(".encoding") {
                continue;
            }
            text.push_str(&format!("{key} = \"{}\"\n", escape(value)));
        }
        text
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> std::io::Result<VmxFile> {
        Ok(VmxFile::parse(&std::fs::read_to_string(path)?))
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(path, self.render().as_bytes())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content (a
/// failed write, e.g. for lack of space, leaves the old one and no temporary file).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, true)
}

/// Replaces `path` with `bytes` as [`write_atomically`] does, but without waiting for the disk:
/// a crash of the process leaves the new content, a crash of the host the old or the new.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, false)
}

fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            match durable {
                true => file.sync_all(),
                false => Ok(()),
            }
        })
        .and_then(|()| std::fs::rename(&partial, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    match path.parent() {
        Some(dir) if durable => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '|' => out.push_str("|7C"),
            '"' => out.push_str("|22"),
            '\n' => out.push_str("|0A"),
            '\r' => out.push_str("|0D"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('|') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match code {
            Some(byte) if byte.is_ascii() => {
                out.push(byte as char);
                rest = &rest[at + 3..];
            }
            _ => {
                out.push('|');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_order_case_and_escapes() {
        let mut vmx = VmxFile::parse("# c\ndisplayName = \"web 1\"\nmemSize = \"512\"\nbroken\n");
        assert_eq!(vmx.get("MEMSIZE"), Some("512"));
        vmx.set("memsize", "1024");
        vmx.set("annotation", "say \"hi\" | bye\nline 2");
        let text = vmx.render();
        assert!(text.contains("memSize = \"1024\"\n"));
        assert!(text.contains("annotation = \"say |22hi|22 |7C bye|0Aline 2\""));
        let back = VmxFile::parse(&text);
        assert_eq!(back.get("annotation"), Some("say \"hi\" | bye\nline 2"));
        assert_eq!(
            back.entries().map(|(k, _)| k).collect::<Vec<_>>(),
            [".encoding", "displayName", "memSize", "annotation"]
        );
    }
}
