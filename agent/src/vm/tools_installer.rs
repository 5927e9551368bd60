//! The tools installer: the ISO this host offers (`tools_iso`, built by
//! scripts/build-tools-iso.sh: vireo-tools and its installer) and the version it holds, and
//! MountToolsInstaller / UnmountToolsInstaller / UpgradeTools_Task on a VM. Mounting puts the
//! ISO into the VM's first CD-ROM drive while it runs (the change-medium path: vireod opens
//! the image and hands it to the VMM); unmounting gives the drive its own medium back. An
//! upgrade mounts the ISO, asks the guest's tools to install from it (`upgrade-tools`, for
//! tools that offer it) and unmounts it again.

use std::fs::File;
use std::path::{Path, PathBuf};

use vireo_api::schema::Schema;
use vireo_api::Fault;
use vireo_tools::iso9660::{IsoError, Volume};
use vireo_tools::protocol::Operation;
use vireo_tools::upgrade::APPLICATION_PREFIX;

use super::cdroms::{self, ToolsMount};
use super::handoff::Handoff;
use super::tools_host::{self, ToolsRequestError};
use super::{Power, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// The tools installer ISO and the tools version it holds.
#[derive(Debug, Clone)]
pub struct ToolsImage {
    /// The ISO on the host.
    pub path: PathBuf,
    /// The vireo-tools version inside (from the application identifier).
    pub version: String,
}

/// Why the tools ISO could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ToolsImageError {
    /// It could not be opened.
    #[error("cannot open {0}: {1}")]
    Open(PathBuf, std::io::Error),
    /// It is no readable ISO 9660 image.
    #[error("{0}: {1}")]
    Iso(PathBuf, IsoError),
    /// It is an ISO, but not a tools installer.
    #[error("{0} is not a vireo-tools installer (application identifier {1:?})")]
    NotTools(PathBuf, String),
}

impl ToolsImage {
    /// Reads the version of the tools ISO at `path`.
    pub fn load(path: &Path) -> Result<ToolsImage, ToolsImageError> {
        let file = File::open(path).map_err(|e| ToolsImageError::Open(path.into(), e))?;
        let volume = Volume::open(file).map_err(|e| ToolsImageError::Iso(path.into(), e))?;
        let version = volume
            .application_id
            .strip_prefix(APPLICATION_PREFIX)
            .ok_or_else(|| ToolsImageError::NotTools(path.into(), volume.application_id.clone()))?;
        Ok(ToolsImage {
            path: path.into(),
            version: version.to_string(),
        })
    }

    /// The configured tools ISO, if there is a usable one (logged otherwise).
    pub fn configured(path: &Path) -> Option<ToolsImage> {
        match ToolsImage::load(path) {
            Ok(image) => {
                tracing::info!(iso = %path.display(), version = %image.version, "tools installer");
                Some(image)
            }
            Err(error) => {
                tracing::warn!("no tools installer: {error}");
                None
            }
        }
    }
}

/// The checks every installer operation starts with: a running VM with a CD-ROM drive.
fn check_running_with_cdrom(schema: &Schema, state: &VmState) -> Result<(), Fault> {
    if state.power != Power::On {
        return Err(faults::invalid_power_state(
            schema,
            Some(Power::On),
            state.power,
        ));
    }
    if state.spec.cdroms.is_empty() {
        return Err(faults::vm_config_fault(
            schema,
            "The virtual machine has no CD-ROM drive to mount the VMware Tools installer in.",
        ));
    }
    Ok(())
}

/// MountToolsInstaller: the tools ISO goes into the VM's first CD-ROM drive.
pub fn mount(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let schema = host.schema;
    let image = host
        .tools_image
        .as_ref()
        .ok_or_else(|| faults::tools_image_not_available(schema))?;
    let mut state = vm.edit(host);
    check_running_with_cdrom(schema, &state)?;
    if state.cdroms.tools_installer.is_some() {
        return Err(faults::invalid_state(
            schema,
            "The VMware Tools installer is already mounted.",
        ));
    }
    let mut handoff = Handoff::default();
    let path = handoff
        .add_host_file(&image.path)
        .map_err(|e| faults::file_fault(schema, &image.path.display().to_string(), e))?;
    let was_loaded = state.cdroms.loaded(0);
    cdroms::load(host, vm, &mut state, 0, &handoff, Some(path))?;
    state.cdroms.tools_installer = Some(ToolsMount {
        index: 0,
        file_name: format!("[] {}", image.path.display()),
        was_loaded,
    });
    Ok(())
}

/// UnmountToolsInstaller: the drive gets its own medium back (or none, if it had none in).
pub fn unmount(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let schema = host.schema;
    let mut state = vm.edit(host);
    check_running_with_cdrom(schema, &state)?;
    let Some(mount) = state.cdroms.tools_installer.clone() else {
        return Err(faults::invalid_state(
            schema,
            "The VMware Tools installer is not mounted.",
        ));
    };
    let own = state.spec.cdroms.get(mount.index).cloned();
    let mut handoff = Handoff::default();
    let path = own
        .filter(|_| mount.was_loaded)
        .and_then(|cdrom| cdroms::own_medium(host, vm, &cdrom))
        .and_then(|medium| handoff.add_file(&host.datastores(), &medium).ok());
    cdroms::load(host, vm, &mut state, mount.index, &handoff, path)?;
    state.cdroms.tools_installer = None;
    Ok(())
}

/// UpgradeTools_Task: with the installer mounted, the guest's tools install the new version
/// and restart; guests whose tools cannot (the test guest's) get ToolsAutoUpgradeNotSupported.
pub fn upgrade(host: &Host, vm: &Vm) -> Result<(), Fault> {
    let schema = host.schema;
    let mounted_here = {
        let state = vm.state();
        check_running_with_cdrom(schema, &state)?;
        if !state.tools.running {
            return Err(faults::tools_unavailable(schema, "upgrade the tools"));
        }
        if !state.tools.upgrades {
            return Err(faults::tools_auto_upgrade_not_supported(schema));
        }
        state.cdroms.tools_installer.is_none()
    };
    if mounted_here {
        mount(host, vm)?;
    }
    let installed = tools_host::request(vm, Operation::UpgradeTools);
    if mounted_here {
        unmount(host, vm)?;
    }
    installed.map_err(|error| match error {
        ToolsRequestError::Unavailable => faults::tools_unavailable(schema, "upgrade the tools"),
        other => faults::vm_tools_upgrade_fault(schema, other.to_string()),
    })
}
