//! Register state of a vCPU at boot: general registers, segments and control
//! registers for the boot protocol, FPU, and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;

use crate::boot::gdt::{self, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use crate::boot::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PML4_START, PVH_INFO_START, ZERO_PAGE_START,
};
use crate::boot::{BootEntry, BootProtocol};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_NW: u64 = 1 << 29;
const X86_CR0_CD: u64 = 1 << 30;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
// Bit 1 of RFLAGS is reserved and must be set.
const RFLAGS_RESERVED: u64 = 0x2;

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// General registers at the entry point of `boot`.
pub fn boot_regs(boot: BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: boot.entry,
        ..Default::default()
    };
    match boot.protocol {
        BootProtocol::Pvh => regs.rbx = PVH_INFO_START,
        BootProtocol::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
    }
    regs
}

/// Updates `sregs` (as read from KVM) for `protocol`: flat segments from the
/// boot GDT; PVH runs in protected mode without paging, Linux64 in long mode
/// on the identity page tables.
pub fn boot_sregs(mut sregs: kvm_sregs, protocol: BootProtocol) -> kvm_sregs {
    let table = match protocol {
        BootProtocol::Pvh => gdt::PVH_GDT,
        BootProtocol::Linux64 => gdt::LINUX64_GDT,
    };
    let code = gdt::segment_from_gdt(table[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = gdt::segment_from_gdt(table[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = gdt::segment_from_gdt(table[usize::from(TSS_INDEX)], TSS_INDEX);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match protocol {
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE;
            sregs.cr4 = 0;
        }
        BootProtocol::Linux64 => {
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 = (sregs.cr0 & !(X86_CR0_CD | X86_CR0_NW)) | X86_CR0_PE | X86_CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// FPU state after reset (x87 control word and MXCSR defaults).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &state.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in state.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Routes LINT0 to ExtINT (the PIC) and LINT1 to NMI, as on a PC and as the
/// MP table says.
pub fn boot_lapic(mut state: kvm_lapic_state) -> kvm_lapic_state {
    let lvt0 = lapic_reg(&state, APIC_LVT0);
    set_lapic_reg(
        &mut state,
        APIC_LVT0,
        with_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = lapic_reg(&state, APIC_LVT1);
    set_lapic_reg(
        &mut state,
        APIC_LVT1,
        with_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    state
}

/// Applies the boot register state to the boot vCPU.
pub fn setup_boot_cpu(fd: &VcpuFd, boot: BootEntry) -> Result<(), kvm_ioctls::Error> {
    fd.set_fpu(&boot_fpu())?;
    fd.set_regs(&boot_regs(boot))?;
    let sregs = fd.get_sregs()?;
    fd.set_sregs(&boot_sregs(sregs, boot.protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_entry_state() {
        let boot = BootEntry {
            entry: 0x100_0000,
            protocol: BootProtocol::Pvh,
        };
        let regs = boot_regs(boot);
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags),
            (0x100_0000, PVH_INFO_START, 2)
        );
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let s = boot_sregs(reset, BootProtocol::Pvh);
        assert_eq!((s.cr0, s.cr4, s.efer), (X86_CR0_PE, 0, 0));
        assert_eq!((s.cs.selector, s.cs.db, s.cs.l), (0x08, 1, 0));
        assert_eq!((s.ss.selector, s.tr.selector), (0x10, 0x18));
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
    }

    #[test]
    fn linux64_entry_state() {
        let boot = BootEntry {
            entry: 0x100_0000,
            protocol: BootProtocol::Linux64,
        };
        let regs = boot_regs(boot);
        assert_eq!((regs.rsi, regs.rsp), (ZERO_PAGE_START, BOOT_STACK_POINTER));
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        let s = boot_sregs(reset, BootProtocol::Linux64);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(s.cr0 & (X86_CR0_CD | X86_CR0_NW), 0);
        assert_ne!(s.cr4 & X86_CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.l, s.cs.db), (1, 0));
    }

    #[test]
    fn lint_pins() {
        let mut state = kvm_lapic_state::default();
        set_lapic_reg(&mut state, APIC_LVT0, 0x0001_0000); // masked
        let s = boot_lapic(state);
        assert_eq!(lapic_reg(&s, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&s, APIC_LVT1), 0x400);
    }
}
