//! Identity page tables for entering the kernel in long mode (64-bit Linux boot
//! protocol only; PVH enters with paging off).
//!
//! Written by hand (no crate does it): one PML4 entry, one PDPT entry and 512
//! 2 MiB pages map the first GiB, enough for the kernel's early code, which
//! builds its own tables right away.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{PDE_START, PDPTE_START, PML4_START};
use crate::memory::GuestMemory;

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes the page tables; returns the value for CR3.
pub fn write_identity_tables(mem: &GuestMemory) -> Result<u64, GuestMemoryError> {
    mem.write_obj(PDPTE_START | PRESENT_RW, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | PRESENT_RW, GuestAddress(PDPTE_START))?;
    let mut pde = [0u8; 512 * 8];
    for (i, slot) in pde.chunks_exact_mut(8).enumerate() {
        let entry = ((i as u64) << 21) | PRESENT_RW | PAGE_SIZE_2M;
        slot.copy_from_slice(&entry.to_le_bytes());
    }
    mem.write_slice(&pde, GuestAddress(PDE_START))?;
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_first_gib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write_identity_tables(&mem).unwrap(), PML4_START);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, 0xa003);
        let pdpte: u64 = mem.read_obj(GuestAddress(PDPTE_START)).unwrap();
        assert_eq!(pdpte, 0xb003);
        let first: u64 = mem.read_obj(GuestAddress(PDE_START)).unwrap();
        assert_eq!(first, 0x83);
        let last: u64 = mem.read_obj(GuestAddress(PDE_START + 511 * 8)).unwrap();
        assert_eq!(last, (511 << 21) | 0x83);
    }
}
