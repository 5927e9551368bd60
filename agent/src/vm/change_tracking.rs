//! Changed-block tracking as the API shows it: the configured switch (`ctkEnabled` in the
//! `.vmx`, set by ReconfigVM and applied to the disk trees at the next power-on, resume or
//! snapshot) and
//! QueryChangedDiskAreas over a disk's tree, paged for clients that loop on startOffset.

use vireo_api::{DataObject, Fault, MoRef, Value};
use vireo_disk::tree::cbt::CbtError;
use vireo_disk::tree::DiskTree;

use super::disks::{self, trees};
use super::snapshots;
use super::{properties, Power, Vm};
use crate::faults;
use crate::host::Host;

/// Most extents one DiskChangeInfo carries; the rest come on the next page.
const MAX_EXTENTS_PER_PAGE: usize = 2048;

/// What QueryChangedDiskAreas asks.
pub struct ChangeQuery {
    /// The snapshot whose disk state is compared (None: the disk now, VM powered off).
    pub snapshot: Option<MoRef>,
    /// The disk's device key.
    pub device_key: i32,
    /// Where the page starts, in bytes.
    pub start_offset: i64,
    /// The changeId compared against, or `"*"` for every allocated area.
    pub change_id: String,
}

/// QueryChangedDiskAreas: a DiskChangeInfo page of the areas that changed since `change_id`.
pub fn query(host: &Host, vm: &Vm, q: &ChangeQuery) -> Result<DataObject, Fault> {
    let schema = host.schema;
    let snapshot_uid = match &q.snapshot {
        Some(snapshot) => match snapshots::resolve(host, snapshot) {
            Some((owner, uid)) if owner.id == vm.id => Some(uid),
            _ => return Err(Fault::managed_object_not_found(schema, snapshot)),
        },
        None => None,
    };
    let (base, capacity, snapshot_name) = {
        let state = vm.state();
        let index = usize::try_from(q.device_key - properties::DISK_KEY)
            .ok()
            .filter(|&i| i < state.spec.disks.len())
            .ok_or_else(|| {
                Fault::invalid_argument(
                    schema,
                    "deviceKey",
                    format!("{} is not a virtual disk of this VM", q.device_key),
                )
            })?;
        let snapshot_name = match snapshot_uid {
            Some(uid) => Some(trees::tree_snapshot_name(uid)),
            None if state.power != Power::Off => {
                return Err(faults::file_fault(
                    schema,
                    &state.spec.disks[index].file_name,
                    "The disk is in use: query a snapshot of a running VM, or power it off.",
                ))
            }
            None => None,
        };
        let bases = trees::base_paths(vm, &state.spec, &host.datastores())
            .map_err(|e| disks::disk_fault(host, e))?;
        let capacity = state.disk_capacities.get(index).copied().unwrap_or(0);
        (bases[index].clone(), capacity, snapshot_name)
    };
    let start = u64::try_from(q.start_offset)
        .ok()
        .filter(|&s| s < capacity)
        .ok_or_else(|| {
            Fault::invalid_argument(
                schema,
                "startOffset",
                format!("{} is outside the disk ({capacity} bytes)", q.start_offset),
            )
        })?;
    let file_fault =
        |why: &dyn std::fmt::Display| faults::file_fault(schema, &base.display().to_string(), why);
    let mut tree = DiskTree::open(&base).map_err(|e| file_fault(&e))?;
    let areas = tree
        .changed_areas(
            &q.change_id,
            snapshot_name.as_deref(),
            start,
            capacity - start,
        )
        .map_err(|e| match e {
            CbtError::Malformed(_) => Fault::invalid_argument(schema, "changeId", e.to_string()),
            other => file_fault(&other),
        })?;
    let (length, areas) = page(start, capacity, areas);
    let extents: Vec<Value> = areas
        .iter()
        .map(|&(offset, len)| {
            DataObject::of(schema, "DiskChangeExtent")
                .with(schema, "start", offset as i64)
                .with(schema, "length", len as i64)
                .into()
        })
        .collect();
    let mut info = DataObject::of(schema, "DiskChangeInfo")
        .with(schema, "startOffset", start as i64)
        .with(schema, "length", length as i64);
    if !extents.is_empty() {
        info.set(
            schema,
            "changedArea",
            Value::Array(schema.known_type("DiskChangeExtent"), extents),
        );
    }
    Ok(info)
}

/// Cuts the answer for `[start, capacity)` to one page: the span covered and its extents.
fn page(start: u64, capacity: u64, mut areas: Vec<(u64, u64)>) -> (u64, Vec<(u64, u64)>) {
    if areas.len() <= MAX_EXTENTS_PER_PAGE {
        return (capacity - start, areas);
    }
    areas.truncate(MAX_EXTENTS_PER_PAGE);
    let (offset, len) = areas[MAX_EXTENTS_PER_PAGE - 1];
    (offset + len - start, areas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_the_disk_without_gaps() {
        let capacity = 1 << 40;
        let all: Vec<(u64, u64)> = (0..5000u64).map(|i| (4096 + i * 131072, 65536)).collect();
        let mut start = 4096;
        let mut seen = Vec::new();
        while start < capacity {
            let rest: Vec<_> = all.iter().copied().filter(|&(o, _)| o >= start).collect();
            let (length, areas) = page(start, capacity, rest);
            assert!(length > 0);
            assert!(areas
                .iter()
                .all(|&(o, l)| o >= start && o + l <= start + length));
            seen.extend(areas);
            start += length;
        }
        assert_eq!(seen, all);
    }
}
