//! The allocation of one layer as space estimates need it: per guest cluster whether it is
//! unallocated, zero, owned or shared, and per L1 entry whether its L2 table is absent, owned
//! or shared. Cluster states are kept per L2 table, only for tables that exist, so a sparse
//! disk costs memory in proportion to its allocated tables, not its size.

/// What one guest cluster of a layer holds, as far as writing to it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Nothing here: reads from the backing file.
    Unallocated,
    /// A zero flag without storage.
    Zero,
    /// Storage this layer owns alone: written in place.
    Owned,
    /// Storage that a write replaces with a new cluster (compressed, shared, preallocated zero).
    Shared,
}

/// Whether an L1 entry points at an L2 table that can be updated in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableState {
    /// No L2 table: one must be allocated before setting an entry.
    Absent,
    /// A table with refcount one.
    Owned,
    /// A shared table: setting an entry copies it.
    Shared,
}

/// The allocation of one layer, cluster by cluster.
#[derive(Debug, Clone)]
pub struct AllocationMap {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Guest size in bytes.
    pub size: u64,
    /// True for a raw file (no metadata: no clusters or tables are tracked).
    pub raw: bool,
    tables: Vec<TableState>,
    /// Cluster states per L1 entry; `None` while all of that table's clusters are unallocated.
    chunks: Vec<Option<Box<[ClusterState]>>>,
}

impl AllocationMap {
    /// A map with every cluster unallocated and the given L2 table states.
    pub fn new(cluster_bits: u32, size: u64, tables: Vec<TableState>) -> Self {
        Self {
            cluster_bits,
            size,
            raw: false,
            chunks: vec![None; tables.len()],
            tables,
        }
    }

    /// The map of a raw file of `size` bytes.
    pub fn raw(size: u64) -> Self {
        Self {
            raw: true,
            ..Self::new(9, size, Vec::new())
        }
    }

    /// Guest clusters of the disk.
    pub fn cluster_count(&self) -> u64 {
        self.size.div_ceil(1 << self.cluster_bits)
    }

    fn per_table(&self) -> u64 {
        (1u64 << self.cluster_bits) / 8
    }

    /// The state of guest cluster `cluster`.
    pub fn state(&self, cluster: u64) -> ClusterState {
        let per_table = self.per_table();
        self.chunks
            .get((cluster / per_table) as usize)
            .and_then(Option::as_ref)
            .map_or(ClusterState::Unallocated, |chunk| {
                chunk[(cluster % per_table) as usize]
            })
    }

    /// Sets the state of guest cluster `cluster` (ignored beyond the L1 table).
    pub fn set_state(&mut self, cluster: u64, state: ClusterState) {
        let per_table = self.per_table();
        let Some(slot) = self.chunks.get_mut((cluster / per_table) as usize) else {
            return;
        };
        let chunk = slot.get_or_insert_with(|| {
            vec![ClusterState::Unallocated; per_table as usize].into_boxed_slice()
        });
        chunk[(cluster % per_table) as usize] = state;
    }

    /// The clusters that are not unallocated, in order, with their states.
    pub fn allocated(&self) -> impl Iterator<Item = (u64, ClusterState)> + '_ {
        let per_table = self.per_table();
        self.chunks
            .iter()
            .enumerate()
            .filter_map(move |(index, chunk)| Some((index as u64 * per_table, chunk.as_ref()?)))
            .flat_map(|(first, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .map(move |(i, &state)| (first + i as u64, state))
            })
            .filter(|&(_, state)| state != ClusterState::Unallocated)
    }

    /// The state of the L2 table at L1 index `index` (absent beyond the L1 table).
    pub fn table(&self, index: u64) -> TableState {
        self.tables
            .get(index as usize)
            .copied()
            .unwrap_or(TableState::Absent)
    }

    /// Sets the state of the L2 table at L1 index `index` (ignored beyond the L1 table).
    pub fn set_table(&mut self, index: u64, state: TableState) {
        if let Some(table) = self.tables.get_mut(index as usize) {
            *table = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_touched_tables_hold_cluster_states() {
        // 512-byte clusters: 64 clusters per L2 table; a disk of 1000 tables
        let mut map = AllocationMap::new(9, 1000 * 64 * 512, vec![TableState::Absent; 1000]);
        map.set_state(130, ClusterState::Owned);
        map.set_state(129, ClusterState::Zero);
        map.set_state(64_000, ClusterState::Owned); // beyond the L1 table: ignored
        assert_eq!(map.state(130), ClusterState::Owned);
        assert_eq!(map.state(5), ClusterState::Unallocated);
        assert_eq!(map.chunks.iter().filter(|c| c.is_some()).count(), 1);
        let allocated: Vec<_> = map.allocated().collect();
        assert_eq!(
            allocated,
            vec![(129, ClusterState::Zero), (130, ClusterState::Owned)]
        );
        map.set_table(2, TableState::Owned);
        assert_eq!(map.table(2), TableState::Owned);
        assert_eq!(map.table(5000), TableState::Absent);
    }
}
