//! The container's `/dev`: the default devices and the usual links.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::rootfs::{create_mount_point, target_under};
use super::{sys, SetupError};

/// The default character devices (name, major, minor), as runc creates them.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Creates the default devices in the container's `/dev`.
// mknod where allowed, else a bind mount of the agent's own device node.
pub(super) fn create_devices(root: &Path) -> Result<(), SetupError> {
    let dev = target_under(root, Path::new("/dev"))?;
    fs::create_dir_all(&dev).map_err(|e| SetupError::internal(format!("create {dev:?}: {e}")))?;
    for &(name, major, minor) in DEVICES {
        let path = dev.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        ) {
            Ok(()) => {
                // mknod applied the umask.
                fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
                    .map_err(|e| SetupError::internal(format!("chmod /dev/{name}: {e}")))?;
            }
            Err(Errno::EPERM) => {
                create_mount_point(&path, false)?;
                let host = Path::new("/dev").join(name);
                mount(
                    Some(&host),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| sys(format!("bind /dev/{name}"), e))?;
            }
            Err(errno) => return Err(sys(format!("mknod /dev/{name}"), errno)),
        }
    }
    for &(name, to) in DEV_LINKS {
        match symlink(to, dev.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(SetupError::internal(format!("link /dev/{name}: {e}"))),
        }
    }
    Ok(())
}
