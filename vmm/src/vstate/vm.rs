//! The KVM VM: created with the TSS pages and an in-kernel irqchip (PIC, IOAPIC, LAPICs), and
//! guest memory registered as slots. The PIT is the VMM's own (`devices::legacy::pit`): KVM's
//! makes the VM's teardown wait for SRCU grace periods.

use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::{
    kvm_irqchip, kvm_userspace_memory_region, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::layout;

/// Errors creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm: {0} (is KVM available and accessible?)")]
    OpenKvm(kvm_ioctls::Error),
    /// A KVM ioctl failed while setting up the VM.
    #[error("KVM refused {what}: {source}")]
    Setup {
        /// The step that failed.
        what: &'static str,
        /// The ioctl error.
        source: kvm_ioctls::Error,
    },
}

fn setup(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Setup { what, source }
}

/// Masks every line of both 8259s, as firmware leaves them: a kernel that wants the PIC
/// programs it; one that uses the IOAPIC never sees stray ExtINT interrupts through LINT0.
fn mask_legacy_pic(fd: &VmFd) -> Result<(), VmError> {
    for chip_id in [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        fd.get_irqchip(&mut chip)
            .map_err(setup("KVM_GET_IRQCHIP"))?;
        // chip_id selects the PIC member of the union.
        chip.chip.pic.imr = 0xff;
        fd.set_irqchip(&chip).map_err(setup("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

/// An open KVM VM with its memory registered.
pub struct Vm {
    /// The /dev/kvm handle (for supported CPUID and MSR lists).
    pub kvm: Kvm,
    /// The VM; shared with interrupt lines.
    pub fd: Arc<VmFd>,
}

impl Vm {
    /// The MSRs KVM can save and restore for this VM's vCPUs.
    pub fn msr_index_list(&self) -> Result<std::sync::Arc<Vec<u32>>, kvm_ioctls::Error> {
        let list = self.kvm.get_msr_index_list()?;
        Ok(std::sync::Arc::new(list.as_slice().to_vec()))
    }

    /// Creates the VM and its irqchip, and registers `memory`.
    pub fn new(memory: &GuestMemoryMmap) -> Result<Vm, VmError> {
        let vm = Vm::create()?;
        vm.register_memory(memory)?;
        Ok(vm)
    }

    /// Creates the VM with its irqchip, without memory yet.
    pub(crate) fn create() -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let fd = kvm.create_vm().map_err(setup("KVM_CREATE_VM"))?;
        fd.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
            .map_err(setup("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip().map_err(setup("KVM_CREATE_IRQCHIP"))?;
        mask_legacy_pic(&fd)?;
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
        })
    }

    /// Registers the regions of `memory` as memory slots 0.. in order.
    pub(crate) fn register_memory(&self, memory: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in memory.iter().enumerate() {
            let mem_region = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the region stays mapped for the VM's lifetime: `Machine` owns both.
            unsafe { self.fd.set_user_memory_region(mem_region) }
                .map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }
}

/// A VM being created on a thread of its own while the caller prepares guest memory and opens
/// devices: creating the irqchip mostly waits for KVM grace periods (milliseconds each
/// on a loaded host), which then overlaps that work.
pub struct VmUnderway(Option<JoinHandle<Result<Vm, VmError>>>);

impl VmUnderway {
    /// Starts creating the VM (on the caller's thread if no thread can start).
    pub fn start() -> VmUnderway {
        VmUnderway(
            std::thread::Builder::new()
                .name("create-vm".into())
                .spawn(Vm::create)
                .ok(),
        )
    }

    /// The created VM with `memory` registered.
    pub fn finish(self, memory: &GuestMemoryMmap) -> Result<Vm, VmError> {
        let vm = match self.0.map(JoinHandle::join) {
            Some(Ok(created)) => created?,
            // No thread could start, or it panicked (the panic was reported): create it here.
            _ => Vm::create()?,
        };
        vm.register_memory(memory)?;
        Ok(vm)
    }
}
