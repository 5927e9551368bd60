//! The contract between `vireod` and each `vireo-vmm` process, in one place both sides compile
//! against: renaming a command or an option breaks the build, not a running VM.
//!
//! `args` is the command line (`VmmArgs`: vireod builds it with [`VmmArgs::to_argv`], the VMM
//! parses it with clap from the same definition); `control` is the JSON-lines control socket
//! (requests, the reply envelope, each command's reply); `exit` is how a VMM ends (exit codes
//! and the exit record it writes as its last log line).

pub mod args;
pub mod control;
pub mod exit;

pub use args::{
    log_rotation, CacheMode, DiskConfig, DiskFormat, HandedFd, LogRotation, NetConfig, VmmArgs,
};
pub use control::{
    decode_reply, encode_reply, Ack, BadReply, DiskStall, FramebufferStatus, IoStalls, Request,
    RunPhase, SaveReport, Screenshot, StallCause, VmStatus,
};
pub use exit::{ExitRecord, VmExit};
