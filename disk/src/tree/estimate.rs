//! Space estimate for consolidation: replays the consolidation plan on the layers' allocation
//! maps (read from their L1/L2 tables) and counts, per merge, the clusters the receiving
//! layer must allocate (data and L2 tables) and the clusters it frees.

use std::collections::HashMap;
use std::path::Path;

use super::plan::Step;
use super::sidecar::{LayerId, TreeState};
use super::{open_read_only, TreeError};
use crate::open::{probe_format, ImageFormat};
use crate::qcow2::{AllocationMap, ClusterState, TableState};

/// What one merge of a consolidation costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeEstimate {
    /// The layer copied down.
    pub child: LayerId,
    /// The layer receiving it.
    pub parent: LayerId,
    /// Guest bytes the merge copies (data and zero ranges of the child).
    pub bytes_to_copy: u64,
    /// Clusters the parent allocates: data clusters plus L2 tables (0 for a raw parent).
    pub new_clusters: u64,
    /// Clusters of the parent the merge frees (overwritten compressed or shared clusters,
    /// data replaced by zeros, copied L2 tables).
    pub freed_clusters: u64,
    /// Upper bound on refcount blocks the parent may add for its new clusters.
    pub refcount_block_bound: u64,
    /// The parent's cluster size in bytes.
    pub cluster_size: u64,
    /// False when the parent is raw (then `bytes_to_copy` bounds the space it needs).
    pub exact: bool,
}

/// What a consolidation would do and cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsolidationEstimate {
    /// The merges, in the order consolidation runs them.
    pub merges: Vec<MergeEstimate>,
    /// Layers whose files consolidation deletes (dead leaves and merged children).
    pub removed_layers: Vec<LayerId>,
    /// Guest bytes copied in total.
    pub bytes_to_copy: u64,
    /// Extra disk space needed at most while consolidating (new clusters and refcount
    /// blocks in the receiving layers; no credit is taken for files deleted on the way).
    pub space_needed: u64,
    /// Space returned by the deleted layer files (their allocated blocks).
    pub space_freed: u64,
}

/// Estimates the consolidation of `state`, whose layer files live in `folder`.
pub fn estimate(state: &TreeState, folder: &Path) -> Result<ConsolidationEstimate, TreeError> {
    let mut state = state.clone();
    let mut maps: HashMap<LayerId, AllocationMap> = HashMap::new();
    let mut result = ConsolidationEstimate::default();
    let path_of = |state: &TreeState, id: LayerId| {
        folder.join(&state.layer(id).expect("planned layers exist").file)
    };
    while let Some(step) = state.next_step() {
        let removed = match step {
            Step::RemoveLeaf(id) => id,
            Step::Merge { child, parent } => {
                let child_map = match maps.remove(&child) {
                    Some(map) => map,
                    None => load_map(&path_of(&state, child))?,
                };
                if let std::collections::hash_map::Entry::Vacant(slot) = maps.entry(parent) {
                    slot.insert(load_map(&path_of(&state, parent))?);
                }
                let has_backing = state.layer(parent).is_some_and(|l| l.parent.is_some());
                let target = maps.get_mut(&parent).expect("just inserted");
                let merge = simulate_merge(&child_map, target, has_backing, child, parent);
                result.bytes_to_copy += merge.bytes_to_copy;
                result.space_needed += if merge.exact {
                    (merge.new_clusters + merge.refcount_block_bound) * merge.cluster_size
                } else {
                    merge.bytes_to_copy
                };
                result.merges.push(merge);
                child
            }
        };
        let path = path_of(&state, removed);
        result.space_freed += std::fs::metadata(&path).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        });
        result.removed_layers.push(removed);
        state.apply(step);
    }
    Ok(result)
}

fn load_map(path: &Path) -> Result<AllocationMap, TreeError> {
    if probe_format(path)? == ImageFormat::Raw {
        let size = crate::open_disk(path, true)?.capacity();
        return Ok(AllocationMap::raw(size));
    }
    Ok(open_read_only(path)?.allocation_map()?)
}

/// Replays `chain::commit` of `child` into `parent` on their maps, updating `parent`.
fn simulate_merge(
    child: &AllocationMap,
    parent: &mut AllocationMap,
    parent_has_backing: bool,
    child_id: LayerId,
    parent_id: LayerId,
) -> MergeEstimate {
    let pcs = 1u64 << parent.cluster_bits;
    let mut merge = MergeEstimate {
        child: child_id,
        parent: parent_id,
        bytes_to_copy: 0,
        new_clusters: 0,
        freed_clusters: 0,
        refcount_block_bound: 0,
        cluster_size: pcs,
        exact: !parent.raw,
    };
    let ccs = 1u64 << child.cluster_bits;
    for (index, state) in child.allocated() {
        let start = index * ccs;
        let end = (start + ccs).min(child.size);
        merge.bytes_to_copy += end - start;
        if parent.raw {
            continue;
        }
        let last = ((end - 1) / pcs).min(parent.cluster_count().saturating_sub(1));
        for pc in start / pcs..=last {
            let (pstart, pend) = (pc * pcs, ((pc + 1) * pcs).min(parent.size));
            let whole = start <= pstart && end >= pend;
            write_cluster(
                parent,
                pc,
                state == ClusterState::Zero,
                whole,
                parent_has_backing,
                &mut merge,
            );
        }
    }
    if merge.new_clusters > 0 {
        // a 64-bit-wide refcount block covers cluster_size / 8 clusters
        merge.refcount_block_bound = merge.new_clusters.div_ceil(pcs / 8) + 1;
    }
    merge
}

/// One guest cluster of the parent receiving data (or zeros, `whole` or partial).
fn write_cluster(
    parent: &mut AllocationMap,
    pc: u64,
    zero: bool,
    whole: bool,
    has_backing: bool,
    merge: &mut MergeEstimate,
) {
    let current = parent.state(pc);
    if zero && whole {
        if current == ClusterState::Zero {
            return;
        }
        if matches!(current, ClusterState::Owned | ClusterState::Shared) {
            merge.freed_clusters += 1;
        }
        own_table(parent, pc, merge);
        parent.set_state(pc, ClusterState::Zero);
        return;
    }
    let reads_as_zero =
        current == ClusterState::Zero || (current == ClusterState::Unallocated && !has_backing);
    if (zero && reads_as_zero) || current == ClusterState::Owned {
        return;
    }
    merge.new_clusters += 1;
    if current == ClusterState::Shared {
        merge.freed_clusters += 1;
    }
    own_table(parent, pc, merge);
    parent.set_state(pc, ClusterState::Owned);
}

/// Makes the L2 table covering guest cluster `pc` writable, counting what that allocates.
fn own_table(parent: &mut AllocationMap, pc: u64, merge: &mut MergeEstimate) {
    let index = pc / ((1u64 << parent.cluster_bits) / 8);
    match parent.table(index) {
        TableState::Owned => {}
        TableState::Absent => merge.new_clusters += 1,
        TableState::Shared => {
            merge.new_clusters += 1;
            merge.freed_clusters += 1;
        }
    }
    parent.set_table(index, TableState::Owned);
}
