//! File operations relative to a directory fd, for trees whose content an
//! image controls. Every path walk goes one component at a time through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`,
//! so no symlink (planted by the same layer or any other) is ever followed and
//! nothing outside the root can be reached. Written on libc directly: the
//! `openat2` system call is one struct and the other calls are plain `*at`
//! calls that nix wraps with types that change between its versions.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `openat2` confined beneath `dir`, never following symlinks.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &OsStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `p` and `how` outlive the call; the size is the struct's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Opens the directory `name` inside `dir` (one component).
pub fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    open_beneath(
        dir,
        name,
        libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW,
        0,
    )
}

/// `mkdirat`.
pub fn mkdir(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })
}

/// Creates a new regular file (fails if the name exists).
pub fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = open_beneath(
        dir,
        name,
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
        0o600,
    )?;
    Ok(std::fs::File::from(fd))
}

/// `unlinkat`, removing a directory with `AT_REMOVEDIR` when `is_dir`.
pub fn unlink(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let n = cstr(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), flags) })
}

/// `symlinkat`: stores `target` as text, never resolved here.
pub fn symlink(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    // SAFETY: valid fd and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })
}

/// `linkat` without following a symlink at the source.
pub fn hardlink(
    src_dir: BorrowedFd<'_>,
    src: &OsStr,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    let s = cstr(src)?;
    let n = cstr(name)?;
    // SAFETY: valid fds and C strings.
    check(unsafe {
        libc::linkat(
            src_dir.as_raw_fd(),
            s.as_ptr(),
            dir.as_raw_fd(),
            n.as_ptr(),
            0,
        )
    })
}

/// `mknodat` (device nodes, fifos, overlay whiteouts).
pub fn mknod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), mode, dev) })
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`.
pub fn chown(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            n.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `fchmodat` on a name just created (never a symlink).
pub fn chmod(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), n.as_ptr(), mode, 0) })
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// Sets atime and mtime of a name without following symlinks.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let n = cstr(name)?;
    let ts = times(mtime);
    // SAFETY: valid fd, C string and a two-element array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            n.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets atime and mtime of an open file or directory.
pub fn set_mtime_fd(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: valid fd and a two-element array.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
}

/// `fchown` + `fchmod` of an open file or directory (chmod last: chown clears setuid).
pub fn chown_chmod_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// `fsetxattr`.
pub fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid fd, C string, and a pointer/length pair from a slice.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// `lstat` of a name inside `dir`.
pub fn lstat(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let n = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out-pointer.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}
