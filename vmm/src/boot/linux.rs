//! 64-bit Linux boot protocol: the `boot_params` zero page, used when the
//! kernel has no PVH entry point.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams, Error as ConfiguratorError};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::GuestAddress;

use super::layout::{CMDLINE_START, ZERO_PAGE_START};
use super::LoadedImage;
use crate::memory::{GuestMemory, MemoryMapEntry};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;

/// Builds the zero page: loader identity, command line, initramfs and e820 map.
pub fn zero_page(
    memmap: &[MemoryMapEntry],
    cmdline_len: usize,
    initramfs: Option<LoadedImage>,
) -> boot_params {
    let mut params = boot_params::default();
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    if let Some(img) = initramfs {
        // The initramfs is placed below the MMIO gap, so it fits 32 bits.
        params.hdr.ramdisk_image = img.addr as u32;
        params.hdr.ramdisk_size = img.size as u32;
    }
    for (slot, e) in params.e820_table.iter_mut().zip(memmap) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = memmap.len().min(params.e820_table.len()) as u8;
    params
}

/// Writes the zero page into guest memory.
pub fn write(
    mem: &GuestMemory,
    memmap: &[MemoryMapEntry],
    cmdline_len: usize,
    initramfs: Option<LoadedImage>,
) -> Result<(), ConfiguratorError> {
    let params = zero_page(memmap, cmdline_len, initramfs);
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::memory_map;
    use vm_memory::Bytes;

    #[test]
    fn zero_page_fields() {
        let size = 8u64 << 30;
        let map = memory_map(size);
        let initrd = LoadedImage {
            addr: 0xc000_0000,
            size: 0x20_0000,
        };
        let p = zero_page(&map, 100, Some(initrd));
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, KERNEL_HDR_MAGIC);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.cmdline_size }, 100);
        assert_eq!({ p.hdr.ramdisk_image }, 0xc000_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x20_0000);
        assert_eq!(p.e820_entries as usize, map.len());
        let last = p.e820_table[map.len() - 1];
        assert_eq!(({ last.addr }, { last.r#type }), (1 << 32, 1));
    }

    #[test]
    fn written_at_zero_page() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        write(&mem, &memory_map(64 << 20), 10, None).unwrap();
        let flag: u16 = mem.read_obj(GuestAddress(ZERO_PAGE_START + 0x1fe)).unwrap();
        assert_eq!(flag, 0xaa55);
    }
}
