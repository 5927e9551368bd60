//! PromoteDisks: gives a VM's disks their own data. With `unlink`, whatever a linked clone's
//! parent disks (the files below a disk's base file, shared with other VMs or images) provide
//! is copied into the base file and the link dropped; then, in every case, the layers no
//! snapshot needs are merged as ConsolidateVMDisks does. Parent disks are only ever read; once
//! unlinked, the holds a linked clone kept on them are released (`clone_holds`).

use std::path::PathBuf;

use vireo_api::Fault;
use vireo_disk::tree::{DiskTree, LayerId};

use super::super::disks::trees::{each, open_all};
use super::super::disks::{disk_fault, refresh};
use super::super::journal::Intent;
use super::super::properties::DISK_KEY;
use super::super::{Power, Vm};
use super::{clone_holds, live};
use crate::host::Host;

/// PromoteDisks_Task: promotes the disks whose device keys are `keys` (every disk when empty).
pub fn promote(host: &Host, vm: &Vm, unlink: bool, keys: &[i32]) -> Result<(), Fault> {
    let mut state = vm.edit(host);
    // The API reference: to promote the disks of a powered-on VM, it cannot have snapshots.
    if state.power == Power::On && !state.snapshots.snapshots.is_empty() {
        return Err(crate::faults::invalid_power_state(
            host.schema,
            Some(Power::Off),
            state.power,
        ));
    }
    let chosen = chosen_disks(host, state.spec.disks.len(), keys)?;
    let trees = open_all(vm, &state.spec, &host.datastores()).map_err(|e| disk_fault(host, e))?;
    let mut trees: Vec<DiskTree> = trees
        .into_iter()
        .zip(chosen)
        .filter_map(|(tree, chosen)| chosen.then_some(tree))
        .collect();
    let bases: Vec<PathBuf> = trees.iter().map(|t| t.layer_path(root(t))).collect();
    let parents = if unlink {
        clone_holds::parents_of(&bases)
    } else {
        Vec::new()
    };
    let mut journal = super::begin(host, vm, Intent::Consolidate)?;
    let result = live::with_disks_closed(host, vm, &state, None, &mut journal, || {
        each(&mut trees, |tree| {
            if unlink {
                tree.unlink_root(&mut |_, _| true)?;
            }
            tree.consolidate(&mut |_, _| true)
        })
        .map_err(|e| disk_fault(host, e))
    });
    journal.finish();
    refresh(host, vm, &mut state);
    let clone_uuid = state.spec.instance_uuid.clone();
    drop(state);
    if result.is_ok() {
        // The unlinked disks no longer need the layers they were children of.
        clone_holds::release(host, &parents, &clone_uuid);
    }
    result
}

/// A tree's root layer (the disk's base file).
fn root(tree: &DiskTree) -> LayerId {
    let state = tree.state();
    state
        .layers
        .iter()
        .find(|l| l.parent.is_none())
        .map_or(state.active, |l| l.id)
}

/// Which of the VM's `count` disks the keys name (all of them for no keys).
fn chosen_disks(host: &Host, count: usize, keys: &[i32]) -> Result<Vec<bool>, Fault> {
    let mut chosen = vec![keys.is_empty(); count];
    for &key in keys {
        let index = usize::try_from(key - DISK_KEY)
            .ok()
            .filter(|&i| i < count)
            .ok_or_else(|| {
                Fault::invalid_argument(
                    host.schema,
                    "disks",
                    format!("the VM has no disk with key {key}"),
                )
            })?;
        chosen[index] = true;
    }
    Ok(chosen)
}
