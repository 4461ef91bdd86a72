//! The container's filesystem view: its mounts, `/dev`, masked and read-only
//! paths, the read-only root, and `pivot_root`.
//!
//! Every path inside the rootfs is resolved from the rootfs fd with `openat2`
//! ([`resolve`](super::resolve)), and every mount is built detached and
//! attached onto the fd of its verified target ([`mountfd`](super::mountfd)):
//! nothing here follows a path string through the image's (writable, shared)
//! tree. Masks and read-only paths are applied before `pivot_root`, through
//! the same fds, so they need no `/proc` inside the container.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use super::mountfd::{self, Attrs};
use super::resolve::{Follow, Kind, Root};
use super::{sys, SetupError};

const NONE: Option<&str> = None;

/// Filesystems of the kernel's own whose mount points may not pass through a
/// symlink (runc refuses a symlinked `/proc` since CVE-2019-19921).
const KERNEL_FILESYSTEMS: &[&str] = &["proc", "sysfs", "cgroup2", "devpts", "mqueue"];

/// `/dev` when the spec mounts none: a fresh tmpfs, so device nodes never land in
/// the image's tree on the host's share.
const DEFAULT_DEV_OPTIONS: &[&str] =
    &["nosuid", "noexec", "strictatime", "mode=755", "size=65536k"];

/// Builds the container's mount tree on `rootfs` and pivots into it.
pub fn setup(rootfs: &Path, spec: &Spec) -> Result<(), SetupError> {
    // Nothing mounted here may propagate back into the agent's namespace.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| sys("make / private", e))?;
    let root = bind_rootfs(rootfs)?;
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    if !mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        // First, so the spec's /dev/shm or /dev/pts land on it, not under it.
        let words: Vec<String> = DEFAULT_DEV_OPTIONS
            .iter()
            .map(|w| (*w).to_owned())
            .collect();
        mount_new(
            &root,
            Path::new("/dev"),
            "tmpfs",
            "tmpfs",
            &parse_options(&words),
        )
        .map_err(|err| SetupError {
            kind: err.kind,
            message: format!("the default /dev: {}", err.message),
        })?;
    }
    for (i, m) in mounts.iter().enumerate() {
        mount_one(&root, m).map_err(|err| SetupError {
            kind: err.kind,
            message: format!("mounts[{i}] ({:?}): {}", m.destination(), err.message),
        })?;
    }
    super::dev::create_devices(&root)?;
    let linux = spec.linux().as_ref();
    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask(&root, Path::new(path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        make_readonly(&root, Path::new(path))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        // The root mount only: /tmp, /dev and the volumes keep their own flags.
        let ro = Attrs {
            set: libc::MOUNT_ATTR_RDONLY,
            ..Attrs::default()
        };
        mountfd::set_attrs(root.fd(), ro, false).map_err(|e| sys("make the root read-only", e))?;
    }
    enter_root(root.fd())
}

/// Binds `rootfs` onto itself (pivot_root needs a mount of its own) and returns
/// the new mount's root as the fd every later lookup starts from.
fn bind_rootfs(rootfs: &Path) -> Result<Root, SetupError> {
    // The path comes from the agent's validated request, not from the image.
    let target = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys(format!("open rootfs {rootfs:?}"), e))?;
    let tree = mountfd::clone_fd(target.as_fd(), true)
        .map_err(|e| sys(format!("clone rootfs {rootfs:?}"), e))?;
    mountfd::attach(tree.as_fd(), target.as_fd())
        .map_err(|e| sys(format!("bind-mount rootfs {rootfs:?}"), e))?;
    // Attached, the clone's fd is the root of the mount on the rootfs.
    Ok(Root::new(tree))
}

/// Parsed OCI mount options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// Per-mount attributes.
    attrs: Attrs,
    /// `bind` or `rbind`.
    bind: bool,
    /// `rbind`: submounts too.
    recursive: bool,
    /// `MS_PRIVATE`/`MS_SLAVE`/`MS_SHARED`, and whether it is the `r` form.
    propagation: Option<(u64, bool)>,
    /// Filesystem options for a new mount: `key=value` or a bare flag.
    data: Vec<(String, Option<String>)>,
}

/// Splits the OCI option words into mount attributes, propagation and
/// filesystem data, as mount(8) reads them.
fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    let mut atime = None;
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (libc::MOUNT_ATTR_RDONLY, 0),
            "rw" => (0, libc::MOUNT_ATTR_RDONLY),
            "nosuid" => (libc::MOUNT_ATTR_NOSUID, 0),
            "suid" => (0, libc::MOUNT_ATTR_NOSUID),
            "nodev" => (libc::MOUNT_ATTR_NODEV, 0),
            "dev" => (0, libc::MOUNT_ATTR_NODEV),
            "noexec" => (libc::MOUNT_ATTR_NOEXEC, 0),
            "exec" => (0, libc::MOUNT_ATTR_NOEXEC),
            "nodiratime" => (libc::MOUNT_ATTR_NODIRATIME, 0),
            "diratime" => (0, libc::MOUNT_ATTR_NODIRATIME),
            "noatime" | "relatime" | "strictatime" => {
                atime = Some(match option.as_str() {
                    "noatime" => libc::MOUNT_ATTR_NOATIME,
                    "relatime" => libc::MOUNT_ATTR_RELATIME,
                    _ => libc::MOUNT_ATTR_STRICTATIME,
                });
                continue;
            }
            // The default, and a superblock flag a bind mount cannot change.
            "async" => continue,
            "bind" | "rbind" => {
                o.bind = true;
                o.recursive |= option == "rbind";
                continue;
            }
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {
                let base = match option.trim_start_matches('r') {
                    "private" => libc::MS_PRIVATE,
                    "slave" => libc::MS_SLAVE,
                    _ => libc::MS_SHARED,
                };
                o.propagation = Some((base, option.starts_with('r')));
                continue;
            }
            other => {
                let (key, value) = match other.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (other.to_owned(), None),
                };
                o.data.push((key, value));
                continue;
            }
        };
        o.attrs.set = (o.attrs.set | set) & !clear;
        o.attrs.clear = (o.attrs.clear | clear) & !set;
    }
    if let Some(atime) = atime {
        o.attrs.set |= atime;
        o.attrs.clear |= libc::MOUNT_ATTR__ATIME;
    }
    o
}

fn mount_one(root: &Root, m: &Mount) -> Result<(), SetupError> {
    let options = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = m.destination();
    if options.bind || typ == "bind" {
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| SetupError::invalid("bind mount without a source"))?;
        return mount_bind(root, dest, source, &options);
    }
    // On a cgroup v2 guest the spec's "cgroup" means the unified hierarchy, as in runc.
    let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
    let source = m
        .source()
        .as_ref()
        .map_or_else(|| fstype.to_owned(), |s| s.display().to_string());
    mount_new(root, dest, fstype, &source, &options)
}

/// How `dest` may be resolved: `/dev` and the kernel's filesystems through no
/// symlink at all, everything else with symlinks kept inside the rootfs.
fn follow_for(dest: &Path, fstype: Option<&str>) -> Follow {
    let kernel = fstype.is_some_and(|t| KERNEL_FILESYSTEMS.contains(&t));
    if kernel || dest.starts_with("/dev") {
        Follow::Never
    } else {
        Follow::InRoot
    }
}

fn mount_bind(
    root: &Root,
    dest: &Path,
    source: &Path,
    options: &Options,
) -> Result<(), SetupError> {
    // The source is the spec author's (the host runtime's), not the image's.
    let kind = if source.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    let target = root.mount_point(dest, follow_for(dest, None), kind)?;
    let tree = mountfd::clone_path(source, options.recursive)
        .map_err(|e| sys(format!("clone {source:?}"), e))?;
    let mut attrs = options.attrs;
    if dest == Path::new("/dev") {
        attrs.set |= libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
        attrs.clear &= !(libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC);
    }
    mountfd::set_attrs(tree.as_fd(), attrs, options.recursive)
        .map_err(|e| sys("set the bind mount's flags", e))?;
    mountfd::attach(tree.as_fd(), target.as_fd())
        .map_err(|e| sys(format!("bind {source:?}"), e))?;
    set_propagation(&tree, options)
}

fn mount_new(
    root: &Root,
    dest: &Path,
    fstype: &str,
    source: &str,
    options: &Options,
) -> Result<(), SetupError> {
    let target = root.dir(dest, follow_for(dest, Some(fstype)))?;
    let mut attrs = options.attrs.set;
    if dest == Path::new("/dev") {
        // Device nodes, but nothing setuid or executable (nodev only if the spec says so).
        attrs |= libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
    }
    let fs = mountfd::new_fs(fstype, source, &options.data, attrs)
        .map_err(|(what, e)| sys(format!("mount {fstype}: {what}"), e))?;
    mountfd::attach(fs.as_fd(), target.as_fd()).map_err(|e| sys(format!("mount {fstype}"), e))?;
    set_propagation(&fs, options)
}

/// Applies the propagation option to the attached mount `mount`.
fn set_propagation(mount: &OwnedFd, options: &Options) -> Result<(), SetupError> {
    let Some((propagation, recursive)) = options.propagation else {
        return Ok(());
    };
    let attrs = Attrs {
        propagation,
        ..Attrs::default()
    };
    mountfd::set_attrs(mount.as_fd(), attrs, recursive).map_err(|e| sys("set mount propagation", e))
}

/// `pivot_root` into `root` and detach the old root, so no path leads back out.
fn enter_root(root: std::os::fd::BorrowedFd<'_>) -> Result<(), SetupError> {
    fchdir(root).map_err(|e| sys("chdir into the rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one (runc's trick):
    // no directory for it is needed in the rootfs, and one umount removes it.
    // No move+chroot fallback: a chroot on top of the old root can be climbed out
    // of with CAP_SYS_CHROOT. The agent leaves the initramfs at boot
    // (init::switch_root) precisely so this works in the guest.
    pivot_root(".", ".").map_err(|errno| match errno {
        Errno::EINVAL => SetupError::internal(format!(
            "pivot_root: {errno} (the agent's root is not a mount point with a parent; is it still on the initramfs?)"
        )),
        _ => sys("pivot_root", errno),
    })?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(|e| sys("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| sys("unmount the old root", e))?;
    chdir("/").map_err(|e| sys("chdir /", e))
}

/// Hides `path`: an empty read-only tmpfs over a directory, `/dev/null` over
/// anything else. Symlinks resolve inside the rootfs; a missing path is skipped.
fn mask(root: &Root, path: &Path) -> Result<(), SetupError> {
    let field = |e: SetupError| SetupError {
        kind: e.kind,
        message: format!("linux.maskedPaths {path:?}: {}", e.message),
    };
    let Some(target) = root.open(path, Follow::InRoot).map_err(field)? else {
        return Ok(());
    };
    let stat = fstat(&target).map_err(|e| field(sys("stat", e)))?;
    let cover = if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        mountfd::new_fs("tmpfs", "tmpfs", &[], libc::MOUNT_ATTR_RDONLY)
            .map_err(|(what, e)| field(sys(format!("tmpfs: {what}"), e)))?
    } else {
        // The agent's own /dev/null: this runs before pivot_root, in its view.
        mountfd::clone_path(Path::new("/dev/null"), false)
            .map_err(|e| field(sys("clone /dev/null", e)))?
    };
    mountfd::attach(cover.as_fd(), target.as_fd()).map_err(|e| field(sys("mount", e)))
}

/// Binds `path` onto itself read-only (with its submounts); a missing path is skipped.
fn make_readonly(root: &Root, path: &Path) -> Result<(), SetupError> {
    let field = |e: SetupError| SetupError {
        kind: e.kind,
        message: format!("linux.readonlyPaths {path:?}: {}", e.message),
    };
    let Some(target) = root.open(path, Follow::InRoot).map_err(field)? else {
        return Ok(());
    };
    let tree = mountfd::clone_fd(target.as_fd(), true).map_err(|e| field(sys("clone", e)))?;
    let ro = Attrs {
        set: libc::MOUNT_ATTR_RDONLY,
        ..Attrs::default()
    };
    mountfd::set_attrs(tree.as_fd(), ro, true).map_err(|e| field(sys("make read-only", e)))?;
    mountfd::attach(tree.as_fd(), target.as_fd()).map_err(|e| field(sys("mount", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn options_split_into_attrs_propagation_and_data() {
        let o = parse_options(&words(&[
            "nosuid",
            "ro",
            "mode=755",
            "rw",
            "rbind",
            "rslave",
            "size=1k",
            "newinstance",
            "noatime",
        ]));
        assert_eq!(
            o.attrs.set,
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME
        );
        assert_eq!(
            o.attrs.clear,
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR__ATIME
        );
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, Some((libc::MS_SLAVE, true)));
        assert_eq!(
            o.data,
            [
                ("mode".to_owned(), Some("755".to_owned())),
                ("size".to_owned(), Some("1k".to_owned())),
                ("newinstance".to_owned(), None),
            ]
        );
    }

    #[test]
    fn dev_and_kernel_filesystems_refuse_symlinks() {
        assert_eq!(follow_for(Path::new("/proc"), Some("proc")), Follow::Never);
        assert_eq!(
            follow_for(Path::new("/dev/shm"), Some("tmpfs")),
            Follow::Never
        );
        assert_eq!(follow_for(Path::new("/dev"), None), Follow::Never);
        assert_eq!(follow_for(Path::new("/devices"), None), Follow::InRoot);
        assert_eq!(
            follow_for(Path::new("/var/run/secrets"), None),
            Follow::InRoot
        );
        assert_eq!(follow_for(Path::new("/tmp"), Some("tmpfs")), Follow::InRoot);
    }
}
