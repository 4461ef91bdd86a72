//! The jail's filesystem: a private mount namespace whose root is a fresh
//! tmpfs with the kept paths bind-mounted at their own absolute paths.
//!
//! Each kept path is opened (O_PATH) before the tmpfs is mounted and
//! bind-mounted from `/proc/self/fd/N`, so a path under the jail directory
//! itself (the default, /tmp, often holds the sockets) is still reachable
//! after the tmpfs covers it.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, pivot_root};

use super::{JailError, Keep};

/// Mount flags every kept path gets: no devices, no set-uid, no exec.
fn hardened() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

fn step(what: &'static str) -> impl Fn(nix::Error) -> JailError {
    move |e| JailError::Step(what, e)
}

/// `path` (absolute) re-rooted under `root`.
fn under(root: &Path, path: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in path.components() {
        if let Component::Normal(part) = c {
            out.push(part);
        }
    }
    out
}

/// A kept path opened before the mounts, and whether it is a directory.
struct Source {
    keep: Keep,
    fd: File,
    is_dir: bool,
}

fn open_sources(keep: &[Keep]) -> Result<Vec<Source>, JailError> {
    keep.iter()
        .map(|k| {
            let fd = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&k.path)
                .map_err(|e| JailError::Path(k.path.clone(), e))?;
            let is_dir = fd
                .metadata()
                .map_err(|e| JailError::Path(k.path.clone(), e))?
                .is_dir();
            Ok(Source {
                keep: k.clone(),
                fd,
                is_dir,
            })
        })
        .collect()
}

fn bind(root: &Path, src: &Source) -> Result<(), JailError> {
    let target = under(root, &src.keep.path);
    let io = |e| JailError::Path(target.clone(), e);
    if src.is_dir {
        fs::create_dir_all(&target).map_err(io)?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(io)?;
        }
        File::create(&target).map_err(io)?;
    }
    let from = PathBuf::from(format!("/proc/self/fd/{}", src.fd.as_raw_fd()));
    mount(
        Some(&from),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(step("bind mount"))?;
    // Bind mounts take their flags on a remount only.
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | hardened();
    if src.keep.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
        .map_err(step("remounting a bind mount"))
}

/// Moves the process into new mount and IPC namespaces, the mount one
/// rooted at a tmpfs mounted at `dir`, holding only `keep`. The VMM uses
/// no System V IPC or POSIX message queues: its own IPC namespace keeps it
/// away from the host's.
pub(super) fn pivot_into_tmpfs(dir: &Path, keep: &[Keep]) -> Result<(), JailError> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC)
        .map_err(step("unshare(CLONE_NEWNS | CLONE_NEWIPC)"))?;
    // Nothing mounted from here on may reach the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("making / private"))?;
    // Opened in the new namespace: a bind mount's source must be a mount
    // of the caller's own namespace (EINVAL otherwise).
    let sources = open_sources(keep)?;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        hardened(),
        Some("mode=0755,size=1m,nr_inodes=256"),
    )
    .map_err(step("mounting the tmpfs root"))?;
    for src in &sources {
        bind(dir, src)?;
    }
    drop(sources);
    // pivot_root(".", "."): the old root ends up on top of the new one and
    // is detached at once; no directory for it is needed.
    chdir(dir).map_err(step("chdir to the new root"))?;
    pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?;
    chdir("/").map_err(step("chdir /"))?;
    // The root itself holds only mount points: make it read-only.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hardened(),
        None::<&str>,
    )
    .map_err(step("remounting the root read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rerooted_lexically() {
        assert_eq!(
            under(Path::new("/tmp"), Path::new("/run/vessel/pod/vsock")),
            PathBuf::from("/tmp/run/vessel/pod/vsock")
        );
    }
}
