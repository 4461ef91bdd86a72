//! The Intel MultiProcessor (MP 1.4) table that tells a guest without ACPI
//! about its CPUs, the IO-APIC and how interrupts are routed.
//!
//! Written by hand because no rust-vmm crate builds one. It sits in the EBDA
//! (0x9fc00), one of the places Linux scans for the `_MP_` floating pointer.
//! Entries: one processor per vCPU (APIC ID = vCPU index), one ISA bus, the
//! IO-APIC, an IO interrupt entry per IO-APIC pin (ISA IRQs 0-15 and the
//! virtio IRQs above them, identity-mapped as KVM routes them), and the local
//! interrupts LINT0 = ExtINT, LINT1 = NMI.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{APIC_DEFAULT_PHYS_BASE, EBDA_START, IOAPIC_PINS, IO_APIC_DEFAULT_PHYS_BASE};
use crate::config::MAX_CPUS;
use crate::memory::GuestMemory;

/// Size of the MP floating pointer structure.
pub const MPF_SIZE: usize = 16;
/// Size of the MP configuration table header.
pub const MPC_HEADER_SIZE: usize = 44;
/// Size of a processor entry.
pub const MPC_CPU_SIZE: usize = 20;
/// Size of every other entry (bus, IO-APIC, IO and local interrupt).
pub const MPC_SMALL_ENTRY_SIZE: usize = 8;
/// Room the table may use: the EBDA up to 640 KiB.
pub const MPTABLE_MAX_SIZE: usize = 0xa0000 - EBDA_START as usize;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INT: u8 = 3;
const ENTRY_LOCAL_INT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
const LAPIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
// Family 6, and the FPU + APIC feature flags: what Linux checks in these fields.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const MP_SPEC_REV: u8 = 4;

/// Error writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// More CPUs than the table has room for.
    #[error("{0} CPUs do not fit in the MP table (max {MAX_CPUS})")]
    TooManyCpus(u8),
    /// Writing to guest memory failed.
    #[error("cannot write the MP table to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// IO-APIC ID: after the CPUs' APIC IDs, so the two never collide.
pub fn ioapic_id(num_cpus: u8) -> u8 {
    num_cpus + 1
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer and configuration table for `num_cpus`
/// processors, laid out to sit at guest address `base`.
pub fn build(num_cpus: u8, base: u32) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 || u64::from(num_cpus) > MAX_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let ioapic = ioapic_id(num_cpus);
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;

    for cpu in 0..num_cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0u8; 8]);
        count += 1;
    }

    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;

    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;

    for pin in 0..IOAPIC_PINS {
        // Flags 0: polarity and trigger conform to the bus (ISA: edge, high),
        // which is what irqfd's pulse injection delivers.
        entries.extend_from_slice(&[ENTRY_IO_INT, INT_TYPE_INT, 0, 0, 0, pin, ioapic, pin]);
        count += 1;
    }

    entries.extend_from_slice(&[ENTRY_LOCAL_INT, INT_TYPE_EXTINT, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INT, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = MPC_HEADER_SIZE + entries.len();
    let mut header = Vec::with_capacity(MPC_HEADER_SIZE);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.extend_from_slice(&[MP_SPEC_REV, 0]); // checksum patched below
    header.extend_from_slice(b"VESSEL  ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    header.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved

    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut mpf = Vec::with_capacity(MPF_SIZE + table.len());
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&(base + MPF_SIZE as u32).to_le_bytes());
    mpf.extend_from_slice(&[1, MP_SPEC_REV, 0, 0, 0, 0, 0, 0]); // length in 16-byte units
    mpf[10] = checksum(&mpf[..MPF_SIZE]);

    mpf.extend_from_slice(&table);
    Ok(mpf)
}

/// Writes the MP table for `num_cpus` vCPUs into the EBDA.
pub fn write(mem: &GuestMemory, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = build(num_cpus, EBDA_START as u32)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    #[test]
    fn signatures_and_checksums() {
        for cpus in [1u8, 2, 4, 32] {
            let t = build(cpus, EBDA_START as u32).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[..MPF_SIZE]), 0, "floating pointer checksum");
            assert_eq!(u32_at(&t, 4), EBDA_START as u32 + 16);
            assert_eq!((t[8], t[9]), (1, 4));
            let table = &t[MPF_SIZE..];
            assert_eq!(&table[0..4], b"PCMP");
            assert_eq!(u16_at(table, 4) as usize, table.len());
            assert_eq!(sum(table), 0, "table checksum");
            assert_eq!(u32_at(table, 36), APIC_DEFAULT_PHYS_BASE);
            assert!(t.len() <= MPTABLE_MAX_SIZE);
        }
    }

    #[test]
    fn entry_counts_for_n_cpus() {
        for cpus in [1u8, 3, 32] {
            let t = build(cpus, EBDA_START as u32).unwrap();
            let table = &t[MPF_SIZE..];
            let n = usize::from(cpus);
            let expected = n + 1 + 1 + usize::from(IOAPIC_PINS) + 2;
            assert_eq!(u16_at(table, 34) as usize, expected);
            assert_eq!(
                table.len(),
                MPC_HEADER_SIZE + n * MPC_CPU_SIZE + (expected - n) * MPC_SMALL_ENTRY_SIZE
            );

            // Walk the entries and count them by type.
            let mut off = MPC_HEADER_SIZE;
            let mut by_type = [0usize; 5];
            let mut apic_ids = Vec::new();
            while off < table.len() {
                let ty = table[off] as usize;
                by_type[ty] += 1;
                if ty == 0 {
                    apic_ids.push(table[off + 1]);
                    let bsp = table[off + 3] & CPU_BOOTSTRAP != 0;
                    assert_eq!(bsp, table[off + 1] == 0);
                    off += MPC_CPU_SIZE;
                } else {
                    off += MPC_SMALL_ENTRY_SIZE;
                }
            }
            assert_eq!(by_type, [n, 1, 1, usize::from(IOAPIC_PINS), 2]);
            assert_eq!(apic_ids, (0..cpus).collect::<Vec<_>>());
        }
    }

    #[test]
    fn io_interrupts_target_the_ioapic() {
        let t = build(2, EBDA_START as u32).unwrap();
        let table = &t[MPF_SIZE..];
        let first_int = MPC_HEADER_SIZE + 2 * MPC_CPU_SIZE + 2 * MPC_SMALL_ENTRY_SIZE;
        let ioapic = &table[first_int - MPC_SMALL_ENTRY_SIZE..first_int];
        assert_eq!((ioapic[0], ioapic[1]), (ENTRY_IOAPIC, ioapic_id(2)));
        assert_eq!(u32_at(ioapic, 4), IO_APIC_DEFAULT_PHYS_BASE);
        for pin in 0..IOAPIC_PINS {
            let e = &table[first_int + usize::from(pin) * 8..][..8];
            assert_eq!(
                e,
                &[ENTRY_IO_INT, INT_TYPE_INT, 0, 0, 0, pin, ioapic_id(2), pin]
            );
        }
    }

    #[test]
    fn rejects_bad_cpu_counts() {
        assert!(matches!(build(0, 0), Err(MptableError::TooManyCpus(0))));
        assert!(matches!(build(33, 0), Err(MptableError::TooManyCpus(33))));
    }

    #[test]
    fn written_at_the_ebda() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write(&mem, 4).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
