//! The device role: the worker threads of the virtio devices (rng, block,
//! net, vsock, balloon). Each waits on epoll and does the
//! host I/O of its device.

use super::rules::RuleSet;
use super::{common, SeccompError};

/// The rules of a device worker thread.
pub fn rules() -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    r.allow(&[
        // Event loop and eventfds.
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_create1,
        libc::SYS_read,
        // virtio-net: frames from and to the tap, gathered from and
        // scattered into guest buffers.
        libc::SYS_readv,
        libc::SYS_writev,
        // virtio-blk on its image file.
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
    ]);
    r.allow_arg_in(libc::SYS_ioctl, 1, &[libc::FIONBIO])?;
    Ok(r)
}

/// The rules of the vsock worker: a device worker that also serves the
/// hybrid vsock's Unix sockets: host clients on the listener, and guest
/// connections to `<socket>_<port>` (connected here, non-blocking). The
/// only thread that may create or connect a socket.
pub fn vsock_rules() -> Result<RuleSet, SeccompError> {
    let mut r = rules()?;
    r.allow(&[
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_shutdown,
    ]);
    // Only Unix sockets.
    r.allow_arg_in(libc::SYS_socket, 0, &[libc::AF_UNIX as u64])?;
    Ok(r)
}

/// The rules of the balloon's worker: a device worker that also gives
/// reported guest pages back by punching holes in guest RAM's memfd, with
/// that one `fallocate` mode only (never allocating or resizing).
pub fn balloon_rules() -> Result<RuleSet, SeccompError> {
    let mut r = rules()?;
    punch_hole(&mut r)?;
    Ok(r)
}

fn punch_hole(r: &mut RuleSet) -> Result<(), SeccompError> {
    let mode = crate::devices::virtio::balloon::PUNCH_HOLE_MODE;
    // The mode is a small positive flag set, so the cast is exact.
    r.allow_arg_in(libc::SYS_fallocate, 1, &[mode as u64])?;
    Ok(())
}

/// The rules of the launcher thread, which starts device workers: the
/// union of theirs (a worker inherits this filter under its own), plus
/// creating a thread and installing the worker's own filter in it.
pub fn launcher_rules() -> Result<RuleSet, SeccompError> {
    let mut r = vsock_rules()?;
    punch_hole(&mut r)?;
    common::thread_creation(&mut r)?;
    // seccompiler's apply_filter: no_new_privs, then the filter.
    r.allow_arg_in(libc::SYS_prctl, 0, &[libc::PR_SET_NO_NEW_PRIVS as u64])?;
    r.allow_arg_in(
        libc::SYS_seccomp,
        0,
        &[u64::from(libc::SECCOMP_SET_MODE_FILTER)],
    )?;
    Ok(r)
}
