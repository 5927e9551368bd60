//! How a qcow2 image's backing file is found: every backing-file lookup of this crate goes
//! through one [`BackingOpener`]. By default a name resolves as qemu-img resolves it (relative
//! to the image's folder, absolute as given), which suits an operator's own files (`vdisk`). A
//! process that opens images it does not trust (vireod: a client or a guest may have written
//! the header) installs a confined opener once with [`confine`]; from then on every chain any
//! part of this crate opens — trees, merges, CBT, sizes — resolves through it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Finds and opens backing files.
pub trait BackingOpener: Send + Sync {
    /// Opens, read-only, the backing file `name` that an image in folder `child_dir` names;
    /// returns it and its host path.
    fn open_backing(&self, child_dir: &Path, name: &str) -> io::Result<(File, PathBuf)>;
}

/// qemu-img's rule: relative to the image's folder, absolute names as given.
struct HostPaths;

impl BackingOpener for HostPaths {
    fn open_backing(&self, child_dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
        let path = child_dir.join(name);
        Ok((File::open(&path)?, path))
    }
}

static OPENER: OnceLock<Box<dyn BackingOpener>> = OnceLock::new();

/// Makes `opener` the one every later backing-file lookup of this process goes through.
/// Returns false (and changes nothing) when one was installed before.
pub fn confine(opener: Box<dyn BackingOpener>) -> bool {
    OPENER.set(opener).is_ok()
}

/// The installed opener, or qemu-img's rule.
pub(crate) fn opener() -> &'static dyn BackingOpener {
    OPENER.get().map_or(&HostPaths, |o| o.as_ref())
}
