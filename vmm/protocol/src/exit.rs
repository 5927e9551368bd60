//! How a `vireo-vmm` ends: its exit status and the exit record, the JSON on its last stderr
//! line (`vireo-vmm: exit {...}`), which says why more precisely than the status can.

use serde::{Deserialize, Serialize};

/// How a VM ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum VmExit {
    /// The guest entered S5 through ACPI.
    GuestPowerOff,
    /// The host asked for a hard power-off (control socket).
    HostPowerOff,
    /// The guest asked for a reset (i8042, reset register, triple fault).
    GuestReset {
        /// What triggered it.
        cause: String,
    },
    /// The host asked for a hard reset (control socket).
    HostReset,
    /// The guest did something the hypervisor cannot continue from.
    Crashed {
        /// What happened, with the vCPU and instruction bytes where known.
        detail: String,
    },
    /// The VMM process was told to stop by a signal.
    Killed {
        /// The signal number.
        signal: i32,
    },
}

/// Exit status: powered off (guest S5 or host power-off).
pub const EXIT_POWERED_OFF: u8 = 0;
/// Exit status: the VMM could not start (bad arguments, files, KVM).
pub const EXIT_START_FAILED: u8 = 1;
/// Exit status: reset (the caller starts the VM again).
pub const EXIT_RESET: u8 = 3;
/// Exit status: crashed.
pub const EXIT_CRASHED: u8 = 4;
/// Exit status: killed by SIGTERM, SIGINT or SIGHUP.
pub const EXIT_KILLED: u8 = 5;

impl VmExit {
    /// The process exit status for this ending.
    pub fn exit_code(&self) -> u8 {
        match self {
            VmExit::GuestPowerOff | VmExit::HostPowerOff => EXIT_POWERED_OFF,
            VmExit::GuestReset { .. } | VmExit::HostReset => EXIT_RESET,
            VmExit::Crashed { .. } => EXIT_CRASHED,
            VmExit::Killed { .. } => EXIT_KILLED,
        }
    }
}

/// What starts the exit record's log line.
pub const EXIT_RECORD_PREFIX: &str = "vireo-vmm: exit ";

/// The exit record: why the VM ended and when the guest had signalled it was up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Why it ended.
    #[serde(flatten)]
    pub exit: VmExit,
    /// Milliseconds from VMM start to the guest's boot marker, if it was seen.
    pub boot_marker_ms: Option<f64>,
}

impl ExitRecord {
    /// The log line that carries this record.
    pub fn to_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!("{EXIT_RECORD_PREFIX}{json}")
    }

    /// The record on `line`, if it is an exit record line.
    pub fn from_line(line: &str) -> Option<ExitRecord> {
        serde_json::from_str(line.strip_prefix(EXIT_RECORD_PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_round_trip_through_their_log_line() {
        let record = ExitRecord {
            exit: VmExit::Killed { signal: 15 },
            boot_marker_ms: Some(12.5),
        };
        let line = record.to_line();
        assert_eq!(
            line,
            r#"vireo-vmm: exit {"reason":"killed","signal":15,"boot_marker_ms":12.5}"#
        );
        assert_eq!(ExitRecord::from_line(&line), Some(record));
        assert_eq!(ExitRecord::from_line("vireo-vmm: cannot open"), None);
        assert_eq!(VmExit::HostReset.exit_code(), EXIT_RESET);
    }
}
