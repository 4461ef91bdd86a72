//! Guest RAM: how a memory size maps onto guest physical ranges around the
//! MMIO gap, and the shareable memfd behind it, on huge pages where the
//! host allows (see `backing`).

pub mod backing;
pub mod hugepages;
mod memfd;

use std::sync::Arc;

use vm_memory::mmap::MmapRegionError;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::boot::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};
pub use backing::{Backing, ShmemThp};

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
    /// The memfd behind guest RAM could not be created or sized.
    #[error("cannot create the guest memory file (memfd): {0}")]
    Memfd(#[source] std::io::Error),
    /// The memfd could not be sealed against resizing.
    #[error("cannot seal the guest memory file (memfd): {0}")]
    Seal(#[source] std::io::Error),
    /// Mapping one range of the memfd failed.
    #[error("cannot map guest memory at {addr:#x} ({size} bytes): {source}")]
    Map {
        /// Guest physical start of the range.
        addr: u64,
        /// Its length.
        size: u64,
        /// Why.
        source: MmapRegionError,
    },
    /// The hugepage pool cannot hold the guest RAM.
    #[error(transparent)]
    Hugepages(#[from] hugepages::HugepageError),
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

/// Allocates the guest RAM on the pages the host allows (hugetlb with
/// `hugepages`, else transparent huge pages if the host's shmem THP mode
/// permits, else 4 KiB pages) and logs which, once: a warning for 4 KiB
/// pages, which slow every guest page's first touch. Returns the memory
/// and the backing in use.
pub fn guest_memory(size: u64, hugepages: bool) -> Result<(GuestMemory, Backing), MemoryError> {
    let wanted = Backing::choose(hugepages, ShmemThp::read());
    let (mem, used) = create_guest_memory_on(size, &wanted)?;
    match &used {
        Backing::SmallPages(_) => tracing::warn!("guest RAM on {used}"),
        _ => tracing::info!("guest RAM on {used}"),
    }
    Ok((mem, used))
}

/// [`create_guest_memory_on`] with the backing chosen for this host, without logging.
pub fn create_guest_memory(size: u64, hugepages: bool) -> Result<GuestMemory, MemoryError> {
    let wanted = Backing::choose(hugepages, ShmemThp::read());
    create_guest_memory_on(size, &wanted).map(|(mem, _)| mem)
}

/// Allocates the guest RAM: one memfd (sealed against resizing), each RAM
/// range a MAP_SHARED mapping of it at the file offset equal to the range's
/// place in the file, so the regions carry a `FileOffset` a vhost-user
/// backend can map too. Zeroed and lazily backed: nothing is touched here.
/// Returns the backing actually used (transparent huge pages fall back to
/// 4 KiB pages, with the reason, if the kernel refuses the advice).
///
/// On [`Backing::Hugetlb`] the memfd is on 2 MiB hugetlb pages; the pool is
/// checked first for a clear error, and the mappings are made without
/// MAP_NORESERVE so the kernel reserves every page now (failing here, not
/// with a SIGBUS when the guest first touches a page the pool lacks).
pub fn create_guest_memory_on(
    size: u64,
    backing: &Backing,
) -> Result<(GuestMemory, Backing), MemoryError> {
    if size <= HIMEM_START {
        return Err(MemoryError::TooSmall(size));
    }
    let hugepages = *backing == Backing::Hugetlb;
    if hugepages {
        hugepages::check(size, hugepages::Pool::read())?;
    }
    let mut used = backing.clone();
    let file = Arc::new(memfd::create(size, hugepages)?);
    let flags = if hugepages {
        libc::MAP_SHARED
    } else {
        libc::MAP_SHARED | libc::MAP_NORESERVE
    };
    let mut regions = Vec::new();
    let mut file_start = 0u64;
    for (addr, len) in ram_ranges(size) {
        let map_err = |source| MemoryError::Map {
            addr: addr.0,
            size: len,
            source,
        };
        let region = MmapRegion::build(
            Some(FileOffset::from_arc(file.clone(), file_start)),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
        )
        .map_err(map_err)?;
        if let Backing::TransparentHuge(_) = used {
            if let Err(e) = advise_huge(region.as_ptr(), region.size()) {
                used = Backing::SmallPages(format!("madvise(MADV_HUGEPAGE) failed: {e}"));
            }
        }
        let region = GuestRegionMmap::new(region, addr)
            .ok_or(vm_memory::mmap::FromRangesError::InvalidGuestRegion)?;
        regions.push(region);
        file_start += len;
    }
    let mem = GuestMemory::from_regions(regions).map_err(vm_memory::mmap::FromRangesError::from)?;
    Ok((mem, used))
}

/// Asks for transparent huge pages on a shared mapping of the memfd. The
/// kernel places shmem mappings at 2 MiB-aligned addresses when its shmem
/// THP mode allows huge pages, so each 2 MiB of guest RAM can be one page.
fn advise_huge(addr: *mut u8, len: usize) -> std::io::Result<()> {
    // SAFETY: madvise only changes how the kernel backs the mapping, which
    // we own for `len` bytes from `addr`; no memory is read or written.
    let rc = unsafe { libc::madvise(addr.cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
        let mem = create_guest_memory(64 << 20, false).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.iter().next().unwrap().len(), 64 << 20);
        assert!(matches!(
            create_guest_memory(4096, false),
            Err(MemoryError::TooSmall(4096))
        ));
    }

    /// The VmFlags of the mapping that starts at `addr` in /proc/self/smaps.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header_start = |line: &str| {
            let range = line.split_whitespace().next()?;
            usize::from_str_radix(range.split_once('-')?.0, 16).ok()
        };
        let mut ours = false;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if ours {
                    return flags.trim().to_string();
                }
            } else if let Some(start) = header_start(line) {
                ours = start == addr;
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    #[test]
    fn transparent_huge_backing_advises_the_mapping_and_stays_shared() {
        let thp = Backing::TransparentHuge(ShmemThp::Advise);
        let (mem, used) = create_guest_memory_on(8 << 20, &thp).unwrap();
        assert_eq!(used, thp);
        let region = mem.iter().next().unwrap();
        assert!(region.file_offset().is_some(), "still a shareable memfd");
        let flags = vm_flags(region.as_ptr() as usize);
        // "hg": MADV_HUGEPAGE; "sh": shared.
        assert!(flags.split(' ').any(|f| f == "hg"), "{flags}");
        assert!(flags.split(' ').any(|f| f == "sh"), "{flags}");

        let small = Backing::SmallPages("test".into());
        let (mem, used) = create_guest_memory_on(8 << 20, &small).unwrap();
        assert_eq!(used, small);
        let flags = vm_flags(mem.iter().next().unwrap().as_ptr() as usize);
        assert!(!flags.split(' ').any(|f| f == "hg"), "{flags}");
    }

    #[test]
    fn regions_share_one_memfd_at_their_offsets() {
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;
        // Above the gap: two regions, without touching 4 GiB of RAM.
        let size = MMIO_GAP_START + (2 << 20);
        let mem = create_guest_memory(size, false).unwrap();
        let regions: Vec<_> = mem.iter().collect();
        assert_eq!(regions.len(), 2);
        let (low, high) = (
            regions[0].file_offset().unwrap(),
            regions[1].file_offset().unwrap(),
        );
        assert_eq!((low.start(), high.start()), (0, MMIO_GAP_START));
        assert_eq!(low.file().metadata().unwrap().len(), size);
        // MAP_SHARED: a write through the mapping is in the file.
        mem.write_obj(0xabcd_u32, GuestAddress(MMIO_GAP_END + 8))
            .unwrap();
        let mut buf = [0u8; 4];
        high.file()
            .read_exact_at(&mut buf, MMIO_GAP_START + 8)
            .unwrap();
        assert_eq!(u32::from_le_bytes(buf), 0xabcd);
    }

    /// Grows the host's 2 MiB pool to hold `pages` more free pages if it is
    /// short and we may (root); returns the previous size to restore.
    fn reserve_hugepages(pages: u64) -> Option<u64> {
        const NR: &str = "/proc/sys/vm/nr_hugepages";
        let pool = hugepages::Pool::read()?;
        if pool.available() >= pages {
            return None;
        }
        let before: u64 = std::fs::read_to_string(NR).ok()?.trim().parse().ok()?;
        let want = before + pages - pool.available();
        std::fs::write(NR, want.to_string()).ok()?;
        Some(before)
    }

    #[test]
    fn hugepage_memory_when_the_host_has_pages() {
        let size = 64u64 << 20;
        // Dropped after the memory below: the pages go back to the host then.
        let _restore = RestorePool(reserve_hugepages(size / hugepages::HUGEPAGE_SIZE));
        match hugepages::Pool::read() {
            Some(pool) if pool.available() >= size / hugepages::HUGEPAGE_SIZE => {}
            pool => {
                let msg = format!("host has too few free 2 MiB hugepages ({pool:?})");
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
                eprintln!("skipping hugepage_memory_when_the_host_has_pages: {msg}");
                return;
            }
        }
        let mem = create_guest_memory(size, true).unwrap();
        let region = mem.iter().next().unwrap();
        assert_eq!(region.len(), size);
        use vm_memory::Bytes;
        mem.write_obj(7u64, GuestAddress(size - 8)).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(size - 8)).unwrap(), 7);
    }

    /// Puts the pool back to `before` when dropped.
    struct RestorePool(Option<u64>);

    impl Drop for RestorePool {
        fn drop(&mut self) {
            if let Some(before) = self.0 {
                let _ = std::fs::write("/proc/sys/vm/nr_hugepages", before.to_string());
            }
        }
    }

    #[test]
    fn hugepage_memory_refuses_odd_sizes() {
        let err = create_guest_memory(65 << 20, true).unwrap_err();
        assert!(matches!(
            err,
            MemoryError::Hugepages(hugepages::HugepageError::Size(65))
        ));
    }
}
