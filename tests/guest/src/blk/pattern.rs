//! The seeded data pattern tests write and verify, and the checksum `blk sum` prints. Host-side
//! tests reproduce both (tests/guest/README.md gives the exact definitions).

/// Bytes per sector.
pub const SECTOR: usize = 512;
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Fills `out` (one sector) with the pattern of `sector` under `seed`: a xorshift64 stream
/// (13, 7, 17) started at `seed ^ sector * 0x9e3779b97f4a7c15` (or that constant if the
/// start is 0), 64 successive states stored little-endian.
pub fn fill_sector(seed: u64, sector: u64, out: &mut [u8]) {
    let mut state = seed ^ sector.wrapping_mul(GOLDEN);
    if state == 0 {
        state = GOLDEN;
    }
    for word in out.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
}

/// Whether `data` (one sector) holds the pattern of `sector` under `seed`.
pub fn sector_matches(seed: u64, sector: u64, data: &[u8]) -> bool {
    let mut expected = [0u8; SECTOR];
    fill_sector(seed, sector, &mut expected);
    data == expected
}

/// FNV-1a, 64 bits, fed incrementally.
pub struct Fnv1a(u64);

impl Fnv1a {
    /// The empty hash.
    pub fn new() -> Fnv1a {
        Fnv1a(FNV_OFFSET)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}
