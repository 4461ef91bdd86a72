//! Looking up and creating paths inside the container's rootfs with `openat2`,
//! never through a path string the image or another container could redirect.
//!
//! The rootfs is image content on virtio-fs, writable by the container and
//! the pod's other containers: any component may be a symlink planted to send
//! a mount, a device node or a chmod onto the agent's own files (the runc
//! CVE-2019-19921 / CVE-2021-30465 class). Every lookup here starts at the
//! rootfs fd and is confined by the kernel:
//!
//! - [`Follow::InRoot`] (`RESOLVE_IN_ROOT`): symlinks are followed as if the
//!   rootfs were `/`, what the OCI spec means by a destination "in the
//!   container" (images link `/var/run` to `/run`); they can never leave it.
//! - [`Follow::Never`] (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): any symlink
//!   is refused; for `/dev` and the kernel's filesystems, which real images
//!   never link elsewhere.
//!
//! Magic links (`/proc/<pid>/root`) are never followed. The caller gets an
//! `O_PATH` fd of the verified target and mounts onto that fd.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use super::{sys, SetupError};

/// How symlinks inside the rootfs are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Followed, but resolved inside the rootfs (`RESOLVE_IN_ROOT`).
    InRoot,
    /// Refused (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`).
    Never,
}

/// What a missing mount point is created as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// An empty regular file (a bind mount of a file).
    File,
}

/// How often a lookup is retried when the kernel reports a concurrent rename (`EAGAIN`).
const RETRIES: usize = 8;

/// The container's rootfs as a directory fd; every lookup stays under it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// The normal components of `dest` (validation rejected `..`), joined relative.
fn relative(dest: &Path) -> PathBuf {
    dest.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect()
}

impl Root {
    /// Wraps the fd of the rootfs (the root of its own bind mount).
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The rootfs fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn how(follow: Follow, flags: OFlag) -> OpenHow {
        let resolve = match follow {
            Follow::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            Follow::Never => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
        };
        OpenHow::new()
            .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(resolve)
    }

    /// `openat2` of `relative` (`.` for the root) with retries on `EAGAIN`.
    fn open_raw(&self, relative: &Path, follow: Follow, flags: OFlag) -> Result<OwnedFd, Errno> {
        let path: &Path = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let mut tries = 0;
        loop {
            match openat2(&self.fd, path, Self::how(follow, flags)) {
                Err(Errno::EAGAIN) if tries < RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    /// An `O_PATH` fd of `dest`, or `None` if it does not exist.
    pub fn open(&self, dest: &Path, follow: Follow) -> Result<Option<OwnedFd>, SetupError> {
        match self.open_raw(&relative(dest), follow, OFlag::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(lookup_error(dest, follow, errno)),
        }
    }

    /// An `O_PATH` directory fd of `dest`, created (with its parents, 0755) if missing.
    pub fn dir(&self, dest: &Path, follow: Follow) -> Result<OwnedFd, SetupError> {
        self.mount_point(dest, follow, Kind::Dir)
    }

    /// An `O_PATH` fd of the mount point `dest`, creating missing parents as
    /// directories and the last component as `kind`. Each missing component
    /// is made with `mkdirat`/`openat(O_EXCL|O_NOFOLLOW)` in the fd of its
    /// resolved parent, so it lands inside the rootfs or not at all; a
    /// dangling symlink in the way is refused rather than created through.
    pub fn mount_point(
        &self,
        dest: &Path,
        follow: Follow,
        kind: Kind,
    ) -> Result<OwnedFd, SetupError> {
        let relative = relative(dest);
        let names: Vec<&OsStr> = relative.iter().collect();
        let mut parent = self
            .open_raw(Path::new(""), follow, OFlag::O_DIRECTORY)
            .map_err(|e| lookup_error(Path::new("/"), follow, e))?;
        let mut prefix = PathBuf::new();
        for (i, name) in names.iter().enumerate() {
            prefix.push(name);
            let last = i + 1 == names.len();
            let want_dir = !last || kind == Kind::Dir;
            let flags = if want_dir {
                OFlag::O_DIRECTORY
            } else {
                OFlag::empty()
            };
            let shown = Path::new("/").join(&prefix);
            let fd = match self.open_raw(&prefix, follow, flags) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    create(parent.as_fd(), Path::new(name), want_dir, &shown)?;
                    match self.open_raw(&prefix, follow, flags) {
                        Ok(fd) => fd,
                        Err(Errno::ENOENT) => {
                            return Err(SetupError::invalid(format!(
                                "{shown:?} in the rootfs is a dangling symbolic link; \
                                 mount points are not created through one"
                            )))
                        }
                        Err(e) => return Err(lookup_error(&shown, follow, e)),
                    }
                }
                Err(e) => return Err(lookup_error(&shown, follow, e)),
            };
            parent = fd;
        }
        Ok(parent)
    }
}

/// Creates `name` in `parent` without following it if it is a symlink.
fn create(parent: BorrowedFd<'_>, name: &Path, dir: bool, shown: &Path) -> Result<(), SetupError> {
    let made = if dir {
        mkdirat(parent, name, Mode::from_bits_truncate(0o755))
    } else {
        openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    };
    match made {
        // EEXIST: something (maybe a dangling symlink) is there; the re-lookup decides.
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(errno) => Err(sys(format!("create mount point {shown:?}"), errno)),
    }
}

/// Names the path and the rule a failed lookup broke.
fn lookup_error(dest: &Path, follow: Follow, errno: Errno) -> SetupError {
    match errno {
        Errno::ELOOP if follow == Follow::Never => SetupError::invalid(format!(
            "{dest:?} in the rootfs is or passes through a symbolic link, \
             which is refused for this path"
        )),
        Errno::ELOOP => SetupError::invalid(format!(
            "{dest:?} in the rootfs has too many levels of symbolic links"
        )),
        Errno::EXDEV => SetupError::invalid(format!("{dest:?} resolves outside the rootfs")),
        Errno::ENOTDIR => SetupError::invalid(format!(
            "{dest:?} in the rootfs: a component is not a directory"
        )),
        other => sys(format!("open {dest:?} in the rootfs"), other),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use nix::fcntl::open;

    use super::*;

    fn root(dir: &Path) -> Root {
        let fd = open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open root");
        Root::new(fd)
    }

    fn real(fd: &OwnedFd) -> PathBuf {
        fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(fd)
        ))
        .expect("readlink")
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = fs::canonicalize(dir.path()).expect("canonical");
        let rootfs = top.join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        fs::create_dir(top.join("outside")).expect("mkdir");
        symlink("/etc", rootfs.join("abs")).expect("symlink");
        symlink("../../../../outside", rootfs.join("up")).expect("symlink");
        let root = root(&rootfs);
        let fd = root
            .dir(Path::new("/abs/x"), Follow::InRoot)
            .expect("in root");
        assert_eq!(real(&fd), rootfs.join("etc/x"));
        // `..` stops at the rootfs: "outside" is created inside it, not next to it.
        let fd = root.dir(Path::new("/up/y"), Follow::InRoot);
        assert!(fd.is_err() || real(&fd.expect("fd")).starts_with(&rootfs));
        assert!(!top.join("outside/y").exists());
        let err = root
            .dir(Path::new("/abs/z"), Follow::Never)
            .expect_err("symlink");
        assert!(err.message.contains("symbolic link"), "{}", err.message);
        assert!(!rootfs.join("etc/z").exists());
    }

    #[test]
    fn dangling_links_and_files_as_mount_points() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = fs::canonicalize(dir.path()).expect("canonical");
        symlink("/nowhere/file", rootfs.join("dangling")).expect("symlink");
        let root = root(&rootfs);
        let err = root
            .mount_point(Path::new("/dangling"), Follow::InRoot, Kind::File)
            .expect_err("dangling");
        assert!(err.message.contains("dangling"), "{}", err.message);
        let fd = root
            .mount_point(Path::new("/etc/hosts"), Follow::InRoot, Kind::File)
            .expect("file");
        assert_eq!(real(&fd), rootfs.join("etc/hosts"));
        assert!(rootfs.join("etc/hosts").is_file());
        assert!(root
            .open(Path::new("/missing"), Follow::InRoot)
            .expect("ok")
            .is_none());
    }
}
