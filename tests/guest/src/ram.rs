//! `ram fill|check|churn`: a large part of guest RAM holding a pattern that can be verified
//! later, for tests and benchmarks of suspend, resume and memory snapshots. Every 8-byte word
//! holds a hash of (seed, generation, word index) — never zero, so no page is a hole. `churn`
//! rewrites the region page by page with the next generation for a number of seconds, checking
//! each page's previous contents before it overwrites them; the position reached is kept in
//! RAM, so after a resume every page must hold the generation that position implies. `churn`
//! also reports the longest gap between two pages, which shows how long a live snapshot
//! paused the guest.

use crate::cell::BootCpuCell;
use crate::dma::{self, DmaRegion};
use crate::io::Io;
use crate::ticks;

const PAGE_BYTES: usize = 4096;
const WORDS_PER_PAGE: usize = PAGE_BYTES / 8;
const MIB: usize = 1 << 20;

/// The filled region and where the churn stands: pages below `position` hold `generation`,
/// the others `generation - 1` (all of them `generation` right after a fill).
struct Pattern {
    region: Option<DmaRegion>,
    pages: usize,
    seed: u64,
    generation: u64,
    position: usize,
}

static PATTERN: BootCpuCell<Pattern> = BootCpuCell::new(Pattern {
    region: None,
    pages: 0,
    seed: 0,
    generation: 0,
    position: 0,
});

/// Runs one `ram ...` command line.
pub fn command(io: &mut Io, argument: &str) {
    let mut words = argument.split_whitespace();
    let number = |word: Option<&str>| word.and_then(|w| w.parse::<u64>().ok());
    let answer = match words.next() {
        Some("fill") => match (number(words.next()), number(words.next())) {
            (Some(mib), Some(seed)) => fill(mib as usize, seed),
            _ => Err(Usage.into()),
        },
        Some("check") => check(),
        Some("churn") => match number(words.next()) {
            Some(seconds) => {
                crate::console::line(io, format_args!("ram churning"));
                io.flush();
                churn(io, seconds)
            }
            None => Err(Usage.into()),
        },
        _ => Err(Usage.into()),
    };
    match answer {
        Ok(text) | Err(text) => crate::console::line(io, format_args!("{text}")),
    }
}

/// The usage line (an error answer).
struct Usage;

impl From<Usage> for Text {
    fn from(_: Usage) -> Text {
        Text::of(format_args!(
            "error: usage: ram fill <MiB> <seed> | ram check | ram churn <seconds>"
        ))
    }
}

/// A short answer line built without an allocator.
struct Text {
    bytes: [u8; 96],
    len: usize,
}

impl Text {
    fn of(args: core::fmt::Arguments) -> Text {
        let mut text = Text {
            bytes: [0; 96],
            len: 0,
        };
        let _ = core::fmt::write(&mut text, args);
        text
    }
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let take = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl core::fmt::Display for Text {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?"))
    }
}

/// The word at `index` of generation `generation` (splitmix64; never zero).
fn word(seed: u64, generation: u64, index: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(generation << 40)
        .wrapping_add(index as u64);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn words_of(region: &mut DmaRegion, page: usize) -> &mut [u64] {
    let bytes = &mut region.bytes_mut()[page * PAGE_BYTES..(page + 1) * PAGE_BYTES];
    // SAFETY: the region is page-aligned, so each page is a whole, aligned array of u64.
    unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), WORDS_PER_PAGE) }
}

fn write_page(region: &mut DmaRegion, seed: u64, generation: u64, page: usize) {
    let first = page * WORDS_PER_PAGE;
    for (i, w) in words_of(region, page).iter_mut().enumerate() {
        *w = word(seed, generation, first + i);
    }
}

/// The address of the first word of `page` that does not hold `generation`, if any.
fn find_bad(region: &mut DmaRegion, seed: u64, generation: u64, page: usize) -> Option<u64> {
    let first = page * WORDS_PER_PAGE;
    let base = region.addr();
    let words = words_of(region, page);
    let bad = (0..WORDS_PER_PAGE).find(|&i| words[i] != word(seed, generation, first + i))?;
    Some(base + ((first + bad) * 8) as u64)
}

fn not_filled() -> Text {
    Text::of(format_args!("error: no ram fill yet"))
}

fn bad(address: u64, generation: u64) -> Text {
    Text::of(format_args!(
        "ram bad at {address:#x}: not generation {generation}"
    ))
}

/// Fills `mib` MiB (the region is taken from device memory once, then reused).
fn fill(mib: usize, seed: u64) -> Result<Text, Text> {
    PATTERN.with(|p| {
        let bytes = mib * MIB;
        if p.region.as_ref().is_none_or(|r| r.len() < bytes) {
            if p.region.is_some() {
                return Err(Text::of(format_args!(
                    "error: ram fill cannot grow past {} MiB",
                    p.pages * PAGE_BYTES / MIB
                )));
            }
            let region = dma::alloc(bytes, 2 * MIB as u64)
                .map_err(|e| Text::of(format_args!("error: {e}")))?;
            p.region = Some(region);
        }
        let region = p.region.as_mut().ok_or_else(not_filled)?;
        p.pages = bytes / PAGE_BYTES;
        (p.seed, p.generation, p.position) = (seed, 0, p.pages);
        for page in 0..p.pages {
            write_page(region, seed, 0, page);
        }
        Ok(Text::of(format_args!("ram filled {mib} MiB seed={seed}")))
    })
}

/// Checks every page against the generation the churn position implies.
fn check() -> Result<Text, Text> {
    PATTERN.with(|p| {
        let region = p.region.as_mut().ok_or_else(not_filled)?;
        for page in 0..p.pages {
            let generation = if page < p.position {
                p.generation
            } else {
                p.generation - 1
            };
            if let Some(address) = find_bad(region, p.seed, generation, page) {
                return Err(bad(address, generation));
            }
        }
        Ok(Text::of(format_args!(
            "ram ok {} MiB generation={}",
            p.pages * PAGE_BYTES / MIB,
            p.generation
        )))
    })
}

/// Rewrites pages with the next generation for `seconds`, checking each one first; reports the
/// longest time between two pages (a pause of the VM shows there), then checks everything.
fn churn(io: &mut Io, seconds: u64) -> Result<Text, Text> {
    let (start_ticks, start_tsc) = (ticks::now(), tsc());
    let deadline = start_ticks + seconds * ticks::HZ;
    let mut longest = 0;
    PATTERN.with(|p| {
        let region = p.region.as_mut().ok_or_else(not_filled)?;
        let mut last = start_tsc;
        while ticks::now() < deadline {
            let now = tsc();
            longest = longest.max(now - last);
            last = now;
            if p.position == p.pages {
                p.generation += 1;
                p.position = 0;
            }
            let (page, previous) = (p.position, p.generation - 1);
            if let Some(address) = find_bad(region, p.seed, previous, page) {
                return Err(bad(address, previous));
            }
            write_page(region, p.seed, p.generation, page);
            p.position += 1;
        }
        Ok(())
    })?;
    // The TSC runs at a constant rate; the ticks (HZ a second) calibrate it.
    let per_tick = (tsc() - start_tsc) / (ticks::now() - start_ticks).max(1);
    let micros = longest * (1_000_000 / ticks::HZ) / per_tick.max(1);
    crate::console::line(io, format_args!("ram longest stall {micros} us"));
    check()
}

fn tsc() -> u64 {
    // SAFETY: rdtsc has no side effects (and is allowed in ring 3).
    unsafe { core::arch::x86_64::_rdtsc() }
}
