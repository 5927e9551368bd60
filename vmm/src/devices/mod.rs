//! Emulated devices and how the vCPUs reach them (the port I/O bus) and how they interrupt
//! the guest (interrupt lines into KVM's in-kernel IOAPIC).

pub mod bus;
pub mod framebuffer;
pub mod irq;
pub mod legacy;
pub mod virtio;
