//! Leaving the initramfs's root mount, so containers can `pivot_root`.
//!
//! The kernel's initramfs is the root of the mount tree ("rootfs"), which
//! `pivot_root` cannot move away (EINVAL: the root mount has no parent).
//! PID 1 therefore bind-mounts the initramfs onto a directory of itself,
//! moves that bind mount over `/` and chroots into it: the same files (the
//! initramfs is a tmpfs when the kernel has `CONFIG_TMPFS` and no `root=`),
//! now on an ordinary mount with a parent. Unlike `switch_root`, nothing is
//! copied and the agent need not re-exec itself, which saves seconds of boot
//! on slow (nested) hosts.

use std::io;

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

/// Where the bind mount is made before it moves over `/`.
const NEW_ROOT: &str = "/.vessel-root";

/// ramfs, the initramfs's type when the kernel has no tmpfs (nix does not name it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// A step of the switch that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct SwitchError {
    step: &'static str,
    #[source]
    source: io::Error,
}

fn errno(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> SwitchError {
    move |e| SwitchError {
        step,
        source: e.into(),
    }
}

fn fail(step: &'static str) -> impl FnOnce(io::Error) -> SwitchError {
    move |source| SwitchError { step, source }
}

/// Moves the root onto a bind mount of the initramfs; returns whether it did
/// (false when the root is not an initramfs, or on a failure, which is logged).
///
/// Must run before any thread starts and before the pseudo filesystems are mounted.
pub fn leave_initramfs() -> bool {
    match statfs("/") {
        Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC || fs.filesystem_type() == RAMFS_MAGIC => {}
        Ok(_) => {
            tracing::info!("root is not an initramfs; staying on it");
            return false;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot statfs /; staying on it");
            return false;
        }
    }
    match switch() {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(error = %err, "cannot leave the initramfs; containers will fail to pivot_root");
            false
        }
    }
}

fn switch() -> Result<(), SwitchError> {
    std::fs::create_dir_all(NEW_ROOT).map_err(fail("create the bind mount point"))?;
    mount(
        Some("/"),
        NEW_ROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(errno("bind-mount the initramfs"))?;
    std::env::set_current_dir(NEW_ROOT).map_err(fail("chdir to the bind mount"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(errno("move the bind mount over /"))?;
    nix::unistd::chroot(".").map_err(errno("chroot into the bind mount"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    Ok(())
}
