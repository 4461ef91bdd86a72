//! Non-blocking pipe and terminal fds driven by Tokio's reactor.
//!
//! `tokio::net::unix::pipe` only takes FIFOs, and a pty master is a character
//! device, so both go through one small `AsyncFd` wrapper.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One end of a pipe or a pty master, read or written without blocking a thread.
#[derive(Debug)]
pub struct AsyncStdioFd(AsyncFd<OwnedFd>);

impl AsyncStdioFd {
    /// Makes `fd` non-blocking and registers it with the reactor.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        // Safe: the AsyncFd owns the OwnedFd, which stays open and unchanged until it drops.
        unsafe { AsyncFd::register(fd) }
            .map(Self)
            .map_err(io::Error::from)
    }

    /// Reads what is there (waiting for something); `Ok(0)` at EOF.
    ///
    /// A pty master reports the hang-up of its last slave as `EIO`, after the
    /// buffered output: that is the terminal's EOF.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self
            .0
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd, buf).map_err(io::Error::from)
            })
            .await;
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            other => other,
        }
    }

    /// Writes all of `data`, waiting while the pipe or terminal is full.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self
                .0
                .async_io(Interest::WRITABLE, |fd| {
                    nix::unistd::write(fd, data).map_err(io::Error::from)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            data = &data[n..];
        }
        Ok(())
    }
}

impl AsFd for AsyncStdioFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

impl AsRawFd for AsyncStdioFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.get_ref().as_raw_fd()
    }
}
