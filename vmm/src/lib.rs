//! vireo-vmm: one process per running VM (ESXi's "vmx").
//!
//! `builder` is the boot recipe, read top to bottom; `arch` holds the x86_64 boot facts (layout,
//! registers, CPUID, MSRs, ACPI, zero page, PVH start info); `vstate` wraps KVM (memory, VM,
//! vCPUs); `devices` are the emulated devices and `device_manager` wires them to KVM and the
//! buses; `control` is the Unix-socket control protocol vireod speaks, acting on the running
//! machine through `handle`; `io_stall` holds the disks out of host space; `machine` runs a
//! built VM until the guest is gone; `persist` saves it and restores it (`RestoreError`).

pub mod arch;
pub mod builder;
pub mod config;
pub mod control;
pub mod device_manager;
pub mod devices;
pub mod disk_swap;
pub mod fd_lines;
pub mod handed;
pub mod handle;
pub mod io_stall;
pub mod jail;
pub mod machine;
pub mod persist;
pub mod run_state;
pub mod seccomp;
pub mod standby;
pub mod vstate;

pub use builder::{build_vm, BuildError};
pub use config::VmConfig;
pub use machine::Machine;
pub use run_state::VmExit;
