//! A write-back cache of metadata clusters (L2 tables, refcount blocks), keyed by host offset.
//! It only stores bytes and dirty flags; the image decides when and in which order dirty
//! entries reach the disk, so that crash-safe ordering stays in one place.

use std::collections::HashMap;

struct CacheEntry {
    data: Box<[u8]>,
    dirty: bool,
    last_used: u64,
}

/// Cached metadata clusters with least-recently-used eviction.
pub struct MetadataCache {
    entries: HashMap<u64, CacheEntry>,
    capacity: usize,
    clock: u64,
}

impl MetadataCache {
    /// A cache holding at most `capacity` clusters (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The cached cluster at `offset`, if present.
    pub fn get(&mut self, offset: u64) -> Option<&[u8]> {
        self.clock += 1;
        let entry = self.entries.get_mut(&offset)?;
        entry.last_used = self.clock;
        Some(&entry.data)
    }

    /// The cached cluster at `offset` for modification; marks it dirty.
    pub fn get_mut(&mut self, offset: u64) -> Option<&mut [u8]> {
        self.clock += 1;
        let entry = self.entries.get_mut(&offset)?;
        entry.last_used = self.clock;
        entry.dirty = true;
        Some(&mut entry.data)
    }

    /// True when inserting a new cluster first needs `evict`.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// The least recently used entry: its offset and whether it is dirty.
    pub fn victim(&self) -> Option<(u64, bool)> {
        self.entries
            .iter()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(&offset, e)| (offset, e.dirty))
    }

    /// Drops the entry at `offset` (the caller has written it back if it was dirty).
    pub fn remove(&mut self, offset: u64) {
        self.entries.remove(&offset);
    }

    /// Adds a cluster; the caller has made room with `victim`/`remove` if the cache was full.
    pub fn insert(&mut self, offset: u64, data: Box<[u8]>, dirty: bool) {
        self.clock += 1;
        let last_used = self.clock;
        self.entries.insert(
            offset,
            CacheEntry {
                data,
                dirty,
                last_used,
            },
        );
    }

    /// Offsets of dirty entries in ascending order.
    pub fn dirty_offsets(&self) -> Vec<u64> {
        let mut dirty: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(&o, _)| o)
            .collect();
        dirty.sort_unstable();
        dirty
    }

    /// The bytes of a cached entry without touching its recency (for write-back).
    pub fn peek(&self, offset: u64) -> Option<&[u8]> {
        self.entries.get(&offset).map(|e| &*e.data)
    }

    /// Marks the entry at `offset` clean after it was written back.
    pub fn mark_clean(&mut self, offset: u64) {
        if let Some(e) = self.entries.get_mut(&offset) {
            e.dirty = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_tracks_dirt() {
        let mut cache = MetadataCache::new(2);
        cache.insert(0, vec![0; 4].into(), false);
        cache.insert(4096, vec![1; 4].into(), false);
        assert!(cache.is_full());
        cache.get(0);
        assert_eq!(cache.victim(), Some((4096, false)));
        cache.get_mut(4096).unwrap()[0] = 9;
        assert_eq!(cache.dirty_offsets(), vec![4096]);
        cache.mark_clean(4096);
        assert!(cache.dirty_offsets().is_empty());
        assert_eq!(cache.peek(4096).unwrap()[0], 9);
    }
}
