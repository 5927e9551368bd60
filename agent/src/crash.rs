//! Crash injection for recovery tests: with `VIREO_CRASH_AT=<task>:<step>` in its environment
//! vireod calls `abort()` right after recording that step of that task (the names are those
//! the task journal records, e.g. `snapshot-create:disks-detached`; see docs/recovery.md), or
//! right after sending a VMM request: `vmm:<cmd>` (e.g. `vmm:save`, with the save under way).
//! Always compiled in; inert unless the variable is set.

use std::sync::OnceLock;

/// The environment variable naming the step to die at.
pub const CRASH_AT: &str = "VIREO_CRASH_AT";

/// Aborts the process when `VIREO_CRASH_AT` names `point`.
pub fn point(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT).ok().filter(|v| !v.is_empty()));
    if at.as_deref() == Some(point) {
        tracing::error!("{CRASH_AT}={point}: aborting as asked");
        std::process::abort();
    }
}
