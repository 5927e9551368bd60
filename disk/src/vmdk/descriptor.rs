//! The VMDK text descriptor: parsing the parts a reader needs (create type, parent link,
//! extent lines) and writing the descriptor our writers embed. No file access: extent file
//! names are returned as written and the caller decides where (and whether) to open them.

use std::time::{SystemTime, UNIX_EPOCH};

/// The first line of every descriptor.
pub const SIGNATURE: &str = "# Disk DescriptorFile";
/// The largest descriptor accepted (bytes).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// `parentCID` of a disk without parent.
const NO_PARENT: &str = "ffffffff";

/// Where one extent's sectors come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentSource {
    /// A flat file holding the sectors from byte `offset_sectors * 512`.
    Flat {
        /// File name as written in the descriptor.
        file: String,
        /// First sector inside the file.
        offset_sectors: u64,
    },
    /// A hosted sparse extent file.
    Sparse {
        /// File name as written in the descriptor.
        file: String,
    },
    /// Sectors that read as zeros and have no file.
    Zero,
}

/// One line of the extent description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Sectors the extent contributes to the disk.
    pub sectors: u64,
    /// Where they come from.
    pub source: ExtentSource,
}

/// The parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `createType` (monolithicSparse, streamOptimized, monolithicFlat, ...).
    pub create_type: String,
    /// The extents in disk order.
    pub extents: Vec<Extent>,
}

/// Parses descriptor text; `Err` says what is unsupported or malformed.
pub fn parse(text: &str) -> Result<Descriptor, String> {
    let mut create_type = None;
    let mut extents = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"');
            match key.trim() {
                "createType" => create_type = Some(value.to_string()),
                "parentCID" if !value.eq_ignore_ascii_case(NO_PARENT) => {
                    return Err("delta disks (with a parent disk) are not supported".into())
                }
                _ => {}
            }
            continue;
        }
        extents.push(parse_extent(line)?);
    }
    let create_type = create_type.ok_or("the descriptor has no createType")?;
    if extents.is_empty() {
        return Err("the descriptor lists no extents".into());
    }
    Ok(Descriptor {
        create_type,
        extents,
    })
}

/// Parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent(line: &str) -> Result<Extent, String> {
    let bad = || format!("malformed extent line {line:?}");
    let (head, tail) = match line.find('"') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let fields: Vec<&str> = head.split_whitespace().collect();
    let [access, sectors, kind] = fields[..] else {
        return Err(bad());
    };
    if access == "NOACCESS" || !(access == "RW" || access == "RDONLY") {
        return Err(format!("extent access {access:?} is not readable"));
    }
    let sectors: u64 = sectors.parse().map_err(|_| bad())?;
    let (file, rest) = match tail.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted.find('"').ok_or_else(bad)?;
            (Some(quoted[..end].to_string()), quoted[end + 1..].trim())
        }
        None => (None, ""),
    };
    let source = match (kind, file) {
        ("ZERO", _) => ExtentSource::Zero,
        ("FLAT", Some(file)) => ExtentSource::Flat {
            file,
            offset_sectors: if rest.is_empty() {
                0
            } else {
                rest.parse().map_err(|_| bad())?
            },
        },
        ("SPARSE", Some(file)) => ExtentSource::Sparse { file },
        ("FLAT" | "SPARSE", None) => return Err(bad()),
        (other, _) => return Err(format!("extent type {other} is not supported")),
    };
    Ok(Extent { sectors, source })
}

/// The descriptor our writers embed: one sparse extent named `file_name`.
pub fn build_sparse(create_type: &str, capacity_sectors: u64, file_name: &str) -> String {
    let (heads, sectors_per_track) = (255u64, 63u64);
    let cylinders = (capacity_sectors / (heads * sectors_per_track)).clamp(1, 65535);
    let name: String = file_name
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    format!(
        "{SIGNATURE}\nversion=1\nCID={:08x}\nparentCID={NO_PARENT}\ncreateType=\"{create_type}\"\n\n\
         # Extent description\nRW {capacity_sectors} SPARSE \"{name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"{heads}\"\n\
         ddb.geometry.sectors = \"{sectors_per_track}\"\nddb.adapterType = \"lsilogic\"\n",
        content_id()
    )
}

/// A fresh content id (CID): changes whenever a disk is written, so any new value will do.
fn content_id() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    (nanos ^ std::process::id().rotate_left(16)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_zero_extents_parse() {
        let text = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
                    createType=\"monolithicFlat\"\nRW 2048 FLAT \"my disk-flat.vmdk\" 0\n\
                    RDONLY 100 ZERO\nRW 8 FLAT \"b.vmdk\" 4\n";
        let d = parse(text).unwrap();
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(
            d.extents,
            vec![
                Extent {
                    sectors: 2048,
                    source: ExtentSource::Flat {
                        file: "my disk-flat.vmdk".into(),
                        offset_sectors: 0
                    }
                },
                Extent {
                    sectors: 100,
                    source: ExtentSource::Zero
                },
                Extent {
                    sectors: 8,
                    source: ExtentSource::Flat {
                        file: "b.vmdk".into(),
                        offset_sectors: 4
                    }
                },
            ]
        );
    }

    #[test]
    fn our_descriptor_parses_back() {
        let d = parse(&build_sparse("streamOptimized", 4096, "disk-0.vmdk")).unwrap();
        assert_eq!(d.create_type, "streamOptimized");
        assert_eq!(
            d.extents[0].source,
            ExtentSource::Sparse {
                file: "disk-0.vmdk".into()
            }
        );
    }

    #[test]
    fn unsupported_descriptors_are_refused() {
        let head = "createType=\"monolithicSparse\"\n";
        assert!(parse(&format!("{head}parentCID=12345678\nRW 8 SPARSE \"a\"\n")).is_err());
        assert!(parse(&format!("{head}NOACCESS 8 FLAT \"a\" 0\n")).is_err());
        assert!(parse(&format!("{head}RW 8 VMFSSPARSE \"a\"\n")).is_err());
        assert!(parse(&format!("{head}RW x FLAT \"a\" 0\n")).is_err());
        assert!(parse(&format!("{head}RW 8 FLAT \"a\n")).is_err());
        assert!(parse(head).is_err());
        assert!(parse("RW 8 FLAT \"a\" 0\n").is_err());
    }
}
