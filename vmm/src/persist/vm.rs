//! KVM's VM-wide state: the two PICs and the IOAPIC, the PIT, and the kvmclock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Saved VM-wide KVM state.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVmState {
    /// PIC master, PIC slave, IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// The PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
}

/// A KVM VM ioctl that failed during save or restore.
#[derive(Debug, thiserror::Error)]
#[error("KVM refused {what}: {source}")]
pub struct KvmStateError {
    /// The ioctl.
    pub what: &'static str,
    /// The error.
    pub source: kvm_ioctls::Error,
}

fn failed(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmStateError {
    move |source| KvmStateError { what, source }
}

/// Reads the VM-wide state (vCPUs must be paused).
pub fn save(vm: &VmFd) -> Result<KvmVmState, KvmStateError> {
    let mut irqchips = Vec::new();
    for chip_id in [
        KVM_IRQCHIP_PIC_MASTER,
        KVM_IRQCHIP_PIC_SLAVE,
        KVM_IRQCHIP_IOAPIC,
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(failed("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    let pit = vm.get_pit2().map_err(failed("KVM_GET_PIT2"))?;
    let mut clock = vm.get_clock().map_err(failed("KVM_GET_CLOCK"))?;
    // Only the clock value is restored; flags describe the source host's clock.
    clock.flags = 0;
    Ok(KvmVmState {
        irqchips,
        pit,
        clock,
    })
}

/// Writes the VM-wide state into a freshly created VM.
pub fn restore(vm: &VmFd, state: &KvmVmState) -> Result<(), KvmStateError> {
    for chip in &state.irqchips {
        vm.set_irqchip(chip).map_err(failed("KVM_SET_IRQCHIP"))?;
    }
    vm.set_pit2(&state.pit).map_err(failed("KVM_SET_PIT2"))?;
    vm.set_clock(&state.clock).map_err(failed("KVM_SET_CLOCK"))
}
