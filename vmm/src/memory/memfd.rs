//! The file behind guest RAM: a memfd, so the RAM can be mapped by a
//! vhost-user backend (virtiofsd) as well as by the VMM.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use super::MemoryError;

/// Name of the memfd (shows in /proc/PID/maps and fd listings).
const MEMFD_NAME: &CStr = c"vessel-guest-ram";

/// Creates a sealed memfd of `size` bytes, on 2 MiB hugetlb pages if
/// `hugepages`. Nothing is allocated here: pages come when first touched.
pub fn create(size: u64, hugepages: bool) -> Result<File, MemoryError> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if hugepages {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::Memfd)?;
    seal(&file)?;
    Ok(file)
}

/// Seals the size: the fd goes to the vhost-user backend, and a backend
/// that shrank the file would make the VMM's (and KVM's) accesses to the
/// cut-off guest RAM fault with SIGBUS. F_SEAL_SEAL keeps it that way.
fn seal(file: &File) -> Result<(), MemoryError> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    if ret < 0 {
        return Err(MemoryError::Seal(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_sized_and_sealed() {
        let file = create(4 << 20, false).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4 << 20);
        // SAFETY: fcntl query on our own descriptor.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(
            seals,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL
        );
        // The seals hold: neither shrinking nor growing is allowed.
        assert!(file.set_len(1 << 20).is_err());
        assert!(file.set_len(8 << 20).is_err());
    }
}
