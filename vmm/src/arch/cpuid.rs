//! CPUID normalisation: start from what KVM supports and make each vCPU describe itself
//! (APIC id, topology, hypervisor bit) consistently with the MADT.

use kvm_bindings::{CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_TOPOLOGY: u32 = 0x4;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;
const LEAF_V2_TOPOLOGY: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// Rewrites `cpuid` (KVM's supported set) for vCPU `cpu_index` of `cpu_count` single-threaded cores.
pub fn normalize(cpuid: &mut CpuId, cpu_index: u8, cpu_count: u8) {
    let apic_id = u32::from(cpu_index);
    let count = u32::from(cpu_count);
    // Bits of the APIC id needed to number the cores.
    let core_bits = 32 - (count.max(1) - 1).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_TOPOLOGY => {
                // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing the cache - 1.
                entry.eax &= 0x3fff;
                entry.eax |= (count - 1) << 26;
                let cache_level = (entry.eax >> 5) & 0x7;
                if cache_level == 3 {
                    entry.eax |= (count - 1) << 14;
                }
            }
            LEAF_EXTENDED_TOPOLOGY | LEAF_V2_TOPOLOGY => {
                entry.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = 0; // no SMT: shift 0 to the core level
                        entry.ebx = 1;
                        entry.ecx = (TOPOLOGY_LEVEL_SMT << 8) | entry.index;
                    }
                    1 => {
                        entry.eax = core_bits;
                        entry.ebx = count;
                        entry.ecx = (TOPOLOGY_LEVEL_CORE << 8) | entry.index;
                    }
                    _ => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = entry.index;
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn each_vcpu_reports_its_apic_id_and_the_topology() {
        let mut cpuid = CpuId::from_entries(&[entry(1, 0), entry(0xb, 0), entry(0xb, 1)]).unwrap();
        normalize(&mut cpuid, 1, 2);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx >> 24, 1);
        assert_eq!((e[0].ebx >> 16) & 0xff, 2);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!((e[1].ebx, e[1].edx), (1, 1));
        assert_eq!(
            (e[2].eax, e[2].ebx, e[2].ecx >> 8),
            (1, 2, TOPOLOGY_LEVEL_CORE)
        );
    }
}
