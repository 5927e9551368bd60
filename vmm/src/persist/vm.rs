//! KVM's VM-wide state: the two PICs and the IOAPIC, and the kvmclock. (The PIT is the VMM's
//! own device; state files from before it moved out of KVM carry KVM's PIT, read here.)

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_channel_state, kvm_pit_state2, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use crate::devices::legacy::pit::{ChannelState, PitState};

/// Saved VM-wide KVM state.
#[derive(Debug, Serialize, Deserialize)]
pub struct KvmVmState {
    /// PIC master, PIC slave, IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// KVM's PIT, in state files written while the PIT was in KVM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pit: Option<kvm_pit_state2>,
    /// kvmclock.
    pub clock: kvm_clock_data,
}

/// The state of the VMM's PIT that KVM's saved PIT stands for. KVM reloaded each channel's
/// count when such a state was restored, so the channels start counting afresh; a channel KVM
/// had never seen programmed (mode 0xff) waits for a count.
pub fn pit_from_kvm(kvm: &kvm_pit_state2) -> PitState {
    let channel = |index: usize, saved: &kvm_pit_channel_state| -> ChannelState {
        let programmed = saved.mode <= 5;
        ChannelState {
            mode: if programmed { saved.mode } else { 0 },
            access: if (1..=3).contains(&saved.rw_mode) {
                saved.rw_mode
            } else {
                3
            },
            bcd: saved.bcd != 0,
            reload: saved.count as u16,
            counted: programmed.then_some(0),
            gate: index < 2 || saved.gate != 0,
            null_count: !programmed,
            ..Default::default()
        }
    };
    let channels = [0, 1, 2].map(|index| channel(index, &kvm.channels[index]));
    PitState {
        port_b: u8::from(channels[2].gate),
        channels,
    }
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
    let mut clock = vm.get_clock().map_err(failed("KVM_GET_CLOCK"))?;
    // Only the clock value is restored; flags describe the source host's clock.
    clock.flags = 0;
    Ok(KvmVmState {
        irqchips,
        pit: None,
        clock,
    })
}

/// Writes the VM-wide state into a freshly created VM.
pub fn restore(vm: &VmFd, state: &KvmVmState) -> Result<(), KvmStateError> {
    for chip in &state.irqchips {
        vm.set_irqchip(chip).map_err(failed("KVM_SET_IRQCHIP"))?;
    }
    vm.set_clock(&state.clock).map_err(failed("KVM_SET_CLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::irq::testing::RecordingLine;
    use crate::devices::legacy::pit::Pit;
    use std::sync::Arc;

    #[test]
    fn kvm_s_saved_pit_becomes_a_loadable_state_of_ours() {
        let mut kvm = kvm_pit_state2::default();
        for channel in &mut kvm.channels {
            channel.mode = 0xff;
        }
        // Channel 0 as Linux's periodic tick left it; channel 2 gated on, as calibration left it.
        kvm.channels[0] = kvm_pit_channel_state {
            count: 11932,
            rw_mode: 3,
            mode: 2,
            gate: 1,
            ..Default::default()
        };
        kvm.channels[2].gate = 1;
        let state = pit_from_kvm(&kvm);
        let ticking = &state.channels[0];
        assert_eq!(
            (ticking.mode, ticking.access, ticking.reload),
            (2, 3, 11932)
        );
        assert_eq!(
            ticking.counted,
            Some(0),
            "counting restarts, as KVM's restore did"
        );
        assert_eq!(state.channels[1].counted, None, "never programmed");
        assert_eq!(state.port_b, 1, "channel 2's gate");
        let mut pit = Pit::new(Arc::new(RecordingLine::default()), std::time::Instant::now);
        pit.restore(&state).unwrap();
        assert_eq!(pit.state().channels[0].mode, 2);
    }
}
