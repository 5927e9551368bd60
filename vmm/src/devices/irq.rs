//! Interrupt lines: a device raises its GSI through this trait so tests can stand in for KVM.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvm_ioctls::VmFd;

/// A wire from a device to an IOAPIC pin.
pub trait InterruptLine: Send + Sync {
    /// Drives a level-triggered line high or low.
    fn set_level(&self, high: bool);
    /// Signals an edge-triggered interrupt.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// A GSI of KVM's in-kernel irqchip, driven with KVM_IRQ_LINE.
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
    failures: AtomicU64,
}

impl KvmIrqLine {
    /// The line for `gsi` of `vm`.
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Self {
        KvmIrqLine {
            vm,
            gsi,
            failures: AtomicU64::new(0),
        }
    }
}

impl InterruptLine for KvmIrqLine {
    fn set_level(&self, high: bool) {
        if self.vm.set_irq_line(self.gsi, high).is_err() {
            // Counted rather than fatal: a lost interrupt must not take the VM down.
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// vm-superio's serial raises its interrupt through this adapter (edge on the line).
pub struct SerialTrigger(pub Arc<dyn InterruptLine>);

impl vm_superio::Trigger for SerialTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.pulse();
        Ok(())
    }
}

#[cfg(test)]
pub mod testing {
    //! A recording interrupt line for device tests.
    use super::InterruptLine;
    use std::sync::Mutex;

    /// Remembers every level it was driven to.
    #[derive(Default)]
    pub struct RecordingLine(pub Mutex<Vec<bool>>);

    impl RecordingLine {
        /// The last level, low if never driven.
        pub fn level(&self) -> bool {
            self.0.lock().unwrap().last().copied().unwrap_or(false)
        }
    }

    impl InterruptLine for RecordingLine {
        fn set_level(&self, high: bool) {
            self.0.lock().unwrap().push(high);
        }
    }
}
