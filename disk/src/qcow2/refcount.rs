//! Refcounts: the refcount table and its blocks, cluster allocation and freeing.
//! Reads any refcount width (1..64 bits); grows the table when the image outgrows it.
//! Only writes refcount metadata; the image decides when (refcounts before L2 before L1).

use super::cache::MetadataCache;
use super::header::{Header, REFCOUNT_TABLE_FIELD};
use super::io::ImageFile;
use crate::block::BlockError;

/// Mask of the offset bits in a refcount table entry.
const REFTABLE_OFFSET_MASK: u64 = !0x1ff;

/// The image's refcounts with a write-back cache of refcount blocks.
pub struct Refcounts {
    table_offset: u64,
    table_clusters: u64,
    table: Vec<u64>,
    table_dirty: bool,
    blocks: MetadataCache,
    order: u32,
    cluster_bits: u32,
    free_hint: u64,
}

/// Reads entry `index` of a refcount block whose entries are `1 << order` bits wide.
pub fn block_entry(block: &[u8], index: u64, order: u32) -> u64 {
    let i = index as usize;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let bit = i * bits;
            ((block[bit / 8] >> (bit % 8)) as u64) & ((1 << bits) - 1)
        }
        3 => block[i] as u64,
        4 => u16::from_be_bytes([block[2 * i], block[2 * i + 1]]) as u64,
        5 => u32::from_be_bytes(block[4 * i..4 * i + 4].try_into().unwrap()) as u64,
        _ => u64::from_be_bytes(block[8 * i..8 * i + 8].try_into().unwrap()),
    }
}

/// Writes entry `index` of a refcount block (the value must fit the width).
pub(crate) fn set_entry(block: &mut [u8], index: u64, order: u32, value: u64) {
    let i = index as usize;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let bit = i * bits;
            let mask = (((1u16 << bits) - 1) as u8) << (bit % 8);
            block[bit / 8] = (block[bit / 8] & !mask) | (((value as u8) << (bit % 8)) & mask);
        }
        3 => block[i] = value as u8,
        4 => block[2 * i..2 * i + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        5 => block[4 * i..4 * i + 4].copy_from_slice(&(value as u32).to_be_bytes()),
        _ => block[8 * i..8 * i + 8].copy_from_slice(&value.to_be_bytes()),
    }
}

impl Refcounts {
    /// Loads the refcount table described by `header`, caching up to `cache_clusters` blocks.
    pub fn load(
        file: &ImageFile,
        header: &Header,
        cache_clusters: usize,
    ) -> Result<Self, BlockError> {
        let cs = header.cluster_size();
        let table_bytes = header.refcount_table_clusters as u64 * cs;
        let mut raw = vec![0u8; table_bytes as usize];
        file.read_exact(&mut raw, header.refcount_table_offset, "refcount table")?;
        let table: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()) & REFTABLE_OFFSET_MASK)
            .collect();
        for (i, &offset) in table.iter().enumerate() {
            if offset % cs != 0 {
                return Err(file.corrupt(format!(
                    "refcount block {i} at unaligned offset {offset:#x}"
                )));
            }
        }
        Ok(Self {
            table_offset: header.refcount_table_offset,
            table_clusters: header.refcount_table_clusters as u64,
            table,
            table_dirty: false,
            blocks: MetadataCache::new(cache_clusters),
            order: header.refcount_order,
            cluster_bits: header.cluster_bits,
            free_hint: 1,
        })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn entries_per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.order
    }

    fn max_refcount(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1 << (1u64 << self.order)) - 1
        }
    }

    /// Where the refcount table lives now: (offset, clusters).
    pub fn table_location(&self) -> (u64, u32) {
        (self.table_offset, self.table_clusters as u32)
    }

    /// The refcount table's block offsets (0 = no block).
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// True when some refcount metadata has not been written back.
    pub fn is_dirty(&self) -> bool {
        self.table_dirty || !self.blocks.dirty_offsets().is_empty()
    }

    /// Makes sure the block at `block_offset` is cached, writing back an evicted dirty block.
    fn load_block(&mut self, file: &ImageFile, block_offset: u64) -> Result<(), BlockError> {
        if self.blocks.peek(block_offset).is_some() {
            return Ok(());
        }
        self.make_room(file)?;
        let mut data = vec![0u8; self.cluster_size() as usize].into_boxed_slice();
        file.read_exact(&mut data, block_offset, "refcount block")?;
        self.blocks.insert(block_offset, data, false);
        Ok(())
    }

    fn make_room(&mut self, file: &ImageFile) -> Result<(), BlockError> {
        if !self.blocks.is_full() {
            return Ok(());
        }
        if let Some((victim, dirty)) = self.blocks.victim() {
            if dirty {
                file.write_all(self.blocks.peek(victim).unwrap(), victim)?;
            }
            self.blocks.remove(victim);
        }
        Ok(())
    }

    /// The refcount of host cluster `cluster` (0 when no block covers it).
    pub fn get(&mut self, file: &ImageFile, cluster: u64) -> Result<u64, BlockError> {
        let epb = self.entries_per_block();
        let block_offset = match self.table.get((cluster / epb) as usize) {
            Some(&o) if o != 0 => o,
            _ => return Ok(0),
        };
        self.load_block(file, block_offset)?;
        let block = self.blocks.get(block_offset).unwrap();
        Ok(block_entry(block, cluster % epb, self.order))
    }

    /// Sets the refcount of a cluster whose block exists.
    fn set(&mut self, file: &ImageFile, cluster: u64, value: u64) -> Result<(), BlockError> {
        if value > self.max_refcount() {
            return Err(file.corrupt(format!("refcount overflow on cluster {cluster}")));
        }
        let epb = self.entries_per_block();
        let block_offset = self.table[(cluster / epb) as usize];
        self.load_block(file, block_offset)?;
        let order = self.order;
        let block = self.blocks.get_mut(block_offset).unwrap();
        set_entry(block, cluster % epb, order, value);
        Ok(())
    }

    /// Allocates `count` contiguous free clusters, sets their refcounts to 1 and returns the
    /// host offset of the first.
    pub fn allocate(&mut self, file: &ImageFile, count: u64) -> Result<u64, BlockError> {
        loop {
            let start = self.find_free_run(file, count)?;
            let epb = self.entries_per_block();
            let mut created = false;
            for block in start / epb..=(start + count - 1) / epb {
                if self.table.get(block as usize).is_none_or(|&o| o == 0) {
                    self.create_block(file, block)?;
                    created = true;
                }
            }
            if created && self.find_free_run_at(file, start, count)?.is_some() {
                continue;
            }
            for cluster in start..start + count {
                self.set(file, cluster, 1)?;
            }
            self.free_hint = start + count;
            return Ok(start << self.cluster_bits);
        }
    }

    /// Scans from the free hint for `count` clusters with refcount 0.
    fn find_free_run(&mut self, file: &ImageFile, count: u64) -> Result<u64, BlockError> {
        let mut start = self.free_hint.max(1);
        while let Some(busy) = self.find_free_run_at(file, start, count)? {
            start = busy + 1;
        }
        Ok(start)
    }

    /// The last busy cluster in `[start, start + count)`, or `None` if all are free.
    fn find_free_run_at(
        &mut self,
        file: &ImageFile,
        start: u64,
        count: u64,
    ) -> Result<Option<u64>, BlockError> {
        for cluster in (start..start + count).rev() {
            if self.get(file, cluster)? != 0 {
                return Ok(Some(cluster));
            }
        }
        Ok(None)
    }

    /// Creates refcount block `block`, placed inside the range it describes so that it
    /// counts itself; grows the table first if it is too short.
    fn create_block(&mut self, file: &ImageFile, block: u64) -> Result<(), BlockError> {
        if block as usize >= self.table.len() {
            self.grow_table(file, block + 1)?;
            if self.table[block as usize] != 0 {
                return Ok(());
            }
        }
        let epb = self.entries_per_block();
        let cluster = (block * epb).max(1);
        let offset = cluster << self.cluster_bits;
        let mut data = vec![0u8; self.cluster_size() as usize].into_boxed_slice();
        set_entry(&mut data, cluster % epb, self.order, 1);
        self.make_room(file)?;
        self.blocks.insert(offset, data, true);
        self.table[block as usize] = offset;
        self.table_dirty = true;
        Ok(())
    }

    /// Moves the refcount table to a bigger place at the end of the covered range, with new
    /// blocks covering the table itself; durable (including the header) when it returns.
    fn grow_table(&mut self, file: &ImageFile, min_entries: u64) -> Result<(), BlockError> {
        let cs = self.cluster_size();
        let epb = self.entries_per_block();
        let entries_per_cluster = cs / 8;
        let end = self.table.len() as u64 * epb;
        let mut table_clusters =
            (self.table_clusters * 2).max(min_entries.div_ceil(entries_per_cluster));
        let mut new_blocks = 1;
        loop {
            let last = end + table_clusters + new_blocks - 1;
            let blocks = last / epb - end / epb + 1;
            let clusters = table_clusters.max((last / epb + 1).div_ceil(entries_per_cluster));
            if blocks == new_blocks && clusters == table_clusters {
                break;
            }
            new_blocks = blocks;
            table_clusters = clusters;
        }
        if table_clusters * cs > super::header::MAX_REFCOUNT_TABLE_BYTES {
            return Err(file.corrupt("refcount table would exceed its maximum size"));
        }
        let first_block = end / epb;
        let mut table = self.table.clone();
        table.resize((table_clusters * entries_per_cluster) as usize, 0);
        let used_end = end + table_clusters + new_blocks;
        for i in 0..new_blocks {
            let block = first_block + i;
            let offset = (end + table_clusters + i) << self.cluster_bits;
            let mut data = vec![0u8; cs as usize];
            let covered = block * epb..(block + 1) * epb;
            for cluster in covered.start.max(end)..covered.end.min(used_end) {
                set_entry(&mut data, cluster % epb, self.order, 1);
            }
            file.write_all(&data, offset)?;
            table[block as usize] = offset;
        }
        self.write_back_blocks(file)?;
        let new_offset = end << self.cluster_bits;
        file.write_all(&table_bytes(&table), new_offset)?;
        file.sync()?;
        let mut field = new_offset.to_be_bytes().to_vec();
        field.extend_from_slice(&(table_clusters as u32).to_be_bytes());
        file.write_all(&field, REFCOUNT_TABLE_FIELD)?;
        file.sync()?;
        let (old_offset, old_clusters) = (self.table_offset, self.table_clusters);
        self.table = table;
        self.table_offset = new_offset;
        self.table_clusters = table_clusters;
        self.table_dirty = false;
        for cluster in 0..old_clusters {
            self.decrement(file, (old_offset >> self.cluster_bits) + cluster)?;
        }
        Ok(())
    }

    /// Drops one reference to host cluster `cluster`; at zero it becomes free.
    pub fn decrement(&mut self, file: &ImageFile, cluster: u64) -> Result<(), BlockError> {
        let current = self.get(file, cluster)?;
        if current == 0 {
            return Err(file.corrupt(format!("freeing cluster {cluster} with refcount 0")));
        }
        self.set(file, cluster, current - 1)?;
        if current == 1 {
            self.free_hint = self.free_hint.min(cluster);
        }
        Ok(())
    }

    fn write_back_blocks(&mut self, file: &ImageFile) -> Result<bool, BlockError> {
        let dirty = self.blocks.dirty_offsets();
        for &offset in &dirty {
            file.write_all(self.blocks.peek(offset).unwrap(), offset)?;
            self.blocks.mark_clean(offset);
        }
        Ok(!dirty.is_empty())
    }

    /// Writes dirty blocks, then (after a sync) the table if new blocks were added. The
    /// caller syncs afterwards before writing anything that depends on these refcounts.
    pub fn write_back(&mut self, file: &ImageFile) -> Result<bool, BlockError> {
        let wrote = self.write_back_blocks(file)?;
        if self.table_dirty {
            file.sync()?;
            file.write_all(&table_bytes(&self.table), self.table_offset)?;
            self.table_dirty = false;
            return Ok(true);
        }
        Ok(wrote)
    }
}

fn table_bytes(table: &[u64]) -> Vec<u8> {
    table.iter().flat_map(|e| e.to_be_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_width_round_trip() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let entries = (512 * 8) >> order;
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            for i in 0..entries {
                set_entry(&mut block, i, order, (i * 7) & max);
            }
            for i in 0..entries {
                assert_eq!(
                    block_entry(&block, i, order),
                    (i * 7) & max,
                    "order {order}"
                );
            }
        }
    }

    #[test]
    fn sub_byte_entries_are_packed_lowest_bit_first() {
        let mut block = vec![0u8; 1];
        set_entry(&mut block, 0, 0, 1);
        assert_eq!(block[0], 1);
        set_entry(&mut block, 3, 1, 2);
        assert_eq!(block[0], 0b1000_0001);
    }
}
