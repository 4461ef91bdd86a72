//! Mounts made on file descriptors with the new mount API (`open_tree`,
//! `fsopen`/`fsconfig`/`fsmount`, `mount_setattr`, `move_mount`; Linux 5.12+).
//!
//! A mount is built detached, given every flag while nothing can see it, then
//! attached onto an `O_PATH` fd of its already-verified target: no path in
//! the container's (writable, shared) rootfs is looked up between the check
//! and the mount, so a symlink swapped in meanwhile cannot redirect it.
//! Raw syscalls: nix 0.31 wraps none of these, and libc has only the numbers.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// Per-mount attributes (`MOUNT_ATTR_*`) to set and clear, plus propagation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// `MOUNT_ATTR_*` bits to set.
    pub set: u64,
    /// `MOUNT_ATTR_*` bits to clear.
    pub clear: u64,
    /// `MS_PRIVATE`, `MS_SLAVE` or `MS_SHARED` (0: leave it).
    pub propagation: u64,
}

/// The fd returned by a syscall, or its errno.
fn fd_result(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    let raw = i32::try_from(ret).map_err(|_| Errno::EBADF)?;
    // Safe: the kernel just returned this new fd to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn unit_result(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

const EMPTY: &CStr = c"";

/// A detached copy of the mount tree at `path` (a trusted path of the agent's
/// own view: a bind source or its `/dev/null`); `recursive` copies submounts too.
pub fn clone_path(path: &std::path::Path, recursive: bool) -> Result<OwnedFd, Errno> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // Safe: a NUL-terminated path and plain flags; the result is checked.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })
}

/// A detached copy of the mount tree at `fd` (a verified target).
pub fn clone_fd(fd: BorrowedFd<'_>, recursive: bool) -> Result<OwnedFd, Errno> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // Safe: an open fd, an empty path and plain flags; the result is checked.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), EMPTY.as_ptr(), flags) })
}

/// One `fsconfig` call; `value` None sets a flag.
fn fsconfig(fs: BorrowedFd<'_>, key: &str, value: Option<&str>) -> Result<(), Errno> {
    let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
    let (cmd, value) = match value {
        Some(v) => (
            libc::FSCONFIG_SET_STRING,
            Some(CString::new(v).map_err(|_| Errno::EINVAL)?),
        ),
        None => (libc::FSCONFIG_SET_FLAG, None),
    };
    let value_ptr = value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
    // Safe: NUL-terminated strings (or NULL for a flag); the result is checked.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ptr(),
            value_ptr,
            0,
        )
    })
}

/// The kernel's own words on a failed `fsconfig`, from the context's log.
fn fs_log(fs: BorrowedFd<'_>) -> String {
    let mut buf = [0u8; 256];
    match nix::unistd::read(fs, &mut buf) {
        Ok(n) if n > 2 => String::from_utf8_lossy(&buf[2..n]).trim().to_owned(),
        _ => String::new(),
    }
}

/// A new, detached filesystem of `fstype` from `source` with `options`
/// (`key=value` or bare flags, as in mount(8)'s data), mounted with `attrs`.
/// The error says which step failed and what the kernel logged.
pub fn new_fs(
    fstype: &str,
    source: &str,
    options: &[(String, Option<String>)],
    attrs: u64,
) -> Result<OwnedFd, (String, Errno)> {
    let name = CString::new(fstype).map_err(|_| ("fstype".to_owned(), Errno::EINVAL))?;
    // Safe: a NUL-terminated name and a flag; the result is checked.
    let fs =
        fd_result(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) })
            .map_err(|e| (format!("fsopen {fstype}"), e))?;
    let fail = |what: String, errno: Errno| {
        let log = fs_log(fs.as_fd());
        let what = if log.is_empty() {
            what
        } else {
            format!("{what} ({log})")
        };
        (what, errno)
    };
    if let Err(e) = fsconfig(fs.as_fd(), "source", Some(source)) {
        return Err(fail(format!("source {source:?}"), e));
    }
    for (key, value) in options {
        if let Err(e) = fsconfig(fs.as_fd(), key, value.as_deref()) {
            return Err(fail(format!("option {key:?}"), e));
        }
    }
    // Safe: a valid fs context fd and no strings; the result is checked.
    let created = unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    });
    if let Err(e) = created {
        return Err(fail(format!("create {fstype}"), e));
    }
    // Safe: a created fs context fd and plain flags; the result is checked.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    })
    .map_err(|e| fail(format!("fsmount {fstype}"), e))
}

/// Sets `attrs` on the mount at `mount` (and its submounts when `recursive`).
pub fn set_attrs(mount: BorrowedFd<'_>, attrs: Attrs, recursive: bool) -> Result<(), Errno> {
    if attrs == Attrs::default() {
        return Ok(());
    }
    let mut clear = attrs.clear;
    // An atime mode is a field, not a bit: setting one needs the field cleared.
    if attrs.set & libc::MOUNT_ATTR__ATIME != 0 || attrs.clear & libc::MOUNT_ATTR__ATIME != 0 {
        clear |= libc::MOUNT_ATTR__ATIME;
    }
    let attr = libc::mount_attr {
        attr_set: attrs.set,
        attr_clr: clear,
        propagation: attrs.propagation,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // Safe: an open fd, an empty path, and a mount_attr that outlives the call.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// Attaches the detached mount `mount` onto the file or directory `target`.
pub fn attach(mount: BorrowedFd<'_>, target: BorrowedFd<'_>) -> Result<(), Errno> {
    // Safe: two open fds and empty paths; the result is checked.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            EMPTY.as_ptr(),
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
}
