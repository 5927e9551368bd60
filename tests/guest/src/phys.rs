//! Reading guest-physical memory from ring 3: the first 4 GiB are identity-mapped and
//! user-accessible (arch/tables.s). Also little-endian field readers over byte slices.

/// End of the identity map.
pub const MAPPED_LIMIT: u64 = 1 << 32;

/// The `len` bytes at physical `addr`, if they lie inside the identity map.
pub fn bytes(addr: u64, len: usize) -> Option<&'static [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > MAPPED_LIMIT {
        return None;
    }
    // SAFETY: the range is identity-mapped; firmware tables are not written while we read.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// A mutable view of the `len` bytes at physical `addr` (for the AP trampoline page).
///
/// # Safety
/// Nothing else may use that memory while the slice lives.
pub unsafe fn bytes_mut(addr: u64, len: usize) -> Option<&'static mut [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > MAPPED_LIMIT {
        return None;
    }
    // SAFETY: identity-mapped; exclusivity is the caller's promise.
    Some(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) })
}

/// Little-endian readers that return `None` past the end of the slice.
pub trait LeBytes {
    /// The byte at `offset`.
    fn u8_at(&self, offset: usize) -> Option<u8>;
    /// The u16 at `offset`.
    fn u16_at(&self, offset: usize) -> Option<u16>;
    /// The u32 at `offset`.
    fn u32_at(&self, offset: usize) -> Option<u32>;
    /// The u64 at `offset`.
    fn u64_at(&self, offset: usize) -> Option<u64>;
}

impl LeBytes for [u8] {
    fn u8_at(&self, offset: usize) -> Option<u8> {
        self.get(offset).copied()
    }
    fn u16_at(&self, offset: usize) -> Option<u16> {
        Some(u16::from_le_bytes(
            self.get(offset..offset + 2)?.try_into().ok()?,
        ))
    }
    fn u32_at(&self, offset: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.get(offset..offset + 4)?.try_into().ok()?,
        ))
    }
    fn u64_at(&self, offset: usize) -> Option<u64> {
        Some(u64::from_le_bytes(
            self.get(offset..offset + 8)?.try_into().ok()?,
        ))
    }
}
