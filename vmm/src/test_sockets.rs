//! Socket files for tests.

use std::path::Path;

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};

/// Leaves a socket file at `path` that refuses every connection, as a dead
/// process leaves one. Bound but never listening: a listener that is merely
/// dropped can live on for a moment in a child another test is forking
/// (the fd is copied until exec), and a connect in that window succeeds and
/// is then reset.
pub fn stale_socket(path: impl AsRef<Path>) {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(path.as_ref()).expect("socket path"),
    )
    .expect("bind");
}
