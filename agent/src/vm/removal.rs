//! A VM leaving the inventory: [`unregister`] (its files stay) and [`destroy`] (the files it
//! owns go too, under a task journal). Both the SOAP methods (UnregisterVM, Destroy_Task) and
//! the clean-up of a failed OVF import call them; their errors are typed, the callers turn them
//! into faults or log lines.

use std::sync::Arc;

use super::journal::{Intent, Journal, JournalError};
use super::snapshots::clone_holds;
use super::{destroy, lifecycle, properties, Power, Vm};
use crate::host::Host;

/// Why a VM could not be unregistered.
#[derive(Debug, thiserror::Error)]
pub enum UnregisterError {
    /// The VM runs (only a powered-off or suspended VM leaves the inventory).
    #[error("the VM is {}", .0.as_str())]
    Running(Power),
    /// The inventory file could not be rewritten.
    #[error("{0}")]
    Inventory(std::io::Error),
}

/// Why a VM could not be destroyed.
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    /// It could not leave the inventory (it runs, or the inventory file failed).
    #[error(transparent)]
    Unregister(#[from] UnregisterError),
    /// Linked clones (`clones`: their names, else their instanceUuids) are built on layers of
    /// the VM's disks; deleting them would break the clones.
    #[error(
        "{name} cannot be deleted: the linked clones {clones} are built on its disks; \
         destroy them or promote their disks first."
    )]
    LinkedClones {
        /// The VM's name.
        name: String,
        /// The clones, comma-separated.
        clones: String,
    },
    /// The task journal could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Deletes the files the VM owns, then its folder if empty (a folder holding other files
/// stays), and forgets it. Only when not running.
pub fn destroy(host: &Host, vm: &Arc<Vm>) -> Result<(), DestroyError> {
    let (bases, owned, instance_uuid) = {
        let state = vm.state();
        if state.power == Power::On {
            return Err(UnregisterError::Running(state.power).into());
        }
        let holders = clone_holds::holders(host, vm, &state);
        if !holders.is_empty() {
            let name = state.spec.name.clone();
            drop(state);
            let clones = clone_names(host, vm, &holders);
            return Err(DestroyError::LinkedClones { name, clones });
        }
        let bases: Vec<_> = state
            .spec
            .disks
            .iter()
            .filter_map(|d| vm.disk_path(&d.file_name, &host.datastores()).ok())
            .collect();
        let owned = destroy::owned_files(vm, &state, &bases);
        (bases, owned, state.spec.instance_uuid.clone())
    };
    let parents = clone_holds::parents_of(&bases);
    let intent = Intent::Destroy {
        parents: parents.clone(),
        instance_uuid: instance_uuid.clone(),
        owned: owned.clone(),
    };
    let mut journal = Journal::begin(&vm.dir, intent)?;
    if let Err(error) = unregister(host, vm, "", true) {
        journal.finish();
        return Err(error.into());
    }
    journal.step("unregistered")?;
    clone_holds::release(host, &parents, &instance_uuid);
    journal.step("holds-released")?;
    let owned = owned.and_last(journal.path().to_path_buf());
    let _ = std::fs::remove_dir_all(&vm.run_dir);
    for kept in owned.remove() {
        tracing::warn!(folder = %kept.display(), "left in place: it holds files the VM does not own");
    }
    Ok(())
}

/// The names of the linked clones `holders` (instanceUuids) of `vm`'s disks; the uuids
/// themselves when none of them is registered.
fn clone_names(host: &Host, vm: &Vm, holders: &[String]) -> String {
    let clones: Vec<String> = host
        .vms
        .all()
        .into_iter()
        .filter(|other| other.id != vm.id)
        .filter_map(|other| {
            let state = other.state();
            holders
                .contains(&state.spec.instance_uuid)
                .then(|| state.spec.name.clone())
        })
        .collect();
    if clones.is_empty() {
        holders.join(", ")
    } else {
        clones.join(", ")
    }
}

/// The VM leaves the inventory (`user` asked; `destroying` when it is the end of a destroy);
/// its files stay.
pub fn unregister(
    host: &Host,
    vm: &Vm,
    user: &str,
    destroying: bool,
) -> Result<(), UnregisterError> {
    let mut state = vm.state();
    if state.power == Power::On {
        return Err(UnregisterError::Running(state.power));
    }
    host.vms
        .unregister(vm)
        .map_err(UnregisterError::Inventory)?;
    let message = if destroying {
        "deleted"
    } else {
        "unregistered"
    };
    lifecycle::post_vm_event(
        host,
        vm,
        &state,
        "VmRemovedEvent",
        format!("{} {message}", state.spec.name),
        user,
    );
    state.removed = true;
    state.standby = None;
    properties::withdraw(host, vm);
    Ok(())
}
