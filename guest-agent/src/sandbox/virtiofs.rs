//! Mounting the pod's virtio-fs shares.

use std::fs;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::SandboxError;
use super::spec::MountSpec;

/// The mounts made, for undo and teardown.
#[derive(Debug, Default)]
pub struct Mounted(Vec<PathBuf>);

impl Mounted {
    /// The mount points, in request order.
    pub fn points(&self) -> impl Iterator<Item = &PathBuf> {
        self.0.iter()
    }

    /// Unmounts everything, newest first (lazily: a container may still use a share).
    pub fn undo(self) {
        for point in self.0.into_iter().rev() {
            if let Err(errno) = umount2(&point, MntFlags::MNT_DETACH) {
                tracing::warn!(path = %point.display(), %errno, "cannot unmount share");
            }
        }
    }
}

/// Mounts each share; on error `mounted` holds what to undo.
pub fn mount_all(mounts: &[MountSpec], mounted: &mut Mounted) -> Result<(), SandboxError> {
    for (i, m) in mounts.iter().enumerate() {
        fs::create_dir_all(&m.mount_point).map_err(|e| {
            SandboxError::internal(format!("mounts[{i}].mount_point {:?}", m.mount_point), e)
        })?;
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if m.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some(m.tag.as_str()),
            &m.mount_point,
            Some("virtiofs"),
            flags,
            None::<&str>,
        )
        .map_err(|errno| mount_error(i, &m.tag, errno))?;
        tracing::info!(tag = %m.tag, mount_point = %m.mount_point.display(), read_only = m.read_only, "share mounted");
        mounted.0.push(m.mount_point.clone());
    }
    Ok(())
}

fn mount_error(i: usize, tag: &str, errno: Errno) -> SandboxError {
    match errno {
        // virtio-fs answers an unknown tag with ENOENT (older kernels: EINVAL).
        Errno::ENOENT | Errno::EINVAL => SandboxError::invalid(format!(
            "mounts[{i}].tag {tag:?}: no virtio-fs device with this tag ({errno})"
        )),
        Errno::ENODEV => SandboxError::FailedPrecondition(format!(
            "mounts[{i}].tag {tag:?}: the guest kernel has no virtio-fs support ({errno})"
        )),
        _ => SandboxError::internal(format!("mounts[{i}]: mount virtio-fs {tag:?}"), errno),
    }
}
