//! A reader for ISO 9660 images (ECMA-119), as far as the tools installer needs one: the
//! primary volume descriptor's identifiers (vireod reads the tools version from the
//! application identifier) and the regular files of the root directory, by their Rock Ridge
//! name where the image has one (else the ISO name without its `;1` version). Every size read
//! from the image is bounded before anything is allocated for it.

use std::io::{Read, Seek, SeekFrom};

/// Logical sector size of a CD image.
pub const SECTOR: u64 = 2048;
/// The primary volume descriptor's sector.
const DESCRIPTOR_SECTOR: u64 = 16;
/// Largest root directory read.
const MAX_DIRECTORY_BYTES: u32 = 1 << 20;
/// Largest file read out of an image.
pub const MAX_FILE_BYTES: u32 = 256 << 20;

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// Reading failed.
    #[error("cannot read the image: {0}")]
    Io(#[from] std::io::Error),
    /// No primary volume descriptor where ISO 9660 puts it.
    #[error("not an ISO 9660 image")]
    NotIso,
    /// The root directory's records do not parse.
    #[error("the image's root directory is malformed")]
    BadDirectory,
    /// No such regular file in the root directory.
    #[error("{0} is not in the image's root directory")]
    Missing(String),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{0} is too large to read ({1} bytes)")]
    TooLarge(String, u32),
}

/// Where a directory record's data lies.
#[derive(Debug, Clone, Copy)]
struct Extent {
    sector: u32,
    bytes: u32,
}

/// An opened image.
pub struct Volume<R> {
    reader: R,
    /// The volume identifier (`-V`), trailing blanks removed.
    pub volume_id: String,
    /// The application identifier (`-A`), trailing blanks removed.
    pub application_id: String,
    root: Extent,
}

/// One regular file of the root directory.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: String,
    extent: Extent,
}

/// A directory record's extent (both-endian fields: the little-endian half is read).
fn extent(record: &[u8]) -> Extent {
    let le = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"));
    Extent {
        sector: le(2),
        bytes: le(10),
    }
}

/// A d-/a-characters field as text.
fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).trim_end().to_string()
}

impl<R: Read + Seek> Volume<R> {
    /// Reads the primary volume descriptor.
    pub fn open(mut reader: R) -> Result<Volume<R>, IsoError> {
        let mut descriptor = [0u8; SECTOR as usize];
        reader.seek(SeekFrom::Start(DESCRIPTOR_SECTOR * SECTOR))?;
        reader
            .read_exact(&mut descriptor)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => IsoError::NotIso,
                _ => IsoError::Io(e),
            })?;
        if descriptor[0] != 1 || &descriptor[1..6] != b"CD001" {
            return Err(IsoError::NotIso);
        }
        Ok(Volume {
            volume_id: text(&descriptor[40..72]),
            application_id: text(&descriptor[574..702]),
            root: extent(&descriptor[156..190]),
            reader,
        })
    }

    fn read_extent(&mut self, extent: Extent) -> Result<Vec<u8>, IsoError> {
        let mut data = vec![0u8; extent.bytes as usize];
        self.reader
            .seek(SeekFrom::Start(u64::from(extent.sector) * SECTOR))?;
        self.reader.read_exact(&mut data)?;
        Ok(data)
    }

    /// The regular files of the root directory.
    pub fn root_files(&mut self) -> Result<Vec<Entry>, IsoError> {
        if self.root.bytes > MAX_DIRECTORY_BYTES {
            return Err(IsoError::BadDirectory);
        }
        let directory = self.read_extent(self.root)?;
        let mut files = Vec::new();
        let mut at = 0;
        while at < directory.len() {
            let length = usize::from(directory[at]);
            if length == 0 {
                // Records never cross a sector: the rest of this one is padding.
                at = (at / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let record = directory
                .get(at..at + length)
                .filter(|r| r.len() >= 34)
                .ok_or(IsoError::BadDirectory)?;
            if let Some(entry) = file_entry(record)? {
                files.push(entry);
            }
            at += length;
        }
        Ok(files)
    }

    /// The bytes of the root directory's file `name`.
    pub fn read_file(&mut self, name: &str) -> Result<Vec<u8>, IsoError> {
        let entry = self
            .root_files()?
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| IsoError::Missing(name.into()))?;
        if entry.extent.bytes > MAX_FILE_BYTES {
            return Err(IsoError::TooLarge(name.into(), entry.extent.bytes));
        }
        self.read_extent(entry.extent)
    }
}

/// The file a directory record describes (none for a directory, `.` or `..`).
fn file_entry(record: &[u8]) -> Result<Option<Entry>, IsoError> {
    const DIRECTORY_FLAG: u8 = 0x02;
    let name_length = usize::from(record[32]);
    let name = record
        .get(33..33 + name_length)
        .ok_or(IsoError::BadDirectory)?;
    if record[25] & DIRECTORY_FLAG != 0 || name == [0] || name == [1] {
        return Ok(None);
    }
    // The system use area (Rock Ridge) follows the name, padded to an even offset.
    let system_use = record.get((33 + name_length + 1) & !1..).unwrap_or(&[]);
    let name = rock_ridge_name(system_use).unwrap_or_else(|| {
        let iso = String::from_utf8_lossy(name);
        let plain = iso.split(';').next().unwrap_or_default();
        plain.trim_end_matches('.').to_string()
    });
    Ok(Some(Entry {
        name,
        extent: extent(record),
    }))
}

/// The Rock Ridge `NM` (alternate name) entry of a system use area, if it has one.
fn rock_ridge_name(mut area: &[u8]) -> Option<String> {
    while area.len() >= 4 {
        let length = usize::from(area[2]);
        if length < 4 || length > area.len() {
            return None;
        }
        if &area[..2] == b"NM" && length > 5 {
            return Some(String::from_utf8_lossy(&area[5..length]).into_owned());
        }
        area = &area[length..];
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A one-sector root directory holding `records`, with a descriptor pointing at it.
    fn image(records: &[Vec<u8>]) -> Vec<u8> {
        let mut data = vec![0u8; 20 * SECTOR as usize];
        let pvd = &mut data[16 * SECTOR as usize..17 * SECTOR as usize];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].copy_from_slice(&[b' '; 32]);
        pvd[40..44].copy_from_slice(b"TEST");
        pvd[574..702].copy_from_slice(&[b' '; 128]);
        pvd[574..591].copy_from_slice(b"VIREO-TOOLS 1.2.3");
        let root = record(b"\0", 18, SECTOR as u32, true, &[]);
        pvd[156..156 + root.len()].copy_from_slice(&root);
        let mut at = 18 * SECTOR as usize;
        for r in records {
            data[at..at + r.len()].copy_from_slice(r);
            at += r.len();
        }
        data[19 * SECTOR as usize..19 * SECTOR as usize + 5].copy_from_slice(b"hello");
        data
    }

    fn record(name: &[u8], sector: u32, bytes: u32, dir: bool, system_use: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&sector.to_le_bytes());
        r[10..14].copy_from_slice(&bytes.to_le_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[32] = name.len() as u8;
        r.extend_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r.extend_from_slice(system_use);
        r[0] = r.len() as u8;
        r
    }

    #[test]
    fn reads_identifiers_names_and_files() {
        let nm = [b"NM".as_slice(), &[16, 1, 0], b"vireo-tools"].concat();
        let data = image(&[
            record(b"\0", 18, SECTOR as u32, true, &[]),
            record(b"\x01", 18, SECTOR as u32, true, &[]),
            record(b"VIREO_TOOLS.;1", 19, 5, false, &nm),
            record(b"INSTALL.SH;1", 19, 3, false, &[]),
            record(b"SUBDIR", 18, SECTOR as u32, true, &[]),
        ]);
        let mut volume = Volume::open(Cursor::new(data)).unwrap();
        assert_eq!(volume.volume_id, "TEST");
        assert_eq!(volume.application_id, "VIREO-TOOLS 1.2.3");
        let names: Vec<String> = volume
            .root_files()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["vireo-tools", "INSTALL.SH"]);
        assert_eq!(volume.read_file("vireo-tools").unwrap(), b"hello");
        assert_eq!(volume.read_file("INSTALL.SH").unwrap(), b"hel");
        assert!(matches!(
            volume.read_file("nothing"),
            Err(IsoError::Missing(_))
        ));
    }

    #[test]
    fn refuses_what_is_not_an_image_and_bad_records() {
        assert!(matches!(
            Volume::open(Cursor::new(vec![0u8; 40 * SECTOR as usize])),
            Err(IsoError::NotIso)
        ));
        assert!(matches!(
            Volume::open(Cursor::new(vec![0u8; 100])),
            Err(IsoError::NotIso)
        ));
        // A record whose name runs past its end, and one shorter than a record can be.
        let mut long_name = record(b"A;1", 19, 5, false, &[]);
        long_name[32] = 200;
        let mut short = record(b"A;1", 19, 5, false, &[]);
        short[0] = 20;
        for bad in [long_name, short] {
            let mut volume = Volume::open(Cursor::new(image(&[bad]))).unwrap();
            assert!(matches!(volume.root_files(), Err(IsoError::BadDirectory)));
        }
        // A file larger than the bound is not read.
        let mut volume = Volume::open(Cursor::new(image(&[record(
            b"BIG;1",
            19,
            MAX_FILE_BYTES + 1,
            false,
            &[],
        )])))
        .unwrap();
        assert!(matches!(
            volume.read_file("BIG"),
            Err(IsoError::TooLarge(_, _))
        ));
    }
}
