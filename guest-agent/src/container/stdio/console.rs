//! Terminals, runc style: the process allocates its pty from the container's
//! own `/dev/ptmx` (so `tty` names a `/dev/pts/N` that exists inside the
//! container), makes the slave its controlling terminal and stdio, and passes
//! the master to the agent over a socket (`SCM_RIGHTS`).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

nix::ioctl_write_ptr_bad!(
    /// Sets a terminal's window size.
    tiocswinsz,
    libc::TIOCSWINSZ,
    Winsize
);

/// Why the agent did not get a terminal from the process.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A syscall failed.
    #[error("{step}: {errno}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The error.
        errno: Errno,
    },
    /// The socket held no fd.
    #[error("the process sent no terminal")]
    NoFd,
}

fn sys(step: &'static str) -> impl FnOnce(Errno) -> ConsoleError {
    move |errno| ConsoleError::Sys { step, errno }
}

/// The socket pair that carries the master: (agent end, process end), both close-on-exec.
pub fn socket_pair() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(sys("create the console socket"))
}

/// Takes the master the process already sent (it sends before `Ready`), without waiting.
pub fn receive_master(socket: &OwnedFd) -> Result<OwnedFd, ConsoleError> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(sys("receive the terminal"))?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().map_err(sys("read the terminal message"))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    // Safe: the kernel just installed these fds in this process for us alone.
    let mut owned = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    // Only one fd is expected; any extra is closed when `owned` drops.
    owned.next().ok_or(ConsoleError::NoFd)
}

/// Sets the window size of the terminal behind `master` (the foreground group gets SIGWINCH).
pub fn resize(master: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Errno> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // Safe: TIOCSWINSZ reads one Winsize from the pointer, which outlives the call.
    unsafe { tiocswinsz(master.as_raw_fd(), &size) }.map(drop)
}

/// In the process (single-threaded, in the container's mount namespace):
/// allocates a pty, makes the slave the controlling terminal and fds 0–2
/// (owned by `owner`), and sends the master over `socket`.
pub fn become_terminal_client(socket: OwnedFd, owner: (Uid, Gid)) -> Result<(), ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(sys(
        "open /dev/ptmx (process.terminal needs devpts at /dev/pts)",
    ))?;
    grantpt(&master).map_err(sys("grantpt"))?;
    unlockpt(&master).map_err(sys("unlockpt"))?;
    let name = ptsname_r(&master).map_err(sys("ptsname"))?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open the pty slave"))?;
    // The process may switch to another user; it must still own its terminal.
    nix::unistd::fchown(&slave, Some(owner.0), Some(owner.1)).map_err(sys("chown the pty"))?;
    nix::unistd::setsid().map_err(sys("setsid"))?;
    // Safe: TIOCSCTTY takes an int argument (0: do not steal another session's terminal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } == -1 {
        return Err(ConsoleError::Sys {
            step: "make the pty the controlling terminal",
            errno: Errno::last(),
        });
    }
    nix::unistd::dup2_stdin(&slave).map_err(sys("dup the pty to stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(sys("dup the pty to stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(sys("dup the pty to stderr"))?;
    send_fd(socket.as_fd(), master.as_fd())
}

fn send_fd(socket: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), ConsoleError> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"t")];
    sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(sys("send the terminal to the agent"))
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_crosses_the_socket_and_resizes() {
        let (agent, process) = socket_pair().expect("socketpair");
        let pty = nix::pty::openpty(None, None).expect("openpty");
        send_fd(process.as_fd(), pty.master.as_fd()).expect("send");
        let master = receive_master(&agent).expect("receive");
        resize(master.as_fd(), 33, 101).expect("resize");
        let mut size = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // Safe: TIOCGWINSZ writes one Winsize.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
        // Nothing more was sent: a second receive finds no fd instead of blocking.
        assert!(receive_master(&agent).is_err());
    }
}
