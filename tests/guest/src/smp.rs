//! Starting the other CPUs of the MADT: copy the real-mode trampoline (arch/ap.s) to a RAM
//! page below 1 MiB, send each enabled AP INIT/SIPI/SIPI in one I/O batch, then sleep until
//! they have all reported (each wakes the BSP with an IPI) or a timeout passes.

use core::sync::atomic::Ordering;

use crate::apic::Lapic;
use crate::arch;
use crate::io::Io;
use crate::pvh::RamRange;
use crate::ticks;

/// Where the trampoline goes (real-mode CS 0x0800).
const TRAMPOLINE_ADDRESS: u64 = 0x8000;
const TRAMPOLINE_PAGE: u8 = (TRAMPOLINE_ADDRESS >> 12) as u8;
const PAGE_SIZE: u64 = 0x1000;

/// Why no AP could be started.
#[derive(Debug, thiserror::Error)]
pub enum StartApsError {
    /// The trampoline page is not RAM in the memory map.
    #[error("trampoline page {0:#x} is not in a RAM range of the memory map")]
    TrampolineNotRam(u64),
    /// The trampoline does not fit its page.
    #[error("AP trampoline is {0} bytes, more than a page")]
    TrampolineTooBig(usize),
}

/// Sends INIT/SIPI/SIPI to every CPU in `cpus` but `bsp_apic_id` (queued and flushed) and
/// waits up to `timeout_ticks` timer ticks for them to report. Returns how many were started.
pub fn start_aps(
    io: &mut Io,
    lapic: &Lapic,
    cpus: &[u32],
    bsp_apic_id: u32,
    ram: &[RamRange],
    timeout_ticks: u64,
) -> Result<usize, StartApsError> {
    let aps = || cpus.iter().copied().filter(|&id| id != bsp_apic_id);
    let expected = aps().count();
    if expected == 0 {
        return Ok(0);
    }
    install_trampoline(ram)?;
    arch::set_bsp_apic_id(bsp_apic_id);
    for apic_id in aps() {
        lapic.send_init_startup(io, apic_id, TRAMPOLINE_PAGE);
    }
    io.flush();
    wait_for_reports(cpus, bsp_apic_id, timeout_ticks);
    Ok(expected)
}

/// Whether the CPU with this APIC id is running (the BSP always is).
pub fn is_online(apic_id: u32, bsp_apic_id: u32) -> bool {
    apic_id == bsp_apic_id || arch::ap_is_online(apic_id)
}

fn install_trampoline(ram: &[RamRange]) -> Result<(), StartApsError> {
    let code = arch::ap_trampoline();
    if code.len() as u64 > PAGE_SIZE {
        return Err(StartApsError::TrampolineTooBig(code.len()));
    }
    let in_ram = ram.iter().any(|r| {
        r.start <= TRAMPOLINE_ADDRESS
            && TRAMPOLINE_ADDRESS + PAGE_SIZE <= r.start.saturating_add(r.len)
    });
    if !in_ram {
        return Err(StartApsError::TrampolineNotRam(TRAMPOLINE_ADDRESS));
    }
    // SAFETY: a RAM page below 1 MiB that nothing else uses once the boot info is copied.
    let page = unsafe { crate::phys::bytes_mut(TRAMPOLINE_ADDRESS, code.len()) }
        .ok_or(StartApsError::TrampolineNotRam(TRAMPOLINE_ADDRESS))?;
    page.copy_from_slice(code);
    Ok(())
}

/// Sleeps until every CPU has reported (APs wake us with an IPI) or the timeout has passed.
fn wait_for_reports(cpus: &[u32], bsp_apic_id: u32, timeout_ticks: u64) {
    let deadline = ticks::now() + timeout_ticks;
    loop {
        let seen = arch::irq_total_count().load(Ordering::SeqCst);
        let all_online = cpus.iter().all(|&id| is_online(id, bsp_apic_id));
        if all_online || ticks::now() >= deadline {
            return;
        }
        arch::wait_until_changed(arch::irq_total_count(), seen);
    }
}
