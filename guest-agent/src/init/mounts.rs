//! The pseudo filesystems PID 1 mounts.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};

/// One filesystem to mount: what, where, how.
#[derive(Clone, Copy, Debug)]
pub struct Mount {
    /// Source (informational for pseudo filesystems; shows in /proc/mounts).
    pub source: &'static str,
    /// Mount point, created first with mode 0755.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// Filesystem-specific options.
    pub data: &'static str,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// In order: a mount point below another mount comes after it, so its directory
/// is created on the right filesystem.
#[rustfmt::skip]
pub const MOUNTS: &[Mount] = &[
    Mount { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Mount { source: "sysfs", target: "/sys", fstype: "sysfs", flags: NOSUID_NODEV_NOEXEC, data: "" },
    Mount { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MsFlags::MS_NOSUID, data: "mode=0755" },
    // newinstance keeps container ptys apart from the console's; on 6.x /dev/ptmx
    // already resolves to the devpts mounted at /dev/pts, so no ptmx symlink is needed.
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount { source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=1777" },
    Mount { source: "tmpfs", target: "/run", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=0755" },
    Mount { source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: NOSUID_NODEV, data: "mode=1777" },
    Mount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
    },
];

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {fstype} on {target}")]
pub struct MountError {
    /// `create` (the mount point) or `mount`.
    pub step: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// Mount point.
    pub target: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Mounts every entry of [`MOUNTS`], going on past failures; returns the failures.
pub fn mount_pseudo_filesystems() -> Vec<MountError> {
    MOUNTS.iter().filter_map(|m| mount_one(m).err()).collect()
}

fn mount_one(m: &Mount) -> Result<(), MountError> {
    let fail = |step, source| MountError {
        step,
        fstype: m.fstype,
        target: PathBuf::from(m.target),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(m.target)
        .map_err(|e| fail("create", e))?;
    let data = (!m.data.is_empty()).then_some(m.data);
    mount(Some(m.source), m.target, Some(m.fstype), m.flags, data)
        .map_err(|errno| fail("mount", errno.into()))?;
    tracing::debug!(target = m.target, fstype = m.fstype, "mounted");
    Ok(())
}

/// Symlinks the shells and runtimes expect in /dev; devtmpfs does not create them.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Creates the [`DEV_LINKS`]; an existing entry is left as it is.
pub fn create_dev_links() {
    for (original, link) in DEV_LINKS {
        match std::os::unix::fs::symlink(original, link) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => tracing::warn!(link, %err, "cannot create /dev symlink"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn nested_mount_points_come_after_their_parents() {
        for (i, m) in MOUNTS.iter().enumerate() {
            for later in &MOUNTS[i + 1..] {
                assert!(
                    !Path::new(m.target).starts_with(later.target),
                    "{} is mounted before its parent {}",
                    m.target,
                    later.target
                );
            }
        }
    }
}
