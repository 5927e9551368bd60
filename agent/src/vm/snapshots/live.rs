//! A running VM's disks handed to the host and back (ESXi's "stun"): pause the guest,
//! optionally save its machine state, detach the disks, let the caller change the disk trees,
//! attach the (possibly new) writable layers and resume. A VM that is not running needs none
//! of this: its layer files are closed already.

use std::path::Path;
use std::time::Duration;

use vireo_api::Fault;
use vireo_vmm_protocol::control::{Request, SaveReport};

use super::super::disks::trees as disks;
use super::super::jail::{self, VmmJail};
use super::super::{control, Power, Vm, VmState};
use crate::faults;
use crate::host::Host;

/// How long a pause, detach, attach or resume may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long saving the machine state may take.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `change` while the VM's disk images are closed, saving the machine state into
/// `save_to` first when given (the VM must then be running).
pub fn with_disks_closed<T>(
    host: &Host,
    vm: &Vm,
    state: &VmState,
    save_to: Option<&Path>,
    change: impl FnOnce() -> Result<T, Fault>,
) -> Result<T, Fault> {
    if state.power != Power::On {
        return change();
    }
    let schema = host.schema;
    let socket = vm.run_dir.join("control.sock");
    let refused = |what: &str, e: control::ControlError| {
        Fault::system_error(schema, format!("cannot {what} the VM: {e}"))
    };
    control::command(&socket, Request::Pause, CONTROL_TIMEOUT).map_err(|e| refused("pause", e))?;
    let resume = || {
        if let Err(error) = control::command(&socket, Request::Resume, CONTROL_TIMEOUT) {
            tracing::error!(
                vm = vm.id,
                "cannot resume after a snapshot operation: {error}"
            );
        }
    };
    if let Some(dir) = save_to {
        if let Err(fault) = save(host, &socket, dir) {
            resume();
            return Err(fault);
        }
    }
    if let Err(error) = control::command(&socket, Request::DetachDisks, CONTROL_TIMEOUT) {
        resume();
        return Err(refused("detach the disks of", error));
    }
    let result = change();
    let views = disks::views(vm, &state.spec, &host.datastores);
    let layers =
        super::super::disks::writable_layers(host, vm, &state.spec, &views).unwrap_or_default();
    let (paths, formats) = layers
        .into_iter()
        .map(|(path, format)| (path, super::super::disks::vmm_format(format)))
        .unzip();
    let chains = views.iter().flat_map(|v| &v.active.chain);
    let attached = jail::grant_chains(VmmJail::of(&host.config), chains)
        .map_err(|e| refused("give the disks to", control::ControlError::Grant(e)))
        .and_then(|()| {
            let request = Request::AttachDisks { paths, formats };
            control::command(&socket, request, CONTROL_TIMEOUT)
                .map_err(|e| refused("reattach the disks of", e))
        });
    if let Err(error) = attached {
        // A guest without its disks cannot go on: power it off rather than leave it hanging.
        tracing::error!(
            vm = vm.id,
            "cannot reattach the disks, powering off: {}",
            error.message
        );
        let _ = control::command(&socket, Request::PowerOff, CONTROL_TIMEOUT);
        return Err(error);
    }
    resume();
    result
}

/// Saves the running VM's machine state into `dir` (made for the VMM first; the VM is left
/// paused); on failure the directory is removed and the fault names it.
pub fn save(host: &Host, socket: &Path, dir: &Path) -> Result<(), Fault> {
    let schema = host.schema;
    let saved = jail::make_save_dir(VmmJail::of(&host.config), dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let request = Request::Save {
                dir: dir.to_owned(),
            };
            control::call::<SaveReport>(socket, &request, SAVE_TIMEOUT).map_err(|e| e.to_string())
        });
    saved.map(drop).map_err(|error| {
        let _ = std::fs::remove_dir_all(dir);
        faults::file_fault(
            schema,
            &dir.display().to_string(),
            format!("cannot save the VM: {error}"),
        )
    })
}
