//! PVH boot: the `hvm_start_info` block, memory map and module list the kernel
//! reads at its PVH entry point (32-bit protected mode, EBX = start info).

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams, Error as ConfiguratorError};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::GuestAddress;

use super::layout::{CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};
use super::LoadedImage;
use crate::memory::{GuestMemory, MemoryMapEntry};

/// Magic value of `hvm_start_info` ("xEn3" with the top bit set).
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Builds the PVH boot parameters (start info, memory map, initramfs module).
pub fn boot_params(memmap: &[MemoryMapEntry], initramfs: Option<LoadedImage>) -> BootParams {
    let table: Vec<hvm_memmap_table_entry> = memmap
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: table.len() as u32,
        ..Default::default()
    };
    let modules: Vec<hvm_modlist_entry> = initramfs
        .iter()
        .map(|img| hvm_modlist_entry {
            paddr: img.addr,
            size: img.size,
            ..Default::default()
        })
        .collect();
    if !modules.is_empty() {
        start_info.nr_modules = modules.len() as u32;
        start_info.modlist_paddr = PVH_MODLIST_START;
    }
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    params.set_sections(&table, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
    }
    params
}

/// Writes the PVH boot parameters into guest memory.
pub fn write(
    mem: &GuestMemory,
    memmap: &[MemoryMapEntry],
    initramfs: Option<LoadedImage>,
) -> Result<(), ConfiguratorError> {
    PvhBootConfigurator::write_bootparams(&boot_params(memmap, initramfs), mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::memory_map;
    use vm_memory::Bytes;

    #[test]
    fn start_info_points_at_memmap_cmdline_and_initramfs() {
        let size = 256 << 20;
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        let map = memory_map(size);
        let initrd = LoadedImage {
            addr: 0x0f00_0000,
            size: 0x1234,
        };
        write(&mem, &map, Some(initrd)).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.version, 1);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.memmap_paddr, PVH_MEMMAP_START);
        assert_eq!(info.memmap_entries as usize, map.len());
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        // The module list must not overlap the start info nor the memmap.
        assert!(PVH_INFO_START + std::mem::size_of::<hvm_start_info>() as u64 <= PVH_MODLIST_START);
        assert!(
            PVH_MODLIST_START + std::mem::size_of::<hvm_modlist_entry>() as u64 <= PVH_MEMMAP_START
        );

        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x0f00_0000, 0x1234));
        let second: hvm_memmap_table_entry =
            mem.read_obj(GuestAddress(PVH_MEMMAP_START + 24)).unwrap();
        assert_eq!(
            (second.addr, second.size, second.type_),
            (map[1].addr, map[1].size, 1)
        );
    }

    #[test]
    fn no_initramfs_no_modules() {
        let params = boot_params(&memory_map(64 << 20), None);
        assert!(params.modules.is_none());
        let info: &[u8] = &params.header;
        // nr_modules is the u32 at offset 12.
        assert_eq!(&info[12..16], &[0, 0, 0, 0]);
    }
}
