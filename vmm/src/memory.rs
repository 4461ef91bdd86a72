//! Guest RAM: how a memory size maps onto guest physical ranges around the MMIO gap.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::boot::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory of the VM (no dirty-page bitmap: no live migration).
pub type GuestMemory = GuestMemoryMmap<()>;

/// Error creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is below what the fixed layout needs.
    #[error("guest memory of {0} bytes is too small (need at least {HIMEM_START:#x})")]
    TooSmall(u64),
    /// mmap of the guest RAM failed.
    #[error("cannot allocate guest memory: {0}")]
    Allocate(#[from] vm_memory::mmap::FromRangesError),
}

/// Kind of a memory map entry, as the e820 / PVH memmap types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Usable RAM (e820 type 1).
    Ram = 1,
    /// Reserved (e820 type 2).
    Reserved = 2,
}

/// One entry of the memory map given to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: MemoryKind,
}

/// The guest physical RAM ranges for `size` bytes: one range below the MMIO
/// gap, and the rest (if any) starting at 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// Allocates the guest RAM (anonymous mmap: zeroed and lazily backed, so
/// nothing is touched here).
pub fn create_guest_memory(size: u64) -> Result<GuestMemory, MemoryError> {
    if size <= HIMEM_START {
        return Err(MemoryError::TooSmall(size));
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(size)
        .into_iter()
        .map(|(start, len)| (start, len as usize))
        .collect();
    Ok(GuestMemory::from_ranges(&ranges)?)
}

/// The memory map the guest sees: RAM below the EBDA, RAM from 1 MiB to the
/// gap, and RAM above 4 GiB. The hole 0x9fc00-1 MiB holds the MP table and
/// the legacy ISA range; the kernel treats it as reserved.
pub fn memory_map(size: u64) -> Vec<MemoryMapEntry> {
    let mut map = vec![MemoryMapEntry {
        addr: 0,
        size: EBDA_START,
        kind: MemoryKind::Ram,
    }];
    for (start, len) in ram_ranges(size) {
        let (addr, len) = if start.0 == 0 {
            (HIMEM_START, len.saturating_sub(HIMEM_START))
        } else {
            (start.0, len)
        };
        if len > 0 {
            map.push(MemoryMapEntry {
                addr,
                size: len,
                kind: MemoryKind::Ram,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_memory_is_one_low_range() {
        let size = 256 << 20;
        assert_eq!(ram_ranges(size), vec![(GuestAddress(0), size)]);
        assert_eq!(low_ram_end(size), size);
        let map = memory_map(size);
        assert_eq!(map.len(), 2);
        assert_eq!((map[0].addr, map[0].size), (0, EBDA_START));
        assert_eq!(
            (map[1].addr, map[1].size),
            (HIMEM_START, size - HIMEM_START)
        );
        assert!(map.iter().all(|e| e.kind == MemoryKind::Ram));
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let size = 4u64 << 30;
        let ranges = ram_ranges(size);
        assert_eq!(ranges[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(ranges[1], (GuestAddress(1 << 32), size - MMIO_GAP_START));
        assert_eq!(low_ram_end(size), MMIO_GAP_START);
        let map = memory_map(size);
        assert_eq!(map.len(), 3);
        assert_eq!(map[1].addr + map[1].size, MMIO_GAP_START);
        assert_eq!(map[2].addr, 1 << 32);
        let total: u64 = map.iter().map(|e| e.size).sum();
        // Everything but the EBDA/ISA hole is RAM.
        assert_eq!(total, size - (HIMEM_START - EBDA_START));
        // No RAM in the gap.
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
    }

    #[test]
    fn exact_gap_boundary() {
        assert_eq!(ram_ranges(MMIO_GAP_START).len(), 1);
        assert_eq!(ram_ranges(MMIO_GAP_START + 4096).len(), 2);
    }

    #[test]
    fn allocates_regions() {
        let mem = create_guest_memory(64 << 20).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.iter().next().unwrap().len(), 64 << 20);
        assert!(matches!(
            create_guest_memory(4096),
            Err(MemoryError::TooSmall(4096))
        ));
    }
}
