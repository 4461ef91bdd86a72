//! Starting jailed (the default): once everything that needs host paths or
//! privileges is open (KVM, guest memory, taps inside their netns, disks,
//! console and log files, bound sockets), the VMM moves into its own mount
//! and IPC namespaces whose root is a fresh tmpfs holding only what it
//! still needs, bounds its open files and file sizes, switches to the
//! pod's unprivileged uid/gid, gives up every capability and sets
//! no_new_privs.
//!
//! Runs on the main thread before any other thread exists: unshare of the
//! mount namespace also unshares the filesystem context, which the kernel
//! refuses (EINVAL) while other threads share it, and the id switch must
//! cover every thread.

mod caps;
mod ids;
mod mounts;
mod nofile;

use std::io;
use std::path::{Path, PathBuf};

pub use nofile::nofile_limit;

/// Where the new root is mounted unless `--jail-dir` says otherwise: a
/// directory every host has. The tmpfs only covers it inside the VMM's own
/// mount namespace, so the host never sees it and nothing is left behind.
pub use vessel_vmm_api::launch::DEFAULT_JAIL_DIR;

/// Error entering the jail; the message names the step.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The process lacks CAP_SYS_ADMIN (mount namespaces, mounts).
    #[error("--jail needs CAP_SYS_ADMIN (run vessel-vmm as root)")]
    NotPrivileged,
    /// Another thread already runs.
    #[error("--jail must be entered while the VMM has one thread, it has {0}")]
    Threads(usize),
    /// A path to keep is not absolute or has `..` in it (the VMM uses it
    /// as given inside the new root).
    #[error("--jail needs absolute paths without `..`: {}", .0.display())]
    Relative(PathBuf),
    /// A path could not be read or opened.
    #[error("--jail: {}: {}", .0.display(), .1)]
    Path(PathBuf, #[source] io::Error),
    /// A namespace or mount step failed.
    #[error("--jail: {0} failed: {1}")]
    Step(&'static str, #[source] nix::Error),
    /// Dropping capabilities failed.
    #[error("--jail: cannot drop capabilities: {0}")]
    Caps(String),
    /// Switching to the jail's uid/gid failed.
    #[error("--jail: cannot switch to uid {uid} gid {gid}: {step} failed: {source}")]
    Ids {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
        /// The call that failed.
        step: &'static str,
        /// Its error.
        source: nix::Error,
    },
}

/// One host path kept in the jail, at the same absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// The path as the VMM uses it.
    pub path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What the jail keeps and where it builds the root.
#[derive(Debug, Clone)]
pub struct JailSpec {
    /// Where the tmpfs that becomes the root is mounted (in the VMM's own
    /// mount namespace only).
    pub dir: PathBuf,
    /// Paths bind-mounted into the new root.
    pub keep: Vec<Keep>,
    /// Descriptors the VMM may open at runtime beyond those open at entry.
    pub runtime_fds: u64,
    /// The uid and gid to run as; None keeps the VMM's own.
    pub ids: Option<(u32, u32)>,
    /// RLIMIT_FSIZE: the largest file the VMM may write (its disks and
    /// capped logs never grow past it).
    pub max_file_size: u64,
}

impl JailSpec {
    /// A spec building the root at `dir` (default [`DEFAULT_JAIL_DIR`]).
    pub fn new(dir: Option<PathBuf>) -> Self {
        JailSpec {
            dir: dir.unwrap_or_else(|| PathBuf::from(DEFAULT_JAIL_DIR)),
            keep: Vec::new(),
            runtime_fds: nofile::runtime_fds(),
            ids: None,
            max_file_size: u64::MAX,
        }
    }

    /// Keeps the directory holding the socket `path`, read-write: the VMM
    /// connects to sockets there (hybrid vsock's `<path>_<port>`) and
    /// removes its own socket on exit.
    pub fn keep_socket_dir(&mut self, socket: &Path) -> Result<(), JailError> {
        let dir = absolute(socket)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        self.push(dir, false);
        Ok(())
    }

    /// Keeps the file `path` read-only.
    pub fn keep_file_ro(&mut self, path: &Path) -> Result<(), JailError> {
        let path = absolute(path)?;
        self.push(path, true);
        Ok(())
    }

    fn push(&mut self, path: PathBuf, read_only: bool) {
        if !self.keep.iter().any(|k| k.path == path) {
            self.keep.push(Keep { path, read_only });
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, JailError> {
    let dotdot = path
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    if path.is_absolute() && !dotdot {
        Ok(path.to_path_buf())
    } else {
        Err(JailError::Relative(path.to_path_buf()))
    }
}

/// What entering the jail set, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jailed {
    /// The RLIMIT_NOFILE now in force (soft and hard).
    pub nofile: u64,
    /// The uid now in force.
    pub uid: u32,
    /// The gid now in force.
    pub gid: u32,
}

/// Enters the jail described by `spec`. Call on the main thread, after
/// every host path is opened and before any other thread starts.
pub fn enter(spec: &JailSpec) -> Result<Jailed, JailError> {
    if !caps::has_sys_admin()? {
        return Err(JailError::NotPrivileged);
    }
    let threads = count_dir("/proc/self/task")?;
    if threads > 1 {
        return Err(JailError::Threads(threads));
    }
    let open_fds = count_dir("/proc/self/fd")? as u64;
    mounts::pivot_into_tmpfs(&spec.dir, &spec.keep)?;
    let nofile = nofile::bound(open_fds, spec.runtime_fds)?;
    nofile::bound_file_size(spec.max_file_size)?;
    // The bounding set needs CAP_SETPCAP, which the id switch takes away.
    caps::drop_bounding()?;
    let (uid, gid) = match spec.ids {
        Some((uid, gid)) => {
            ids::switch(uid, gid)?;
            (uid, gid)
        }
        None => (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
    };
    caps::drop_all()?;
    tracing::info!(
        root = %spec.dir.display(),
        kept = spec.keep.len(),
        nofile,
        uid,
        gid,
        "jailed: own mount and IPC namespaces, no capabilities, no_new_privs"
    );
    Ok(Jailed { nofile, uid, gid })
}

fn count_dir(path: &str) -> Result<usize, JailError> {
    let entries = std::fs::read_dir(path).map_err(|e| JailError::Path(PathBuf::from(path), e))?;
    Ok(entries.count())
}

#[cfg(test)]
mod tests;
