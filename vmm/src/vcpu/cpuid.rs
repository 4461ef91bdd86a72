//! Per-vCPU CPUID: KVM's supported CPUID with this vCPU's APIC ID and a
//! consistent topology (one socket, one thread per core, N cores).
//!
//! Linux derives CPU topology from several leaves; if they disagree it warns
//! or mis-numbers CPUs. The APIC ID is the vCPU index, which is what KVM puts
//! in the in-kernel LAPIC and what the MP table lists.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_AMD_ADDR_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

const TOPO_LEVEL_SMT: u32 = 1;
const TOPO_LEVEL_CORE: u32 = 2;

/// Bits needed to number `count` cores (the APIC ID shift to the package ID).
pub fn core_id_bits(count: u8) -> u32 {
    match count {
        0 | 1 => 0,
        n => 32 - (u32::from(n) - 1).leading_zeros(),
    }
}

/// Patches `cpuid` (from KVM_GET_SUPPORTED_CPUID) for vCPU `index` of `count`.
pub fn patch(cpuid: &mut CpuId, index: u8, count: u8, tsc_deadline: bool) {
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, index, count, tsc_deadline);
    }
}

fn patch_entry(e: &mut kvm_cpuid_entry2, index: u8, count: u8, tsc_deadline: bool) {
    let apic_id = u32::from(index);
    let n = u32::from(count.max(1));
    match e.function {
        LEAF_FEATURES => {
            // EBX[31:24] initial APIC ID, [23:16] logical processors per package.
            e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (n.min(255) << 16);
            if n > 1 {
                e.edx |= LEAF1_EDX_HTT;
            } else {
                e.edx &= !LEAF1_EDX_HTT;
            }
            e.ecx |= LEAF1_ECX_HYPERVISOR;
            if tsc_deadline {
                e.ecx |= LEAF1_ECX_TSC_DEADLINE;
            }
        }
        LEAF_CACHE_PARAMS => {
            let cache_type = e.eax & 0x1f;
            if cache_type != 0 {
                let level = (e.eax >> 5) & 0x7;
                // EAX[31:26] cores per package - 1; [25:14] threads sharing
                // this cache - 1: L1/L2 are per core, L3 is shared by all.
                let sharing = if level >= 3 { n - 1 } else { 0 };
                e.eax =
                    (e.eax & 0x0000_3fff) | (((n - 1) & 0x3f) << 26) | ((sharing & 0xfff) << 14);
            }
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
            e.edx = apic_id;
            match e.index {
                0 => {
                    e.eax = 0;
                    e.ebx = 1;
                    e.ecx = (TOPO_LEVEL_SMT << 8) | e.index;
                }
                1 => {
                    e.eax = core_id_bits(count);
                    e.ebx = n;
                    e.ecx = (TOPO_LEVEL_CORE << 8) | e.index;
                }
                _ => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = e.index & 0xff;
                }
            }
        }
        LEAF_AMD_ADDR_SIZES => {
            // ECX[15:12] APIC ID bits for the core, [7:0] cores - 1.
            e.ecx = (e.ecx & !0xf0ff) | (core_id_bits(count) << 12) | (n - 1);
        }
        LEAF_AMD_EXT_APIC_ID => {
            e.eax = apic_id;
            // EBX[15:8] threads per core - 1 (0), [7:0] core ID.
            e.ebx = (e.ebx & !0xffff) | apic_id;
            // ECX: node 0, one node per package.
            e.ecx &= !0x7ff;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx: 0xdead_0800,
            ..Default::default()
        }
    }

    fn sample() -> CpuId {
        CpuId::from_entries(&[
            entry(LEAF_FEATURES, 0, 0x806f0),
            entry(LEAF_CACHE_PARAMS, 0, 0x121), // L1 data
            entry(LEAF_CACHE_PARAMS, 2, 0x143), // L2 unified
            entry(LEAF_CACHE_PARAMS, 3, 0x163), // L3 unified
            entry(LEAF_CACHE_PARAMS, 4, 0),     // end of list
            entry(LEAF_EXT_TOPOLOGY, 0, 0),
            entry(LEAF_EXT_TOPOLOGY, 1, 0),
            entry(LEAF_EXT_TOPOLOGY, 2, 0),
            entry(LEAF_AMD_ADDR_SIZES, 0, 0x3030),
            entry(LEAF_AMD_EXT_APIC_ID, 0, 0),
        ])
        .unwrap()
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn core_bits() {
        assert_eq!(
            [1, 2, 3, 4, 5, 8, 9, 32].map(core_id_bits),
            [0, 1, 2, 2, 3, 3, 4, 5]
        );
    }

    #[test]
    fn apic_id_and_topology_per_vcpu() {
        for (index, count) in [(0u8, 1u8), (3, 4), (31, 32)] {
            let mut c = sample();
            patch(&mut c, index, count, true);
            let id = u32::from(index);
            let n = u32::from(count);

            let leaf1 = find(&c, LEAF_FEATURES, 0);
            assert_eq!(leaf1.ebx >> 24, id);
            assert_eq!((leaf1.ebx >> 16) & 0xff, n);
            assert_eq!(leaf1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
            assert_ne!(leaf1.ecx & LEAF1_ECX_HYPERVISOR, 0);
            assert_ne!(leaf1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
            assert_eq!(leaf1.edx & LEAF1_EDX_HTT != 0, count > 1);

            for sub in [0, 2, 3] {
                let l4 = find(&c, LEAF_CACHE_PARAMS, sub);
                assert_eq!(l4.eax >> 26, n - 1);
                let sharing = (l4.eax >> 14) & 0xfff;
                assert_eq!(sharing, if sub == 3 { n - 1 } else { 0 });
                assert_eq!(
                    l4.eax & 0x3fff,
                    find(&sample(), LEAF_CACHE_PARAMS, sub).eax & 0x3fff
                );
            }
            assert_eq!(find(&c, LEAF_CACHE_PARAMS, 4).eax, 0);

            let smt = find(&c, LEAF_EXT_TOPOLOGY, 0);
            let core = find(&c, LEAF_EXT_TOPOLOGY, 1);
            let end = find(&c, LEAF_EXT_TOPOLOGY, 2);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, id));
            assert_eq!(
                (core.eax, core.ebx, core.ecx, core.edx),
                (core_id_bits(count), n, 0x201, id)
            );
            assert_eq!((end.ebx, end.ecx >> 8, end.edx), (0, 0, id));
            // Every APIC ID fits below the package shift.
            assert!(id < (1 << core.eax) || count == 1);

            let amd8 = find(&c, LEAF_AMD_ADDR_SIZES, 0);
            assert_eq!(amd8.ecx & 0xff, n - 1);
            assert_eq!((amd8.ecx >> 12) & 0xf, core_id_bits(count));
            assert_eq!(find(&c, LEAF_AMD_EXT_APIC_ID, 0).eax, id);
        }
    }
}
