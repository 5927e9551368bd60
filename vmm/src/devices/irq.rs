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

/// Why an NMI was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NmiError {
    /// KVM refused the message.
    #[error("KVM_SIGNAL_MSI (NMI) failed: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    /// The local APIC of the boot vCPU did not accept it (disabled by the guest).
    #[error("the boot vCPU's local APIC did not accept the NMI")]
    Blocked,
}

/// Sends a non-maskable interrupt to the vCPU with APIC id 0 through the in-kernel local
/// APIC: an MSI whose delivery mode is NMI (Intel SDM vol. 3, 11.11.2).
pub fn send_nmi(vm: &VmFd) -> Result<(), NmiError> {
    const MSI_ADDRESS_APIC0: u32 = 0xfee0_0000;
    const DELIVERY_MODE_NMI: u32 = 0b100 << 8;
    let message = kvm_bindings::kvm_msi {
        address_lo: MSI_ADDRESS_APIC0,
        data: DELIVERY_MODE_NMI,
        ..Default::default()
    };
    match vm.signal_msi(message)? {
        0 => Err(NmiError::Blocked),
        _ => Ok(()),
    }
}
