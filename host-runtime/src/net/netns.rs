//! Named network namespaces, made the way `ip netns add` makes them (so `ip
//! netns` sees ours): an nsfs bind mount on a file in [`NETNS_DIR`].

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetError;

/// Where named network namespaces live (iproute2's `NETNS_RUN_DIR`).
pub const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace; deleted on drop unless [`Netns::delete`] ran.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    deleted: bool,
}

impl Netns {
    /// Creates the empty namespace `name` (only loopback, down) in [`NETNS_DIR`].
    /// An existing one of that name is an error, not reused: it may belong to
    /// someone else.
    pub fn create(name: &str) -> Result<Self, NetError> {
        Self::create_in(Path::new(NETNS_DIR), name)
    }

    fn create_in(dir: &Path, name: &str) -> Result<Self, NetError> {
        validate_name(name)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| NetError::sys(format!("creating {}", dir.display()), e))?;
        let path = dir.join(name);
        // Checked before any mount, and again by create_new below against a race.
        if path.exists() {
            return Err(NetError::NetnsExists { path });
        }
        make_shared_mount(dir)?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => NetError::NetnsExists { path: path.clone() },
                _ => NetError::sys(format!("creating {}", path.display()), e),
            })?;
        // unshare(CLONE_NEWNET) moves only the calling thread, so a short-lived
        // thread does it and pins its new namespace with the bind mount; the rest
        // of the process stays in the host's namespace.
        let target = path.clone();
        let pinned = std::thread::spawn(move || -> Result<(), NetError> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetError::sys("unshare(CLONE_NEWNET)", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                NetError::sys(
                    format!("bind-mounting the netns on {}", target.display()),
                    e,
                )
            })
        })
        .join()
        .unwrap_or_else(|_| Err(NetError::ThreadPanicked(path.clone())));
        if let Err(e) = pinned {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        tracing::info!(netns = %path.display(), "created network namespace");
        Ok(Self {
            name: name.to_string(),
            path,
            deleted: false,
        })
    }

    /// The namespace's name (`ip netns` name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path, for `--net ...,netns=` and `setns`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a short-lived thread that has entered this namespace (see [`run_in`]).
    pub fn run_in<T: Send>(
        &self,
        f: impl FnOnce() -> Result<T, NetError> + Send,
    ) -> Result<T, NetError> {
        run_in(&self.path, f)
    }

    /// Takes over the existing namespace `name` in [`NETNS_DIR`] (after a
    /// restart, to delete it); `None` if there is none.
    pub fn existing(name: &str) -> Result<Option<Self>, NetError> {
        validate_name(name)?;
        let path = Path::new(NETNS_DIR).join(name);
        Ok(path.exists().then(|| Self {
            name: name.to_string(),
            path,
            deleted: false,
        }))
    }

    /// Deletes the namespace: its links (taps included) go once nothing else
    /// holds it (no process inside, no open fd).
    pub fn delete(mut self) -> Result<(), NetError> {
        self.deleted = true;
        remove(&self.path)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            if let Err(e) = remove(&self.path) {
                tracing::warn!(netns = %self.path.display(), error = %e, "cannot delete network namespace");
            }
        }
    }
}

/// Runs `f` on a short-lived thread that has entered the namespace at `path`,
/// so sockets and links it makes belong to that namespace; the calling thread
/// stays where it is.
pub fn run_in<T: Send>(
    path: &Path,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let ns =
        File::open(path).map_err(|e| NetError::sys(format!("opening {}", path.display()), e))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetError::sys(format!("entering {}", path.display()), e))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(NetError::ThreadPanicked(path.to_path_buf())))
    })
}

/// Unmounts and removes a namespace file, as `ip netns del` does.
fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetError::sys(format!("unmounting {}", path.display()), e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::info!(netns = %path.display(), "deleted network namespace");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::sys(format!("removing {}", path.display()), e)),
    }
}

/// Makes `dir` a mount point with shared propagation, as iproute2 does, so that
/// deleting a namespace also unmounts its copies in mount namespaces made after
/// it was created (otherwise those copies would keep it alive).
fn make_shared_mount(dir: &Path) -> Result<(), NetError> {
    let share = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match share() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet; bind it onto itself and try again.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(NetError::sys(format!("making {} shared", dir.display()), e)),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetError::sys(format!("bind-mounting {} on itself", dir.display()), e))?;
    share().map_err(|e| NetError::sys(format!("making {} shared", dir.display()), e))
}

/// A namespace name is one path component.
fn validate_name(name: &str) -> Result<(), NetError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Some("must be a plain file name")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    NetError::check_name("netns", name, why)
}

/// Whether a namespace of this name exists in [`NETNS_DIR`].
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain_file_names() {
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_name("vessel-demo").is_ok());
    }

    #[test]
    fn an_existing_name_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"someone's").unwrap();
        match Netns::create_in(dir.path(), "taken") {
            Err(NetError::NetnsExists { path }) => assert_eq!(path, taken),
            other => panic!("unexpected: {other:?}"),
        }
        assert_eq!(std::fs::read(&taken).unwrap(), b"someone's");
    }
}
