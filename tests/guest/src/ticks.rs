//! The tick counter: the periodic LAPIC timer (about 100 Hz, see apic.rs) counted by ring 0.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{self, abi::TIMER_VECTOR};

/// Timer interrupts per second we program.
pub const HZ: u64 = 100;

/// The counter ring 0 bumps on every tick.
pub fn counter() -> &'static AtomicU64 {
    arch::irq_count(TIMER_VECTOR)
}

/// Ticks since the timer started.
pub fn now() -> u64 {
    counter().load(Ordering::SeqCst)
}

/// Sleeps (hlt in ring 0) for `count` ticks.
pub fn sleep(count: u64) {
    let deadline = now() + count;
    loop {
        let seen = now();
        if seen >= deadline {
            return;
        }
        arch::wait_until_changed(counter(), seen);
    }
}
