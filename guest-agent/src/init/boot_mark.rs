//! Writes the agent's boot marks to vessel-vmm's boot-mark port (see
//! `vessel_vmm_api::boot_mark`), so the VMM's boot timeline shows when the
//! guest reached `/init`, its root, its setup and its listener.

use vessel_vmm_api::{BootMark, BOOT_MARK_PORT};

/// Reports `mark` to the VMM. Only as PID 1 (an agent run on a host for
/// tests must never write to a real machine's ports); a failure is ignored,
/// since the timeline is a measurement, not a duty.
pub fn mark(mark: BootMark) {
    if !super::is_pid1() {
        return;
    }
    write_port(mark.code());
}

#[cfg(target_arch = "x86_64")]
fn write_port(code: u8) {
    // The permission is per thread (marks come from several): asked for
    // each time, which costs one syscall beside the VM exit.
    // SAFETY: ioperm only changes this thread's I/O permission bitmap.
    if unsafe { libc::ioperm(libc::c_ulong::from(BOOT_MARK_PORT), 1, 1) } != 0 {
        return;
    }
    // SAFETY: a one-byte write to a port the VMM emulates (or ignores); it
    // touches no memory of this process.
    unsafe {
        std::arch::asm!(
            "out dx, al",
            in("dx") BOOT_MARK_PORT,
            in("al") code,
            options(nomem, nostack, preserves_flags)
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn write_port(_code: u8) {}
