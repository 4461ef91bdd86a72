//! A pod's cgroup on the host: its VMM and virtiofsd are accounted and
//! bounded together. cgroup v2 where the host has the unified hierarchy,
//! the v1 memory, pids and cpu hierarchies otherwise; under a configurable
//! parent (later the kubelet's `cgroup_parent`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The default parent of pod cgroups (`vesseld run-pod`'s; `serve` takes
/// `cgroup.parent`).
pub const DEFAULT_PARENT: &str = "vessel";

mod parent;
pub use parent::{parent_path, BadParent};

/// The v1 hierarchies a pod joins (those that are mounted).
const V1_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Controllers enabled for pod cgroups on v2.
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Making, filling or removing a pod cgroup failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be used.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The host has no usable cgroup hierarchy.
    #[error("no cgroup v2 hierarchy and no v1 memory hierarchy under {0}")]
    NoHierarchy(PathBuf),
    /// A name would leave the parent.
    #[error("cgroup name {0:?} must be one path component")]
    BadName(String),
    /// A parent would leave the root.
    #[error("cgroup parent {0:?} must be a relative path of plain components")]
    BadParent(PathBuf),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The unified hierarchy.
    V2,
    /// Per-controller hierarchies.
    V1,
}

/// The host's cgroup version under `root`.
pub fn detect(root: &Path) -> Result<Version, CgroupError> {
    if root.join("cgroup.controllers").exists() {
        Ok(Version::V2)
    } else if root.join("memory").join("cgroup.procs").exists() {
        Ok(Version::V1)
    } else {
        Err(CgroupError::NoHierarchy(root.to_path_buf()))
    }
}

/// A pod's cgroup: one directory (v2) or one per mounted controller (v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    /// Makes `<root>/<parent>/<name>` (in every v1 hierarchy) with a memory
    /// limit of `memory_limit` bytes. An existing one is reused (a restart).
    /// `parent` is relative ([`parent_path`]), one or more levels deep.
    pub fn create(
        root: &Path,
        parent: &Path,
        name: &str,
        memory_limit: u64,
    ) -> Result<Self, CgroupError> {
        check_parent(parent)?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CgroupError::BadName(name.to_string()));
        }
        let version = detect(root)?;
        let mut cg = PodCgroup {
            version,
            dirs: Vec::new(),
        };
        match version {
            Version::V2 => {
                // Controllers must be enabled from the root down to the
                // parent for the pod's directory to have their files.
                enable_controllers(root)?;
                let mut parent_dir = root.to_path_buf();
                for part in parent.components() {
                    parent_dir.push(part);
                    mkdir(&parent_dir)?;
                    enable_controllers(&parent_dir)?;
                }
                let dir = parent_dir.join(name);
                mkdir(&dir)?;
                cg.dirs.push(dir);
            }
            Version::V1 => {
                for ctrl in V1_CONTROLLERS {
                    let hierarchy = root.join(ctrl);
                    if !hierarchy.join("cgroup.procs").exists() {
                        continue;
                    }
                    let dir = hierarchy.join(parent).join(name);
                    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                    cg.dirs.push(dir);
                }
            }
        }
        if let Err(e) = cg.set_memory_limit(memory_limit) {
            let _ = cg.remove_now();
            return Err(e);
        }
        Ok(cg)
    }

    /// The existing pod cgroup `<root>/<parent>/<name>` (after a restart,
    /// to remove it); `None` if it does not exist.
    pub fn find(root: &Path, parent: &Path, name: &str) -> Result<Option<Self>, CgroupError> {
        check_parent(parent)?;
        let version = detect(root)?;
        let dirs: Vec<PathBuf> = match version {
            Version::V2 => vec![root.join(parent).join(name)],
            Version::V1 => V1_CONTROLLERS
                .iter()
                .map(|c| root.join(c).join(parent).join(name))
                .collect(),
        };
        let dirs: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
        Ok((!dirs.is_empty()).then_some(Self { version, dirs }))
    }

    /// Its directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Its cgroup version.
    pub fn version(&self) -> Version {
        self.version
    }

    fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let (file, value) = match self.version {
            Version::V2 => ("memory.max", bytes.to_string()),
            Version::V1 => ("memory.limit_in_bytes", bytes.to_string()),
        };
        for dir in &self.dirs {
            let path = dir.join(file);
            if self.version == Version::V1 && !path.exists() {
                continue; // not the memory hierarchy
            }
            std::fs::write(&path, &value).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The memory limit in force, in bytes (None: unlimited or unknown).
    pub fn memory_limit(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.max",
            Version::V1 => "memory.limit_in_bytes",
        };
        self.dirs
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .and_then(|v| v.trim().parse().ok())
    }

    /// `cgroup.procs` of every directory, open for writing: a child writes
    /// "0" to each before exec (see `process::SpawnSpec::cgroup_procs`).
    pub fn procs_files(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))
            })
            .collect()
    }

    /// Whether `pid` is in the pod's cgroup (its first directory).
    pub fn contains(&self, pid: u32) -> bool {
        self.dirs.first().is_some_and(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .is_ok_and(|procs| procs.lines().any(|l| l.trim() == pid.to_string()))
        })
    }

    /// Removes the directories once their processes are gone, retrying a
    /// little while the kernel finishes tearing exited tasks down.
    pub async fn remove(&self) -> Result<(), CgroupError> {
        for attempt in 0..50 {
            match self.remove_now() {
                Ok(()) => return Ok(()),
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && attempt < 49 =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remove_now(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(dir)(e)),
            }
        }
        Ok(())
    }
}

/// A parent is a relative path of plain components: it cannot leave the root.
fn check_parent(parent: &Path) -> Result<(), CgroupError> {
    let plain = parent
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain && !parent.as_os_str().is_empty() {
        Ok(())
    } else {
        Err(CgroupError::BadParent(parent.to_path_buf()))
    }
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Enables in `dir`'s subtree the pod controllers it offers.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.controllers");
    let offered = std::fs::read_to_string(&path).map_err(io(&path))?;
    let wanted: Vec<String> = V2_CONTROLLERS
        .iter()
        .filter(|c| offered.split_whitespace().any(|o| o == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    let mut f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(wanted.join(" ").as_bytes()).map_err(io(&path))
}

mod usage;

pub use usage::{MemoryUsage, Usage};

#[cfg(test)]
mod tests;
