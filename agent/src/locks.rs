//! Locking the agent's mutexes: a panicked request handler must not take the shared state down
//! with it, so poisoning is ignored everywhere.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning (state stays usable after a panicked handler).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
