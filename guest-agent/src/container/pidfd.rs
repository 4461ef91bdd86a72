//! Process file descriptors: signals that reach the container's process or
//! nobody, never a later process that reused its pid after the reap.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// A pidfd of one process.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl PidFd {
    /// Opens a pidfd for `pid`, which must be our unreaped child.
    pub fn open(pid: Pid) -> Result<Self, Errno> {
        // Safe: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd < 0 {
            return Err(Errno::last());
        }
        let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
        // Safe: the kernel just returned this fd to us and nothing else owns it.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends `signal`; `ESRCH` once the process has been reaped.
    pub fn signal(&self, signal: Signal) -> Result<(), Errno> {
        // Safe: the fd is a valid pidfd; a null siginfo means "as kill(2) would".
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}
