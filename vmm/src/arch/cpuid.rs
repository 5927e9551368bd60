//! CPUID normalisation: start from what KVM supports and make each vCPU describe itself
//! (APIC id, topology — cores and sockets —, hypervisor bit) consistently with the MADT.

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_TOPOLOGY: u32 = 0x4;
const LEAF_EXTENDED_TOPOLOGY: u32 = 0xb;
const LEAF_V2_TOPOLOGY: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const TOPOLOGY_LEVEL_SMT: u32 = 1;
const TOPOLOGY_LEVEL_CORE: u32 = 2;

/// How the vCPUs are grouped: `count` single-threaded cores, `cores` to a socket (a power of
/// two dividing `count`, so that APIC id = vCPU index splits into socket and core bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// vCPUs in the VM.
    pub count: u8,
    /// vCPUs per socket.
    pub cores: u8,
}

impl Topology {
    /// `count` vCPUs, `cores_per_socket` to a socket (all in one when None).
    pub fn of(count: u8, cores_per_socket: Option<u8>) -> Topology {
        Topology {
            count,
            cores: cores_per_socket.unwrap_or(count).max(1),
        }
    }
}

/// Adds the SMT and core sub-leaves of leaf 0xB that KVM's supported set lacks (it lists the
/// ones the host CPU reports, which may be none), so that every vCPU describes its topology.
fn ensure_topology_leaf(cpuid: &mut CpuId) {
    let max_leaf = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);
    if max_leaf < LEAF_EXTENDED_TOPOLOGY {
        return;
    }
    for index in 0..2 {
        let present = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == LEAF_EXTENDED_TOPOLOGY && e.index == index);
        if !present {
            let entry = kvm_cpuid_entry2 {
                function: LEAF_EXTENDED_TOPOLOGY,
                index,
                ..Default::default()
            };
            if cpuid.push(entry).is_err() {
                return;
            }
        }
    }
}

/// Rewrites `cpuid` (KVM's supported set) for vCPU `cpu_index` of `topology`.
pub fn normalize(cpuid: &mut CpuId, cpu_index: u8, topology: Topology) {
    ensure_topology_leaf(cpuid);
    let apic_id = u32::from(cpu_index);
    let cores = u32::from(topology.cores);
    // Bits of the APIC id that number the cores of a socket (the socket's number is above).
    let core_bits = 32 - (cores.max(1) - 1).leading_zeros();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            LEAF_FEATURES => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (cores << 16);
                entry.ecx |= ECX_HYPERVISOR;
                if cores > 1 {
                    entry.edx |= EDX_HTT;
                } else {
                    entry.edx &= !EDX_HTT;
                }
            }
            LEAF_CACHE_TOPOLOGY => {
                // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing the cache - 1.
                entry.eax &= 0x3fff;
                entry.eax |= (cores - 1) << 26;
                let cache_level = (entry.eax >> 5) & 0x7;
                if cache_level == 3 {
                    entry.eax |= (cores - 1) << 14;
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
                        entry.ebx = cores;
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
        normalize(&mut cpuid, 1, Topology::of(2, None));
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

    #[test]
    fn missing_topology_sub_leaves_are_added() {
        let mut max = entry(0, 0);
        max.eax = 0xd;
        let mut cpuid = CpuId::from_entries(&[max, entry(1, 0)]).unwrap();
        normalize(&mut cpuid, 0, Topology::of(2, Some(1)));
        let level = |i| {
            *cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == 0xb && e.index == i)
                .unwrap()
        };
        assert_eq!((level(0).ebx, level(1).ebx, level(1).ecx >> 8), (1, 1, 2));
    }

    #[test]
    fn sockets_take_the_apic_id_bits_above_their_cores() {
        let mut cpuid = CpuId::from_entries(&[entry(1, 0), entry(4, 0), entry(0xb, 1)]).unwrap();
        normalize(&mut cpuid, 5, Topology::of(8, Some(4)));
        let e = cpuid.as_slice();
        assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical processors per package");
        assert_eq!(e[1].eax >> 26, 3, "cores per package - 1");
        assert_eq!((e[2].eax, e[2].ebx, e[2].edx), (2, 4, 5));
        assert_eq!(e[2].edx >> e[2].eax, 1, "vCPU 5 is in socket 1");
    }
}
