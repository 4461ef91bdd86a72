//! A container's rootfs: the image's layer directories as read-only
//! overlayfs lower layers under an upper/work directory private to the
//! container, mounted where the caller says (vesseld: inside the pod's
//! virtio-fs shared directory).

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{ImageError, Result};

/// The mount data limit of the kernel (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// Checks that a path can go into overlayfs mount options.
fn option_safe(p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| ImageError::InvalidArgument {
        field: "path".into(),
        reason: format!("{p:?} is not UTF-8"),
    })?;
    if s.contains([',', ':', '\\']) {
        return Err(ImageError::InvalidArgument {
            field: "path".into(),
            reason: format!("{s:?} contains ',', ':' or '\\' (overlayfs options)"),
        });
    }
    Ok(s.to_string())
}

/// Mounts overlayfs at `target`: `lowers` top-most first.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    if lowers.is_empty() {
        return Err(ImageError::InvalidArgument {
            field: "image".into(),
            reason: "an image without layers has no rootfs".into(),
        });
    }
    let lower = lowers
        .iter()
        .map(|p| option_safe(p))
        .collect::<Result<Vec<_>>>()?
        .join(":");
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        option_safe(upper)?,
        option_safe(work)?
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(ImageError::Mount {
            target: target.display().to_string(),
            detail: format!(
                "{} layers make {} bytes of overlayfs options, over the kernel's {MAX_MOUNT_DATA}",
                lowers.len(),
                data.len()
            ),
        });
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| ImageError::Mount {
        target: target.display().to_string(),
        detail: format!("overlayfs ({e}); options {data}"),
    })
}

/// Unmounts `target`; not being mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(|e| ImageError::Mount {
                target: target.display().to_string(),
                detail: format!("lazy unmount: {e}"),
            })
        }
        Err(e) => Err(ImageError::Mount {
            target: target.display().to_string(),
            detail: format!("unmount: {e}"),
        }),
    }
}

/// Checks that overlayfs mounts work with an upper directory under `dir`,
/// leaving nothing behind. The error says which filesystem refused.
pub fn check_overlay(dir: &Path) -> Result<()> {
    let base = dir.join(format!(".overlay-check-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let made = (|| {
        for d in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(base.join(d))
                .map_err(|e| ImageError::io("create", base.join(d), e))?;
        }
        mount_overlay(
            &[base.join("lower")],
            &base.join("upper"),
            &base.join("work"),
            &base.join("merged"),
        )?;
        let w = fs::write(base.join("merged/probe"), b"x");
        unmount(&base.join("merged"))?;
        w.map_err(|e| ImageError::io("write through overlayfs", base.join("merged/probe"), e))
    })();
    let _ = fs::remove_dir_all(&base);
    made.map_err(|e| ImageError::Mount {
        target: dir.display().to_string(),
        detail: format!("overlayfs does not work with an upper dir on this filesystem: {e}"),
    })
}

/// Validates a container id used as a directory name.
pub fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidArgument {
            field: "container_id".into(),
            reason: format!("{id:?}: 1-128 of [A-Za-z0-9_.-], not starting with '.'"),
        })
    }
}
