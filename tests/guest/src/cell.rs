//! `BootCpuCell`: global state for ring-3 code. Only the boot CPU runs ring 3 (APs park in
//! ring 0) and interrupt handlers are assembly that never touches Rust state, so a plain cell
//! accessed through short, non-nested closures is sound.

use core::cell::UnsafeCell;

/// A global value used only by the boot CPU's ring-3 code.
pub struct BootCpuCell<T>(UnsafeCell<T>);

// SAFETY: one thread of execution (see the module comment) ever touches the contents.
unsafe impl<T> Sync for BootCpuCell<T> {}

impl<T> BootCpuCell<T> {
    /// A cell holding `value`.
    pub const fn new(value: T) -> Self {
        BootCpuCell(UnsafeCell::new(value))
    }

    /// Runs `f` on the value. `f` must not reach this same cell again (no nesting).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: single-threaded (module comment) and not re-entered (the caller's promise).
        f(unsafe { &mut *self.0.get() })
    }
}
