//! The few Linux process calls std and nix lack: clone3 with a pidfd,
//! pidfd_open, pidfd_send_signal and waitid on a pidfd. Thin, checked
//! wrappers; the unsafe is here and nowhere else in the module.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Opens a pidfd for `pid` (which must exist; the caller verifies its identity after).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; the returned fd is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to the process behind `pidfd` (never to a recycled pid).
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo, which the kernel allows.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

/// Reaps the exited child behind `pidfd` without blocking; `Ok(None)` if it
/// still runs. ECHILD means it is not our child (an adopted process).
pub fn waitid_pidfd(pidfd: &OwnedFd) -> io::Result<Option<WaitStatus>> {
    // SAFETY: siginfo_t is plain data the kernel fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to our siginfo; P_PIDFD takes the fd as id.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after waitid, si_pid/si_status/si_code are valid for SIGCHLD info.
    let (pid, status, code) = unsafe { (info.si_pid(), info.si_status(), info.si_code) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(if code == libc::CLD_EXITED {
        WaitStatus::Exited(status)
    } else {
        WaitStatus::Signaled(status)
    }))
}

/// The result of [`clone3`] in the parent: the child's pid and pidfd.
pub struct Cloned {
    /// The child's pid in our pid namespace.
    pub pid: i32,
    /// A pidfd for it.
    pub pidfd: OwnedFd,
}

/// Forks with clone3 (`flags` may add new namespaces), getting a pidfd.
/// Returns `Ok(None)` in the child, which must then only make
/// async-signal-safe calls and exec or `_exit`.
///
/// # Safety
/// The caller is multi-threaded: in the child, nothing may allocate, lock
/// or touch state another thread could have held at the fork.
pub unsafe fn clone3(flags: u64) -> io::Result<Option<Cloned>> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: zeroed clone_args is valid (no stack, no tls, no set_tid).
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags | libc::CLONE_PIDFD as u64;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: args is a valid clone_args of the size we pass; with no stack
    // the child continues on a copy of ours, like fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match rc {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => {
            let pid = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
            // SAFETY: CLONE_PIDFD made the kernel store a new descriptor here.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Some(Cloned { pid, pidfd }))
        }
    }
}
