//! What the net device moves frames through: a tap in production, a
//! socketpair in unit tests, memory in the fuzz targets.

use std::io;
use std::os::fd::AsRawFd;

/// Frame I/O with a 12-byte virtio-net header in front of every frame.
pub trait FrameIo {
    /// Reads one whole frame (header first) without blocking;
    /// `ErrorKind::WouldBlock` when there is none.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes one whole frame gathered from `iov` (header first).
    ///
    /// # Safety
    /// Every iovec must describe memory that stays readable for the call.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize>;
}

/// A frame source and sink the device's worker can poll.
pub trait Backend: FrameIo + AsRawFd + Send + Sync + 'static {
    /// Whether the host side can take checksum/TSO offloads (TUNSETOFFLOAD).
    fn supports_offloads(&self) -> bool;
    /// Sets which offloaded frames (`TUN_F_*`) may reach the guest.
    fn set_offload(&self, tun_flags: u32) -> io::Result<()>;
}

/// read(2) on `fd`, retrying on EINTR.
pub(crate) fn read_fd(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: the pointer and length describe `buf`, live and writable.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// writev(2) on `fd`, retrying on EINTR.
///
/// # Safety
/// Every iovec must describe memory that stays readable for the call.
pub(crate) unsafe fn writev_fd(fd: &impl AsRawFd, iov: &[libc::iovec]) -> io::Result<usize> {
    let count =
        libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: the caller vouches for the iovecs; the count matches.
        let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), count) };
        if n >= 0 {
            return Ok(n.unsigned_abs());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
