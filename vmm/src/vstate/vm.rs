//! The KVM VM: created with the TSS pages and an in-kernel irqchip (PIC, IOAPIC, LAPICs), and
//! guest memory registered as slots. The PIT is the VMM's own (`devices::legacy::pit`): KVM's
//! makes the VM's teardown wait for SRCU grace periods.

use std::sync::mpsc::{channel, Receiver, Sender};
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
    /// The thread registering the memory slots panicked (the panic was reported).
    #[error("the thread registering the memory slots ended abnormally")]
    SlotThread,
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

    /// Creates the VM and its irqchip and registers `memory`.
    pub fn new(memory: &GuestMemoryMmap) -> Result<Vm, VmError> {
        let vm = Vm::create()?;
        register_memory(&vm.fd, memory)?;
        Ok(vm)
    }

    /// Creates the VM with its TSS pages and irqchip (the legacy PICs masked), without memory.
    fn create() -> Result<Vm, VmError> {
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
}

/// Registers the regions of `memory` as memory slots 0.. in order.
fn register_memory(fd: &VmFd, memory: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in memory.iter().enumerate() {
        let mem_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region stays mapped for the VM's lifetime: `Machine` owns both.
        unsafe { fd.set_user_memory_region(mem_region) }
            .map_err(setup("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// A VM being created on a thread of its own while the caller prepares guest memory and opens
/// devices: KVM_CREATE_VM and the irqchip at once, then the memory slots when
/// [`VmUnderway::finish`] hands over the memory. The first slot waits for the SRCU grace period
/// that the irqchip's devices started (KVM frees the replaced I/O bus after it): a jiffy or two,
/// 4–8 ms on these hosts (docs/kvm-pvm.md). The caller sets up the vCPUs meanwhile and waits
/// for the slots ([`SlotsUnderway::wait`]) only before they run. Waiting for that grace period
/// is not optional: had it not passed by then, the VM's teardown would wait for it.
pub struct VmUnderway(Option<Underway>);

struct Underway {
    made: Receiver<Result<Vm, VmError>>,
    memory: Sender<GuestMemoryMmap>,
    slots: JoinHandle<Result<(), VmError>>,
}

impl VmUnderway {
    /// Starts creating the VM (on the caller's thread, at `finish`, if no thread can start).
    pub fn start() -> VmUnderway {
        let (made_sender, made) = channel();
        let (memory, memory_receiver) = channel::<GuestMemoryMmap>();
        let slots = std::thread::Builder::new()
            .name("create-vm".into())
            .spawn(move || {
                let vm = Vm::create();
                let fd = vm.as_ref().map(|vm| vm.fd.clone()).ok();
                let _ = made_sender.send(vm);
                match (fd, memory_receiver.recv()) {
                    (Some(fd), Ok(memory)) => register_memory(&fd, &memory),
                    // Nothing to register: the VM failed (the caller has the error) or the
                    // caller gave up.
                    _ => Ok(()),
                }
            });
        VmUnderway(slots.ok().map(|slots| Underway {
            made,
            memory,
            slots,
        }))
    }

    /// The created VM, and the registration of `memory` as its slots under way.
    pub fn finish(self, memory: &GuestMemoryMmap) -> Result<(Vm, SlotsUnderway), VmError> {
        if let Some(underway) = self.0 {
            if let Ok(made) = underway.made.recv() {
                let vm = made?;
                if underway.memory.send(memory.clone()).is_ok() {
                    return Ok((vm, SlotsUnderway(Some(underway.slots))));
                }
            }
        }
        // No thread could start, or it ended early (a panic, reported): make it here.
        Ok((Vm::new(memory)?, SlotsUnderway::registered()))
    }
}

/// Memory slots being registered by [`VmUnderway`]'s thread.
pub struct SlotsUnderway(Option<JoinHandle<Result<(), VmError>>>);

impl SlotsUnderway {
    /// Slots registered already (a VM made ahead, or on the caller's thread).
    pub fn registered() -> SlotsUnderway {
        SlotsUnderway(None)
    }

    /// Waits until the slots are registered.
    pub fn wait(self) -> Result<(), VmError> {
        match self.0.map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(registered)) => registered,
            Some(Err(_)) => Err(VmError::SlotThread),
        }
    }
}
