//! Installing new tools from the installer CD (UpgradeTools_Task): finds the medium whose
//! application identifier is `VIREO-TOOLS <version>` (the ISO scripts/build-tools-iso.sh
//! builds), copies its `vireo-tools` and `install.sh` into a fresh work folder and runs the
//! installer on them, which puts the new binary in place of the running one. The daemon then
//! re-executes itself (see `main.rs`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::iso9660::{IsoError, Volume};

/// How the tools ISO's application identifier starts; the version follows.
pub const APPLICATION_PREFIX: &str = "VIREO-TOOLS ";
/// The installer script and the binary on the medium.
pub const INSTALLER: &str = "install.sh";
/// The tools binary on the medium.
pub const BINARY: &str = "vireo-tools";

/// Why an upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// No medium holds the tools installer.
    #[error("no CD-ROM holds the vireo-tools installer (is it mounted?)")]
    NoMedium,
    /// The medium could not be read.
    #[error("cannot read the installer medium {0}: {1}")]
    Medium(PathBuf, IsoError),
    /// The work folder could not be written.
    #[error("cannot unpack the installer into {0}: {1}")]
    Unpack(PathBuf, std::io::Error),
    /// The installer failed.
    #[error("the installer failed: {0}")]
    Installer(String),
}

/// Where the installer is looked for and what it replaces.
#[derive(Debug, Clone)]
pub struct Installer {
    /// Media to look at; empty: every virtio-blk disk and CD drive in /dev (`vd*`, `sr*`).
    pub media: Vec<PathBuf>,
    /// Where the installer is unpacked (a folder of its own is made inside).
    pub work_dir: PathBuf,
    /// The binary the installer replaces (the running daemon's).
    pub target: PathBuf,
}

impl Installer {
    /// The media to look at, in order.
    fn candidates(&self) -> Vec<PathBuf> {
        if !self.media.is_empty() {
            return self.media.clone();
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/dev")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| is_drive(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }

    /// The first medium holding the installer, opened, and its version.
    fn find(&self) -> Result<(PathBuf, Volume<File>, String), UpgradeError> {
        for path in self.candidates() {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let Ok(volume) = Volume::open(file) else {
                continue;
            };
            if let Some(version) = volume.application_id.strip_prefix(APPLICATION_PREFIX) {
                let version = version.to_string();
                return Ok((path, volume, version));
            }
        }
        Err(UpgradeError::NoMedium)
    }

    /// Installs the tools from the installer medium; returns the installed version.
    pub fn install(&self) -> Result<String, UpgradeError> {
        let (medium, mut volume, version) = self.find()?;
        let unpacked = self
            .work_dir
            .join(format!("vireo-tools-upgrade.{}", std::process::id()));
        let unpack_error = |e| UpgradeError::Unpack(unpacked.clone(), e);
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::create_dir(&unpacked).map_err(unpack_error)?;
        let outcome = (|| {
            for name in [BINARY, INSTALLER] {
                let bytes = volume
                    .read_file(name)
                    .map_err(|e| UpgradeError::Medium(medium.clone(), e))?;
                write_executable(&unpacked.join(name), &bytes).map_err(unpack_error)?;
            }
            run_installer(&unpacked, &self.target)
        })();
        let _ = std::fs::remove_dir_all(&unpacked);
        outcome.map(|()| version)
    }
}

/// Whether a /dev name is a whole virtio-blk disk (`vdb`, not the partition `vdb1`) or a CD
/// drive (`sr0`).
fn is_drive(name: &str) -> bool {
    match name.strip_prefix("vd") {
        Some(letters) => !letters.is_empty() && letters.bytes().all(|b| b.is_ascii_lowercase()),
        None => name.starts_with("sr"),
    }
}

/// Writes a new file with mode 0755.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?
        .write_all(bytes)
}

/// Runs `sh install.sh FOLDER TARGET` and waits for it; its output goes into the error.
fn run_installer(folder: &Path, target: &Path) -> Result<(), UpgradeError> {
    let output = Command::new("/bin/sh")
        .arg(folder.join(INSTALLER))
        .arg(folder)
        .arg(target)
        .output()
        .map_err(|e| UpgradeError::Installer(e.to_string()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(UpgradeError::Installer(format!(
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
