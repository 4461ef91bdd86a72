//! Loading the guest: kernel, initramfs, command line and the boot-time
//! structures (boot parameters, GDT, page tables, MP table) in guest memory.

pub mod cmdline;
pub mod gdt;
pub mod layout;
pub mod linux;
pub mod mptable;
pub mod paging;
pub mod pvh;

use std::path::PathBuf;

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::Error as ConfiguratorError;
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{load_cmdline, Error as LoaderError, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::config::ImageFile;
use crate::memory::{low_ram_end, memory_map, GuestMemory};
use cmdline::CmdlineError;
use layout::{BOOT_GDT_START, CMDLINE_START, HIMEM_START, PAGE_SIZE};
use mptable::MptableError;

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh,
    /// 64-bit Linux boot protocol: long mode, identity paging, RSI = zero page.
    Linux64,
}

/// Something loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedImage {
    /// Guest physical start.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Where and how the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// Entry point (guest physical).
    pub entry: u64,
    /// Boot protocol for that entry point.
    pub protocol: BootProtocol,
}

/// The loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Entry point and protocol.
    pub boot: BootEntry,
    /// First byte after the kernel's highest segment.
    pub end: u64,
}

/// Error loading or configuring the guest.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file is not an ELF image.
    #[error("--kernel {}: not an ELF vmlinux (use the uncompressed vmlinux, not a bzImage)", .0.display())]
    NotElf(PathBuf),
    /// The kernel could not be loaded.
    #[error("--kernel {}: cannot load: {source}", path.display())]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// What the loader reported.
        source: LoaderError,
    },
    /// The kernel's segments do not fit in guest memory.
    #[error("--kernel {}: does not fit in guest memory (raise --memory)", .0.display())]
    KernelTooBig(PathBuf),
    /// The initramfs is empty.
    #[error("--initramfs {}: file is empty", .0.display())]
    InitramfsEmpty(PathBuf),
    /// The initramfs does not fit between the kernel and the top of low RAM.
    #[error("--initramfs {}: {size} bytes do not fit in guest memory above the kernel (raise --memory)", path.display())]
    InitramfsTooBig {
        /// The initramfs path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Reading the initramfs into guest memory failed.
    #[error("--initramfs {}: cannot read: {source}", path.display())]
    InitramfsRead {
        /// The initramfs path.
        path: PathBuf,
        /// The failure.
        source: GuestMemoryError,
    },
    /// The command line is invalid.
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    /// Writing the command line failed.
    #[error("cannot write the kernel command line: {0}")]
    CmdlineWrite(LoaderError),
    /// Writing the boot parameters failed.
    #[error("cannot write the boot parameters: {0}")]
    BootParams(#[from] ConfiguratorError),
    /// Writing the GDT or page tables failed.
    #[error("cannot write the boot GDT / page tables: {0}")]
    Tables(#[from] GuestMemoryError),
    /// Writing the MP table failed.
    #[error(transparent)]
    Mptable(#[from] MptableError),
}

/// Loads the ELF kernel at its physical addresses; picks PVH if it has the
/// PVH entry note, the 64-bit Linux protocol otherwise.
pub fn load_kernel(mem: &GuestMemory, kernel: &mut ImageFile) -> Result<LoadedKernel, BootError> {
    let path = &kernel.path;
    let result = Elf::load(mem, None, &mut kernel.file, Some(GuestAddress(HIMEM_START))).map_err(
        |e| match e {
            LoaderError::Elf(ElfError::InvalidElfMagicNumber | ElfError::ReadElfHeader) => {
                BootError::NotElf(path.clone())
            }
            LoaderError::Elf(ElfError::ReadKernelImage) | LoaderError::MemoryOverflow => {
                BootError::KernelTooBig(path.clone())
            }
            source => BootError::Kernel {
                path: path.clone(),
                source,
            },
        },
    )?;
    let boot = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => BootEntry {
            entry: entry.0,
            protocol: BootProtocol::Pvh,
        },
        _ => BootEntry {
            entry: result.kernel_load.0,
            protocol: BootProtocol::Linux64,
        },
    };
    Ok(LoadedKernel {
        boot,
        end: result.kernel_end,
    })
}

/// Where an initramfs of `size` bytes goes: page-aligned at the top of low
/// RAM (where the kernel would relocate it to anyway), above `kernel_end`.
pub fn initramfs_addr(size: u64, kernel_end: u64, low_end: u64) -> Option<u64> {
    let addr = low_end.checked_sub(size)? & !(PAGE_SIZE - 1);
    let kernel_end = kernel_end.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end).then_some(addr)
}

/// Reads the initramfs into the top of low guest RAM.
pub fn load_initramfs(
    mem: &GuestMemory,
    initramfs: &mut ImageFile,
    kernel_end: u64,
    mem_size: u64,
) -> Result<LoadedImage, BootError> {
    let size = initramfs.size;
    if size == 0 {
        return Err(BootError::InitramfsEmpty(initramfs.path.clone()));
    }
    let addr = initramfs_addr(size, kernel_end, low_ram_end(mem_size)).ok_or_else(|| {
        BootError::InitramfsTooBig {
            path: initramfs.path.clone(),
            size,
        }
    })?;
    // `size` fits: it is below low_ram_end, which is below 4 GiB.
    mem.read_exact_volatile_from(GuestAddress(addr), &mut initramfs.file, size as usize)
        .map_err(|source| BootError::InitramfsRead {
            path: initramfs.path.clone(),
            source,
        })?;
    Ok(LoadedImage { addr, size })
}

/// Writes everything the kernel reads at entry besides itself and the
/// initramfs: command line, GDT (IDT stays zero: memory starts zeroed),
/// page tables for the Linux protocol, boot parameters and the MP table.
pub fn configure(
    mem: &GuestMemory,
    mem_size: u64,
    protocol: BootProtocol,
    cmdline: &Cmdline,
    initramfs: Option<LoadedImage>,
    cpus: u8,
) -> Result<(), BootError> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(BootError::CmdlineWrite)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(CmdlineError::from)?
        .as_bytes()
        .len();
    let gdt = match protocol {
        BootProtocol::Pvh => gdt::PVH_GDT,
        BootProtocol::Linux64 => gdt::LINUX64_GDT,
    };
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt_bytes, GuestAddress(BOOT_GDT_START))?;

    let map = memory_map(mem_size);
    match protocol {
        BootProtocol::Pvh => pvh::write(mem, &map, initramfs)?,
        BootProtocol::Linux64 => {
            paging::write_identity_tables(mem)?;
            linux::write(mem, &map, cmdline_len, initramfs)?;
        }
    }
    mptable::write(mem, cpus)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use layout::{MMIO_GAP_START, PVH_INFO_START};
    use std::io::Write;

    #[test]
    fn initramfs_goes_high_and_page_aligned() {
        let low_end = 256 << 20;
        let addr = initramfs_addr(0x1234, 0x200_0000, low_end).unwrap();
        assert_eq!(addr, low_end - 0x2000);
        assert_eq!(addr % PAGE_SIZE, 0);
        assert!(addr + 0x1234 <= low_end);
        // Large memory: it stays below the MMIO gap.
        let addr = initramfs_addr(10 << 20, 0x200_0000, MMIO_GAP_START).unwrap();
        assert!(addr + (10 << 20) <= MMIO_GAP_START);
    }

    #[test]
    fn initramfs_must_not_overlap_kernel() {
        let low_end = 64 << 20;
        assert_eq!(initramfs_addr(60 << 20, 8 << 20, low_end), None);
        assert_eq!(initramfs_addr(low_end + 1, 0, low_end), None);
        // Exactly fits above a page-aligned kernel end.
        assert_eq!(
            initramfs_addr(low_end - (8 << 20), 8 << 20, low_end),
            Some(8 << 20)
        );
        // A kernel ending mid-page pushes the bound to the next page.
        assert_eq!(
            initramfs_addr(low_end - (8 << 20), (8 << 20) + 1, low_end),
            None
        );
    }

    fn image(name: &str, bytes: &[u8]) -> ImageFile {
        let path =
            std::env::temp_dir().join(format!("vessel-vmm-boot-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        ImageFile {
            path,
            file,
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn non_elf_kernel_is_named() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let mut k = image(
            "bz",
            b"MZ\x00\x00not an elf at all, just some bytes padding padding padding",
        );
        let err = load_kernel(&mem, &mut k).unwrap_err();
        assert!(matches!(err, BootError::NotElf(_)));
        assert!(err.to_string().starts_with("--kernel "));
        let mut empty = image("empty", b"");
        assert!(matches!(
            load_kernel(&mem, &mut empty),
            Err(BootError::NotElf(_))
        ));
    }

    #[test]
    fn initramfs_is_loaded_at_the_top() {
        let size = 64u64 << 20;
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        let mut img = image("initrd", b"070701hello");
        let loaded = load_initramfs(&mem, &mut img, 0x200_0000, size).unwrap();
        assert_eq!(loaded.addr, size - PAGE_SIZE);
        let mut buf = [0u8; 11];
        mem.read_slice(&mut buf, GuestAddress(loaded.addr)).unwrap();
        assert_eq!(&buf, b"070701hello");

        let mut empty = image("initrd-empty", b"");
        assert!(matches!(
            load_initramfs(&mem, &mut empty, 0x200_0000, size),
            Err(BootError::InitramfsEmpty(_))
        ));
    }

    #[test]
    fn configure_writes_cmdline_and_params() {
        let size = 128u64 << 20;
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        let cl = cmdline::build(true, &[], Some("foo=bar")).unwrap();
        let initrd = LoadedImage {
            addr: 0x700_0000,
            size: 10,
        };
        configure(&mem, size, BootProtocol::Pvh, &cl, Some(initrd), 2).unwrap();
        let expected = cl.as_cstring().unwrap();
        let mut buf = vec![0u8; expected.as_bytes_with_nul().len()];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(buf, expected.as_bytes_with_nul());
        let magic: u32 = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(magic, pvh::XEN_HVM_START_MAGIC_VALUE);
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(gdt1, gdt::PVH_GDT[1]);

        configure(&mem, size, BootProtocol::Linux64, &cl, None, 1).unwrap();
        let cmdline_size: u32 = mem
            .read_obj(GuestAddress(layout::ZERO_PAGE_START + 0x238))
            .unwrap();
        assert_eq!(cmdline_size as usize, expected.as_bytes().len());
    }
}
