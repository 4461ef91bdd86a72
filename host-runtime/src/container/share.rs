//! A container's place in its pod's share: `<cid>/rootfs` (the image's
//! overlay) and `<cid>/mounts/<i>` (the CRI mounts' host paths, bound), as
//! host-side submounts of the share that virtiofsd serves to the guest.
//!
//! The mount points are made in the share's source directory, which only
//! vesseld can reach (the guest sees it through the read-only share), and
//! the mounts go on the share's path: no path vesseld follows here is one
//! the guest could have changed.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::pod::ROOTFS_GUEST_PATH;

/// Where a container's mounts go, on the host and in the guest.
#[derive(Debug, Clone)]
pub struct ContainerShare {
    /// `<share source>/<cid>`: where mount points are made.
    source: PathBuf,
    /// `<share>/<cid>`: where the mounts go.
    mounted: PathBuf,
    /// The container's directory in the guest.
    guest: String,
}

/// A mount into the share failed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// A mount point could not be made or removed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bind mount failed.
    #[error("binding {from} for the guest: {source}")]
    Bind {
        /// The host path.
        from: PathBuf,
        /// Why.
        source: nix::Error,
    },
}

impl ContainerShare {
    /// The container `id`'s place in the share at `share` (its source at `source`).
    pub fn new(source: &Path, share: &Path, id: &str) -> Self {
        ContainerShare {
            source: source.join(id),
            mounted: share.join(id),
            guest: format!("{ROOTFS_GUEST_PATH}/{id}"),
        }
    }

    /// Makes `<cid>/rootfs` and `<cid>/mounts`; returns the rootfs mount target.
    pub fn make(&self) -> Result<PathBuf, ShareError> {
        for dir in [
            self.source.clone(),
            self.source.join("rootfs"),
            self.source.join("mounts"),
        ] {
            std::fs::create_dir(&dir).map_err(|source| ShareError::Io { path: dir, source })?;
        }
        Ok(self.mounted.join("rootfs"))
    }

    /// The rootfs in the guest.
    pub fn guest_rootfs(&self) -> String {
        format!("{}/rootfs", self.guest)
    }

    /// Binds host path `from` as mount `index` (read-only if asked,
    /// nosuid and nodev always); returns its guest path. A missing host
    /// path is made as a directory, as containerd does.
    pub fn bind(&self, index: usize, from: &Path, readonly: bool) -> Result<String, ShareError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ShareError::Io { path, source }
        };
        let meta = match std::fs::metadata(from) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(from).map_err(io(from))?;
                std::fs::metadata(from).map_err(io(from))?
            }
            Err(e) => return Err(io(from)(e)),
        };
        let point = self.source.join("mounts").join(index.to_string());
        if meta.is_dir() {
            std::fs::create_dir(&point).map_err(io(&point))?;
        } else {
            std::fs::File::create(&point).map_err(io(&point))?;
        }
        let target = self.mounted.join("mounts").join(index.to_string());
        let failed = |source| ShareError::Bind {
            from: from.to_path_buf(),
            source,
        };
        mount(
            Some(from),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(failed)?;
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        if let Err(e) = mount(None::<&str>, &target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(&target, MntFlags::MNT_DETACH);
            return Err(failed(e));
        }
        Ok(format!("{}/mounts/{index}", self.guest))
    }

    /// Unmounts every CRI mount and removes the mount points (the rootfs is
    /// the image store's to unmount, before this). Gone already is fine.
    pub fn remove(&self) -> Result<(), ShareError> {
        let mounts = self.source.join("mounts");
        if let Ok(entries) = std::fs::read_dir(&mounts) {
            for e in entries.flatten() {
                let target = self.mounted.join("mounts").join(e.file_name());
                match umount2(&target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                    Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                    Err(source) => {
                        return Err(ShareError::Bind {
                            from: target,
                            source,
                        })
                    }
                }
            }
        }
        match std::fs::remove_dir_all(&self.source) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ShareError::Io {
                path: self.source.clone(),
                source,
            }),
        }
    }
}

impl From<ShareError> for tonic::Status {
    fn from(e: ShareError) -> Self {
        tonic::Status::internal(e.to_string())
    }
}
