//! What the VMM does differently when /dev/kvm is kvm-pvm (a software backend that interprets
//! guest ring 0; see docs/kvm-pvm.md): detection, the Linux command-line options added for it,
//! and the bzImage's payload decompressed on the host (then entered at its 64-bit entry with
//! the zero page) instead of by the bzImage's own decompressor in interpreted ring 0. Nothing
//! here applies on hardware KVM.

mod lz4;

use std::path::Path;
use std::sync::OnceLock;

use kvm_bindings::CpuId;
use kvm_ioctls::VmFd;
use linux_loader::bootparam::setup_header;
use vm_memory::ByteValued;

pub use lz4::Lz4Error;

/// Options appended to a Linux guest's command line on kvm-pvm (docs/kvm-pvm.md says why each):
/// - `clearcpuid=` with feature bit numbers, which 6.1 kernels parse (they no longer know
///   `noxsave`): XSAVE (154), INVPCID (298), RDPID (534), and the SIMD extensions the kernel's
///   crypto and library code would use — PCLMULQDQ (129), SSSE3 (137), SSE4.1 (147), SSE4.2
///   (148), AES (153), ADX (307), SHA (317), GFNI (520). XSAVE/XRSTOR are refused in ring 0 and
///   not completed by `arch::emulate` (the kernel uses FXSAVE instead); INVPCID flushes a TLB
///   user space cannot reach (the kernel uses CR4.PGE instead); kvm-pvm raises a wrong #UD for
///   ring-0 RDPID instead of an exit we could complete (LSL instead). SIMD code in the kernel
///   starts with `kernel_fpu_begin`'s `ldmxcsr` and is SSE/AVX arithmetic, all refused in ring
///   0 (found booting: the random pool's BLAKE2s switches to SSSE3 at `blake2s_mod_init`);
///   without these bits it takes the generic integer code, which kvm-pvm interprets.
/// - `initcall_blacklist=` three tracing initcalls that each ran for minutes, interpreted,
///   and serve only tracing: ftrace's weak-function check (a kallsyms lookup for each of
///   ~37,700 mcount sites), the trace eval-map update, and the tracefs files of every trace
///   event (`tracer_init_tracefs`); the guest then has no trace-event files in tracefs.
/// - `mitigations=off`: guest ring 0 never runs on the CPU here (it is interpreted), so the
///   speculation mitigations only add interpreted work to every kernel entry and return.
/// - `tsc=reliable`: the guest TSC is the host's; skips the TSC synchronization checks at CPU
///   bring-up and the clocksource watchdog that rereads every clocksource twice a second.
/// - `nowatchdog` and `rcupdate.rcu_cpu_stall_suppress=1`: interpreted ring 0 runs minutes of
///   work without scheduling; the lockup and RCU-stall detectors would only print backtraces
///   (slowly, to the serial console) about it.
/// - `cryptomgr.notests`: skips the boot-time self-tests of every crypto algorithm.
/// - `preempt=full`: two long boot-time work items (ftrace's weak-function check, the trace
///   eval-map update) otherwise hold both vCPUs for minutes while init waits for a CPU.
/// - `skew_tick=1`, `psi=0`: ticks not aligned across vCPUs (less contention on the
///   timekeeping lock), no pressure accounting on every task switch.
/// - `sysctl.kernel.hung_task_timeout_secs=0`: no hung-task reports (same reason as above).
const LINUX_OPTIONS: &str = "clearcpuid=154,298,534,129,137,147,148,153,307,317,520 \
     initcall_blacklist=ftrace_check_for_weak_functions,trace_eval_init,tracer_init_tracefs \
     mitigations=off tsc=reliable nowatchdog rcupdate.rcu_cpu_stall_suppress=1 \
     cryptomgr.notests preempt=full skew_tick=1 psi=0 sysctl.kernel.hung_task_timeout_secs=0";

/// How many times faster than it does the guest is told its TSC runs (see `linux_cmdline`)
/// where the kernel's clock-event arithmetic allows: a 25 Hz tick, timers at most 40 ms late.
const TICK_STRETCH: u32 = 10;

/// Linux registers its TSC-deadline clock event at `tsc_khz * (1000 / 8)` Hz computed in 32
/// bits (`setup_APIC_timer`), so the TSC frequency it is told must stay below this many kHz:
/// beyond it the frequency wraps and the tick runs faster, not slower.
const DEADLINE_KHZ_LIMIT: u64 = u32::MAX as u64 / 125;

/// Linux's timer tick rate in Debian's kernels (CONFIG_HZ), which `lpj=` is counted in.
const LINUX_HZ: u32 = 250;

/// The options appended to a Linux guest's command line on kvm-pvm, for a host TSC of
/// `tsc_khz`: `LINUX_OPTIONS`, and the tick stretch. Linux's clock events (the TSC-deadline
/// LAPIC timer) turn nanoseconds into TSC cycles with the TSC frequency, and at ~1 µs per
/// interpreted instruction its 250 Hz tick alone needs most of a host core. So the guest is
/// told (`tsc_early_khz=`) that the TSC runs `tick_stretch` times faster than it does, and
/// every timer interrupt comes that much later: the tick runs at 25 Hz (faster on a host whose
/// TSC is above 3.44 GHz, see `tick_stretch`). Its clock stays exact (`clocksource=kvm-clock`,
/// which reads the host's time, not the TSC frequency), `nohz=off` keeps the tick running on
/// idle vCPUs so no timer fires more than one stretched tick late, and `lpj=` (TSC cycles per
/// jiffy at the true frequency) keeps `udelay` exact.
pub fn linux_cmdline(tsc_khz: u32) -> String {
    let lpj = u64::from(tsc_khz) * 1000 / u64::from(LINUX_HZ);
    let stretched = u64::from(tsc_khz) * u64::from(tick_stretch(tsc_khz));
    format!("{LINUX_OPTIONS} clocksource=kvm-clock nohz=off tsc_early_khz={stretched} lpj={lpj}")
}

/// How many times faster than it does the guest is told its TSC of `tsc_khz` runs:
/// `TICK_STRETCH`, or less where that would wrap the kernel's 32-bit clock-event frequency
/// (a TSC above 3.44 GHz), at least 1.
fn tick_stretch(tsc_khz: u32) -> u32 {
    let fits = DEADLINE_KHZ_LIMIT / u64::from(tsc_khz.max(1));
    fits.clamp(1, u64::from(TICK_STRETCH)) as u32
}

/// The one KVM ioctl kvm-ioctls has no VM-level call for.
mod ioctl {
    vmm_sys_util::ioctl_io_nr!(KVM_GET_TSC_KHZ, kvm_bindings::KVMIO, 0xa3);
}

/// The guest TSC frequency of `vm` in kHz (KVM_GET_TSC_KHZ on the VM: the host's, here).
pub fn tsc_khz(vm: &VmFd) -> Result<u32, std::io::Error> {
    // SAFETY: KVM_GET_TSC_KHZ takes no argument and only returns a value.
    let khz = unsafe { vmm_sys_util::ioctl::ioctl(vm, ioctl::KVM_GET_TSC_KHZ()) };
    if khz <= 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(khz as u32)
}

/// KVM paravirtual features whose guest side makes VMCALL/VMMCALL hypercalls, which hang the
/// vCPU on kvm-pvm: PV_UNHALT (7, spinlock kicks), PV_SEND_IPI (11), PV_SCHED_YIELD (13).
const HYPERCALL_FEATURES: u32 = (1 << 7) | (1 << 11) | (1 << 13);
const LEAF_KVM_FEATURES: u32 = 0x4000_0001;

/// Offset of `setup_sects` in a bzImage.
const SETUP_SECTS: usize = 0x1f1;
/// Offset of `payload_offset` (then `payload_length`) in a bzImage (boot protocol 2.08+).
const PAYLOAD_OFFSET: usize = 0x248;
/// Largest payload we decompress.
const PAYLOAD_LIMIT: usize = 512 << 20;
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether /dev/kvm is provided by kvm-pvm (its module is loaded); looked up once, when the
/// VMM first asks: `main` asks before entering the jail, whose view has no /sys.
pub fn detected() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| Path::new("/sys/module/kvm_pvm").exists())
}

/// Hides the KVM paravirtual features that would make the guest issue hypercalls.
pub fn adjust_cpuid(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == LEAF_KVM_FEATURES {
            entry.eax &= !HYPERCALL_FEATURES;
        }
    }
}

/// Why a bzImage's payload could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The setup header's payload fields point outside the file.
    #[error("the setup header's payload_offset/payload_length lie outside the file")]
    Bounds,
    /// The payload's compression is not one we decompress.
    #[error("payload compressed with an unsupported format (magic {0:02x?}); LZ4 and gzip are supported")]
    Format(Vec<u8>),
    /// LZ4 decompression failed.
    #[error(transparent)]
    Lz4(#[from] Lz4Error),
    /// gzip decompression failed.
    #[error("gzip payload: {0}")]
    Gzip(std::io::Error),
    /// The size trailer disagrees with what was decompressed, or the result is not an ELF.
    #[error("the decompressed payload is not the kernel ELF its trailer announces")]
    NotElf,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The setup header of a bzImage (at 0x1f1), as a boot loader hands it on in the zero page.
pub fn bzimage_setup_header(image: &[u8]) -> Result<setup_header, PayloadError> {
    let mut header = setup_header::default();
    let bytes = header.as_mut_slice();
    let len = bytes.len();
    bytes.copy_from_slice(
        image
            .get(SETUP_SECTS..SETUP_SECTS + len)
            .ok_or(PayloadError::Bounds)?,
    );
    Ok(header)
}

/// The kernel ELF (vmlinux) inside a bzImage, decompressed on the host.
pub fn bzimage_payload(image: &[u8]) -> Result<Vec<u8>, PayloadError> {
    let setup_sects = match image
        .get(SETUP_SECTS)
        .copied()
        .ok_or(PayloadError::Bounds)?
    {
        0 => 4,
        n => usize::from(n),
    };
    let offset = le_u32(image, PAYLOAD_OFFSET).ok_or(PayloadError::Bounds)? as usize;
    let length = le_u32(image, PAYLOAD_OFFSET + 4).ok_or(PayloadError::Bounds)? as usize;
    let start = (setup_sects + 1) * 512 + offset;
    let payload = image
        .get(start..start.saturating_add(length))
        .filter(|p| p.len() > 8)
        .ok_or(PayloadError::Bounds)?;
    // Linux appends the decompressed size to every compressed payload.
    let (stream, trailer) = payload.split_at(payload.len() - 4);
    let size = le_u32(trailer, 0).ok_or(PayloadError::Bounds)? as usize;
    let elf = if stream.starts_with(&LZ4_LEGACY_MAGIC) {
        lz4::decompress_legacy(stream, size.min(PAYLOAD_LIMIT))?
    } else if stream.starts_with(&GZIP_MAGIC) {
        gunzip(stream, size.min(PAYLOAD_LIMIT))?
    } else {
        return Err(PayloadError::Format(stream[..4].to_vec()));
    };
    if elf.len() != size || !elf.starts_with(b"\x7fELF") {
        return Err(PayloadError::NotElf);
    }
    Ok(elf)
}

fn gunzip(stream: &[u8], limit: usize) -> Result<Vec<u8>, PayloadError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(stream)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(PayloadError::Gzip)?;
    Ok(out)
}

/// Why a gzip-compressed initrd could not be decompressed for the guest.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// The gzip stream is corrupt or truncated.
    #[error("gzip initrd: {0}")]
    Gzip(std::io::Error),
    /// The decompressed archive is larger than we hand a guest.
    #[error("the decompressed initrd exceeds {INITRD_LIMIT} bytes")]
    TooLarge,
}

/// Largest decompressed initrd.
const INITRD_LIMIT: usize = 1 << 30;

/// The initrd as the guest gets it on kvm-pvm: a gzip-compressed one (every member of the
/// stream) decompressed on the host, since inflating it in interpreted ring 0 takes minutes
/// and Linux unpacks an uncompressed cpio archive just as well; anything else unchanged.
pub fn initrd_for_guest(initrd: Vec<u8>) -> Result<Vec<u8>, InitrdError> {
    use std::io::Read;
    if !initrd.starts_with(&GZIP_MAGIC) {
        return Ok(initrd);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(initrd.as_slice())
        .take(INITRD_LIMIT as u64 + 1)
        .read_to_end(&mut out)
        .map_err(InitrdError::Gzip)?;
    if out.len() > INITRD_LIMIT {
        return Err(InitrdError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal bzImage: one setup sector plus the boot sector, then a gzip payload.
    fn bzimage(payload_plain: &[u8]) -> Vec<u8> {
        let mut payload = gzip(payload_plain);
        payload.extend_from_slice(&(payload_plain.len() as u32).to_le_bytes());
        let mut image = vec![0u8; 2 * 512];
        image[SETUP_SECTS] = 1;
        image[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&16u32.to_le_bytes());
        image[PAYLOAD_OFFSET + 4..PAYLOAD_OFFSET + 8]
            .copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0; 16]);
        image.extend_from_slice(&payload);
        image
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_gzip_initrd_is_decompressed_member_by_member_and_others_kept() {
        let mut two_members = gzip(b"070701 first member ");
        two_members.extend(gzip(b"070701 second member"));
        assert_eq!(
            initrd_for_guest(two_members).unwrap(),
            b"070701 first member 070701 second member"
        );
        let plain = b"070701 an uncompressed cpio archive".to_vec();
        assert_eq!(initrd_for_guest(plain.clone()).unwrap(), plain);
        let mut truncated = gzip(&[7u8; 4096]);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            initrd_for_guest(truncated),
            Err(InitrdError::Gzip(_))
        ));
    }

    #[test]
    fn the_tick_stretch_tells_a_faster_tsc_and_keeps_udelay_exact() {
        let line = linux_cmdline(2_596_128);
        assert!(line.starts_with(LINUX_OPTIONS), "{line}");
        assert!(
            line.ends_with(" clocksource=kvm-clock nohz=off tsc_early_khz=25961280 lpj=10384512"),
            "{line}"
        );
    }

    #[test]
    fn the_tick_stretch_never_wraps_the_kernels_clock_event_frequency() {
        // 10 times on this 2.6 GHz machine and on slower hosts; 9 at 3.5 GHz (10 would wrap:
        // 3.5e6 * 10 * 125 > 2^32); never below 1.
        for (khz, stretch) in [
            (2_596_128, 10),
            (1_000_000, 10),
            (3_500_000, 9),
            (40_000_000, 1),
        ] {
            assert_eq!(tick_stretch(khz), stretch, "{khz} kHz");
            if stretch > 1 {
                assert!(u64::from(khz) * u64::from(stretch) * 125 <= u64::from(u32::MAX));
            }
        }
    }

    #[test]
    fn hypercall_features_are_hidden_and_the_rest_kept() {
        let entry = |function, eax| kvm_bindings::kvm_cpuid_entry2 {
            function,
            eax,
            ..Default::default()
        };
        let mut cpuid =
            CpuId::from_entries(&[entry(LEAF_KVM_FEATURES, 0xffff), entry(1, 0xffff)]).unwrap();
        adjust_cpuid(&mut cpuid);
        assert_eq!(cpuid.as_slice()[0].eax, 0xffff & !0x2880);
        assert_eq!(cpuid.as_slice()[1].eax, 0xffff);
    }

    #[test]
    fn the_payload_elf_is_found_through_the_setup_header() {
        let elf = b"\x7fELF and the rest of a kernel".repeat(10);
        assert_eq!(bzimage_payload(&bzimage(&elf)).unwrap(), elf);
    }

    #[test]
    fn bad_headers_and_non_elf_payloads_are_refused() {
        let mut image = bzimage(b"\x7fELF kernel");
        image[PAYLOAD_OFFSET + 4] = 0xff;
        image[PAYLOAD_OFFSET + 5] = 0xff;
        assert!(matches!(bzimage_payload(&image), Err(PayloadError::Bounds)));
        assert!(matches!(
            bzimage_payload(&bzimage(b"not an elf at all")),
            Err(PayloadError::NotElf)
        ));
        let mut xz = bzimage(b"\x7fELF kernel");
        let start = 2 * 512 + 16;
        xz[start..start + 4].copy_from_slice(&[0xfd, b'7', b'z', b'X']);
        assert!(matches!(bzimage_payload(&xz), Err(PayloadError::Format(_))));
    }
}
