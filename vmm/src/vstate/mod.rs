//! KVM state of one VM: guest memory, the VM file descriptor with its in-kernel irqchip and PIT,
//! and the vCPUs with their run loops.

pub mod host_writes;
pub mod memory;
pub mod vcpu;
pub mod vm;
