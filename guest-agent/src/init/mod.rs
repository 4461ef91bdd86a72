//! PID 1 duties in the guest: a root mount containers can pivot from, pseudo filesystems, environment, power off.
//!
//! Only used when the agent runs as PID 1. The kernel panics if PID 1 exits,
//! so every path here ends in a reboot, never a return to the kernel.

pub mod boot_mark;
mod mounts;
mod power;
pub mod switch_root;

pub use mounts::{create_dev_links, mount_pseudo_filesystems, Mount, MountError, MOUNTS};
pub use power::{ctrl_alt_del_signals_init, install_panic_hook, reboot};

/// `PATH` for everything the agent starts (containers get their own from their spec).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether this process is PID 1 (the guest's init).
pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// Opens `/dev/null` on each of descriptors 0, 1 and 2 that is closed.
///
/// The kernel gives init the console on them, but with no console (a VM
/// booted without `console=`) they are closed, and the next files the agent
/// opens would get them: its log lines on stderr would then go into a socket
/// or a file. Call first, before anything opens a file.
pub fn fill_standard_fds() {
    use std::os::fd::IntoRawFd;
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether `fd` is open; it touches no memory.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // The lowest free descriptor: `fd` itself, as the ones below are open.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            Ok(null) => {
                let _ = null.into_raw_fd();
            }
            Err(_) => return,
        }
    }
}

/// Mounts the pseudo filesystems and sets up the environment.
///
/// Must run before any thread is started: it changes the process environment.
/// Mount failures are logged and skipped so the agent still comes up and the
/// host can read what went wrong.
pub fn setup() {
    let failed = mount_pseudo_filesystems();
    for err in &failed {
        tracing::error!(error = %err, cause = %err.source, "mount failed");
    }
    create_dev_links();
    // The kernel hands init only HOME=/ and TERM=linux (plus unknown cmdline key=value).
    std::env::set_var("PATH", DEFAULT_PATH);
    std::env::set_var("HOME", "/root");
    tracing::debug!(failed = failed.len(), "guest init done");
}

#[cfg(test)]
mod tests {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    /// In a child (its descriptors are its own): with 0-2 closed, each ends
    /// up on /dev/null.
    #[test]
    fn closed_standard_fds_get_dev_null() {
        // SAFETY: the child only makes syscalls and allocates (glibc's malloc
        // is fork-safe), then leaves with _exit, never returning to the harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let ok = (|| {
                    for fd in 0..=2 {
                        // SAFETY: closes the child's own copies.
                        unsafe { libc::close(fd) };
                    }
                    super::fill_standard_fds();
                    for fd in 0..=2 {
                        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
                        if target != std::path::Path::new("/dev/null") {
                            return None;
                        }
                    }
                    Some(())
                })()
                .is_some();
                // SAFETY: ends the child without running the harness's exit path.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                assert_eq!(
                    waitpid(child, None).expect("waitpid"),
                    WaitStatus::Exited(child, 0),
                    "fds 0-2 not all on /dev/null"
                );
            }
        }
    }
}
