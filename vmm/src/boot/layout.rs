//! Guest physical memory layout: where the VMM puts boot structures and devices.
//!
//! Low memory follows the usual microVM layout (Firecracker's), so the
//! kernel finds everything where it looks:
//!
//! | address       | what |
//! | ------------- | ---- |
//! | 0x500         | GDT (4 entries) |
//! | 0x520         | IDT (empty; the kernel installs its own) |
//! | 0x6000        | PVH `hvm_start_info`, module list at 0x6040 |
//! | 0x7000        | PVH memory map, or the Linux `boot_params` zero page |
//! | 0x8ff0        | boot stack (64-bit Linux boot protocol) |
//! | 0x9000-0xbfff | identity page tables (64-bit Linux boot protocol) |
//! | 0x20000       | kernel command line |
//! | 0x9fc00       | MP table, in the EBDA where Linux scans for it |
//! | 1 MiB         | start of high RAM; the kernel loads at its ELF addresses above |
//! | top of low RAM| initramfs |
//! | 0xd000_0000   | virtio-mmio window up to 4 GiB; RAM beyond this goes above 4 GiB |

/// GDT address.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT address.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info` address (loaded into EBX at entry).
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs) address, right after `hvm_start_info`.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map address.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux boot protocol zero page (`boot_params`) address (loaded into RSI).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit Linux boot protocol.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page map level 4 table.
pub const PML4_START: u64 = 0x9000;
/// Page directory pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line address.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line, NUL included (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA, where the MP table goes; RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory: the kernel must load at or above it.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO gap below 4 GiB; also the first virtio-mmio slot.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the MMIO gap (4 GiB); RAM resumes here.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Size of one virtio-mmio device slot.
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 0x1000;
/// KVM's TSS (3 pages, needed on Intel) sits in the gap, away from devices.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Local APIC base (the architectural default).
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IO-APIC base (the architectural default; KVM's in-kernel IO-APIC lives here).
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// Number of IO-APIC pins (KVM's in-kernel IO-APIC has 24).
pub const IOAPIC_PINS: u8 = 24;
/// IRQ of the i8042's keyboard port (the PC's IRQ 1).
pub const KEYBOARD_IRQ: u32 = 1;
/// IRQ of the 16550 serial port (COM1).
pub const SERIAL_IRQ: u32 = 4;
/// First IRQ handed to virtio-mmio devices.
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last IRQ handed to virtio-mmio devices (the last IO-APIC pin).
pub const VIRTIO_IRQ_MAX: u32 = 23;
/// COM1 port base.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
/// COM1 port range length.
pub const SERIAL_PORT_LEN: u64 = 8;
/// i8042 port base (data port; the command/status port is base + 4).
pub const I8042_PORT_BASE: u64 = 0x60;
/// i8042 port range length (0x60..=0x64).
pub const I8042_PORT_LEN: u64 = 5;
/// Page size used for alignment of loaded images.
pub const PAGE_SIZE: u64 = 0x1000;

/// Address of the `index`th virtio-mmio slot.
pub fn virtio_mmio_slot(index: u32) -> u64 {
    MMIO_GAP_START + u64::from(index) * VIRTIO_MMIO_SLOT_SIZE
}

/// Most virtio-mmio devices the VM can have (one IRQ each).
pub const MAX_VIRTIO_DEVICES: u32 = VIRTIO_IRQ_MAX - VIRTIO_IRQ_BASE + 1;
// LaunchConfig::validate counts the devices against the same number.
const _: () = assert!(MAX_VIRTIO_DEVICES as usize == vessel_vmm_api::launch::MAX_VIRTIO_DEVICES);
