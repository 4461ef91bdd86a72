//! The container's `/dev`: the default devices and the usual links, made in
//! an fd of `/dev` that no symlink led to (see [`resolve`](super::resolve)).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{makedev, mknodat, umask, Mode, SFlag};
use nix::unistd::symlinkat;

use super::mountfd;
use super::resolve::{Follow, Root};
use super::{sys, SetupError};

/// The default character devices (name, major, minor), as runc creates them;
/// the device program ([`crate::cgroup::devices`]) allows exactly these by default.
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Creates the default devices and links in the container's `/dev`.
// mknod where allowed, else a bind mount of the agent's own device node.
pub(super) fn create_devices(root: &Root) -> Result<(), SetupError> {
    let dev = root.dir(Path::new("/dev"), Follow::Never)?;
    // The modes are exact (0666), not filtered by the agent's umask.
    let old = umask(Mode::empty());
    let made = DEVICES
        .iter()
        .try_for_each(|&(name, major, minor)| make_device(dev.as_fd(), name, major, minor));
    umask(old);
    made?;
    for &(name, to) in DEV_LINKS {
        match symlinkat(to, dev.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(sys(format!("link /dev/{name}"), e)),
        }
    }
    Ok(())
}

fn make_device(dev: BorrowedFd<'_>, name: &str, major: u32, minor: u32) -> Result<(), SetupError> {
    let mode = Mode::from_bits_truncate(0o666);
    let number = makedev(major.into(), minor.into());
    match mknodat(dev, name, SFlag::S_IFCHR, mode, number) {
        // Already there (an image's own /dev without a tmpfs): the container's to keep.
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::EPERM) => bind_device(dev, name),
        Err(errno) => Err(sys(format!("mknod /dev/{name}"), errno)),
    }
}

/// Binds the agent's `/dev/<name>` onto a new empty file in the container's `/dev`.
fn bind_device(dev: BorrowedFd<'_>, name: &str) -> Result<(), SetupError> {
    match openat(
        dev,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    ) {
        Ok(_) => {}
        Err(e) => return Err(sys(format!("create /dev/{name}"), e)),
    }
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let target = openat2(dev, name, how).map_err(|e| sys(format!("open /dev/{name}"), e))?;
    let host = Path::new("/dev").join(name);
    let node = mountfd::clone_path(&host, false).map_err(|e| sys(format!("clone {host:?}"), e))?;
    mountfd::attach(node.as_fd(), target.as_fd()).map_err(|e| sys(format!("bind /dev/{name}"), e))
}
