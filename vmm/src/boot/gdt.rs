//! The boot GDT and the matching segment registers.
//!
//! No rust-vmm crate builds a GDT, so this is written by hand after
//! Firecracker's `gdt.rs`: a null entry, code, data and TSS, flat over the
//! address space. PVH starts in 32-bit protected mode (code is 32-bit, 4 GiB
//! limit); the 64-bit Linux protocol starts in long mode (code has L set).

use kvm_bindings::kvm_segment;

/// Encodes a GDT entry from its access/flags word, base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// GDT for PVH entry: 32-bit flat code and data, and a TSS.
pub const PVH_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xffff_ffff),
    gdt_entry(0xc093, 0, 0xffff_ffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// GDT for the 64-bit Linux boot protocol: 64-bit code, flat data, and a TSS.
pub const LINUX64_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// Index of the code segment in the GDT.
pub const CODE_INDEX: u8 = 1;
/// Index of the data segment in the GDT.
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS in the GDT.
pub const TSS_INDEX: u8 = 3;

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn bit(entry: u64, n: u32) -> u8 {
    ((entry >> n) & 1) as u8
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff)) as u32;
    // KVM wants the byte-granular limit: scale it when G is set.
    if bit(entry, 55) == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The segment register value that loading GDT entry `index` would produce.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let present = bit(entry, 47);
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(entry, 54),
        s: bit(entry, 44),
        l: bit(entry, 53),
        g: bit(entry, 55),
        avl: bit(entry, 52),
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_code_segment_is_flat_32_bit() {
        let cs = segment_from_gdt(PVH_GDT[1], CODE_INDEX);
        assert_eq!(cs.selector, 0x8);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(
            (cs.type_, cs.present, cs.s, cs.db, cs.l, cs.g),
            (0xb, 1, 1, 1, 0, 1)
        );
        let ds = segment_from_gdt(PVH_GDT[2], DATA_INDEX);
        assert_eq!((ds.selector, ds.type_, ds.limit), (0x10, 0x3, 0xffff_ffff));
        let tr = segment_from_gdt(PVH_GDT[3], TSS_INDEX);
        assert_eq!(
            (tr.selector, tr.type_, tr.limit, tr.g),
            (0x18, 0xb, 0x67, 0)
        );
    }

    #[test]
    fn linux64_code_segment_is_long_mode() {
        let cs = segment_from_gdt(LINUX64_GDT[1], CODE_INDEX);
        assert_eq!((cs.l, cs.db, cs.present), (1, 0, 1));
        assert_eq!(LINUX64_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(LINUX64_GDT[2], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn null_segment_is_unusable() {
        let null = segment_from_gdt(0, 0);
        assert_eq!((null.present, null.unusable), (0, 1));
    }
}
