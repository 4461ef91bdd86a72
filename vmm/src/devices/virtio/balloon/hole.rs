//! Giving reported guest pages back to the host. Guest RAM is a shared
//! memfd (virtiofsd maps it too), so `MADV_DONTNEED` on the VMM's mapping
//! would free nothing: the pages belong to the file. Punching a hole in the
//! file (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`) frees them
//! for every mapping at once (KVM's included, through its MMU notifier);
//! the guest's next touch faults in a fresh zeroed page.

use std::os::fd::AsRawFd;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::spec::PAGE_SIZE;
use crate::devices::virtio::GuestMemory;

/// The only `fallocate` mode the VMM uses (the seccomp filter allows no other).
pub const PUNCH_HOLE_MODE: libc::c_int = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;

/// Why a range the guest reported was not given back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoleError {
    /// A zero-length range.
    #[error("empty range at {addr:#x}")]
    Empty {
        /// Guest physical address.
        addr: u64,
    },
    /// Not whole 4 KiB pages.
    #[error("range {addr:#x} (+{len:#x}) is not whole 4 KiB pages")]
    Unaligned {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The end does not fit in 64 bits.
    #[error("range {addr:#x} (+{len:#x}) overflows the address space")]
    Overflow {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Not inside one RAM region (outside RAM, or across the MMIO gap).
    #[error("range {addr:#x} (+{len:#x}) is not inside guest RAM")]
    OutsideRam {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The region has no file behind it (only in tests: the VMM's RAM is a memfd).
    #[error("guest RAM at {addr:#x} is not file-backed")]
    NoFile {
        /// Guest physical address.
        addr: u64,
    },
    /// The host refused the punch.
    #[error("fallocate(PUNCH_HOLE) at file offset {offset:#x} (+{len:#x}): {errno}")]
    Punch {
        /// Offset in the memfd.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The OS error.
        errno: String,
    },
}

/// Punches the guest physical range `addr..addr+len` out of the memfd
/// behind guest RAM, after checking that it is whole pages inside one RAM
/// region (the guest chose both numbers).
pub fn punch(mem: &GuestMemory, addr: u64, len: u64) -> Result<(), HoleError> {
    if len == 0 {
        return Err(HoleError::Empty { addr });
    }
    if !addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(HoleError::Unaligned { addr, len });
    }
    let end = addr
        .checked_add(len)
        .ok_or(HoleError::Overflow { addr, len })?;
    let region = mem
        .find_region(GuestAddress(addr))
        .ok_or(HoleError::OutsideRam { addr, len })?;
    let start = region.start_addr().0;
    // find_region gave start <= addr, and the region fits the address space.
    let region_end = start.saturating_add(region.len());
    if end > region_end {
        return Err(HoleError::OutsideRam { addr, len });
    }
    let file = region.file_offset().ok_or(HoleError::NoFile { addr })?;
    let offset = file.start().saturating_add(addr - start);
    fallocate_punch(file.file(), offset, len)
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)` on `file`, retried on EINTR.
fn fallocate_punch(file: &std::fs::File, offset: u64, len: u64) -> Result<(), HoleError> {
    let failed = |errno: String| HoleError::Punch { offset, len, errno };
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(failed("beyond the largest file offset".into()));
    };
    loop {
        // SAFETY: fallocate on a descriptor we hold open; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), PUNCH_HOLE_MODE, off, n) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(failed(e.to_string()));
        }
    }
}
