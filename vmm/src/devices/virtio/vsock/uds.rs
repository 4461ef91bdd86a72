//! Host-side Unix socket helpers: binding the listener safely, connecting
//! without blocking, and writing without SIGPIPE.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use tracing::info;

use super::VsockError;

/// Binds the vsock listener at `path`. An existing socket nobody listens on
/// is stale and replaced; a live one or a non-socket is an error.
/// Returns the listener and the (dev, inode) of the socket file.
pub(super) fn bind_listener(path: &Path) -> Result<(UnixListener, (u64, u64)), VsockError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(VsockError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => match connect_nonblocking(path) {
            // EAGAIN: a listener whose backlog is full is still a listener.
            Ok(_) => return Err(VsockError::InUse(path.to_path_buf())),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                return Err(VsockError::InUse(path.to_path_buf()))
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                info!(path = %path.display(), "removing stale vsock socket");
                fs::remove_file(path).map_err(|e| VsockError::Io(path.to_path_buf(), e))?;
            }
            Err(e) => return Err(VsockError::Io(path.to_path_buf(), e)),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(VsockError::Io(path.to_path_buf(), e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| VsockError::Io(path.to_path_buf(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| VsockError::Io(path.to_path_buf(), e))?;
    let meta = fs::symlink_metadata(path).map_err(|e| VsockError::Io(path.to_path_buf(), e))?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// Removes the socket file at `path` if it is still the one we bound.
pub(crate) fn unlink_if_ours(path: &Path, id: (u64, u64)) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if (meta.dev(), meta.ino()) == id {
            let _ = fs::remove_file(path);
        }
    }
}

/// `<uds_path>_<port>`: where a guest connection to host port `port` goes.
pub(crate) fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = uds_path.as_os_str().to_os_string();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Connects a non-blocking stream socket to `path`. std's `connect` blocks
/// while the listener's backlog is full, which would stall the event loop;
/// non-blocking, the kernel fails with EAGAIN instead.
pub(crate) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` lies within it (checked above).
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(owned))
}

/// Writes to a stream socket with MSG_NOSIGNAL, so a vanished peer yields
/// EPIPE instead of killing the VMM with SIGPIPE.
pub(super) fn send_nosignal(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // n >= 0 and at most buf.len().
    Ok(n as usize)
}
