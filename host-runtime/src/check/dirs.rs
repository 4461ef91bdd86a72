//! The state dir, the run dir and the CRI socket: they exist or can be
//! made, the run dir holds Unix sockets, overlayfs works under the image
//! store. Probes that must make something (a socket, an overlay mount)
//! remove it before they return.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::unistd::{access, AccessFlags};

use super::{existing_ancestor, CheckResult};

/// Filesystems by `statfs` magic: the name, and whether Unix sockets in
/// them work between processes (network and FUSE filesystems do not
/// serve them; virtiofs is FUSE).
const FILESYSTEMS: [(i64, &str, bool); 11] = [
    (0x0102_1994, "tmpfs", true),
    (0xEF53, "ext4", true),
    (0x5846_5342, "xfs", true),
    (0x9123_683E, "btrfs", true),
    (0x794C_7630, "overlayfs", true),
    (0x2FC1_2FC1, "zfs", true),
    (0x0102_1997, "9p", false),
    (0x6969, "nfs", false),
    (0x6573_5546, "fuse (virtiofs?)", false),
    (0xFF53_4D42, "cifs", false),
    (0xFE53_4D42, "smb2", false),
];

/// What filesystem `path` is on, and whether it holds Unix sockets
/// (unknown ones are given the benefit of the doubt; the bind probe tells).
fn filesystem(path: &Path) -> (String, bool) {
    match nix::sys::statfs::statfs(path) {
        Err(e) => (format!("unknown ({e})"), true),
        Ok(fs) => {
            let magic: i64 = fs.filesystem_type().0;
            FILESYSTEMS
                .iter()
                .find(|(m, _, _)| *m == magic)
                .map_or((format!("type {magic:#x}"), true), |(_, name, ok)| {
                    (name.to_string(), *ok)
                })
        }
    }
}

/// A directory that exists (writable) or whose nearest existing ancestor
/// is a writable directory where vesseld can create it. On success, the
/// directory that exists (itself or the ancestor) and a description.
fn usable_dir(path: &Path) -> Result<(&Path, String), String> {
    let shown = path.display();
    let Some(existing) = existing_ancestor(path) else {
        return Err(format!("no ancestor of {shown} exists"));
    };
    if !existing.is_dir() {
        return Err(format!(
            "{} exists and is not a directory",
            existing.display()
        ));
    }
    if let Err(e) = access(existing, AccessFlags::W_OK) {
        return Err(format!("{} is not writable: {e}", existing.display()));
    }
    let (fs, _) = filesystem(existing);
    if existing == path {
        Ok((existing, format!("{shown} exists, on {fs}")))
    } else {
        Ok((
            existing,
            format!(
                "{shown} does not exist yet; vesseld creates it under {} ({fs})",
                existing.display()
            ),
        ))
    }
}

/// The persistent state dir (`state_dir`: state store, images, logs).
pub fn state_dir(path: &Path) -> CheckResult {
    const NAME: &str = "state dir";
    match usable_dir(path) {
        Ok((_, detail)) => CheckResult::ok(NAME, detail),
        Err(why) => CheckResult::fail(
            NAME,
            why,
            "set state_dir (or --state-dir) to a writable local directory",
        ),
    }
}

/// overlayfs mounts with an upper dir under the image store (`images_dir`,
/// or its nearest existing ancestor): every container's rootfs is one.
/// Uses the image store's own probe, which removes what it made.
pub fn overlay(images_dir: &Path, is_root: bool) -> CheckResult {
    const NAME: &str = "overlayfs";
    if !is_root {
        return CheckResult::info(NAME, "not checked: mounting overlayfs needs root");
    }
    let Some(probe) = existing_ancestor(images_dir).filter(|p| p.is_dir()) else {
        return CheckResult::fail(
            NAME,
            format!("no directory to probe for {}", images_dir.display()),
            "set state_dir to a writable local directory",
        );
    };
    let (fs, _) = filesystem(probe);
    match vessel_image::rootfs::check_overlay(probe) {
        Ok(()) => CheckResult::ok(
            NAME,
            format!(
                "overlayfs mounts with an upper dir in {} ({fs}), where the image store goes",
                probe.display()
            ),
        ),
        Err(e) => CheckResult::fail(
            NAME,
            format!("{e} ({fs})"),
            "`modprobe overlay`; put state_dir on a local ext4, xfs (ftype=1), btrfs or tmpfs, \
             not on overlayfs, NFS or 9p",
        ),
    }
}

/// The run dir (`run_dir`: pods' sockets) exists or can be made, on a
/// filesystem that holds Unix sockets: proven by binding and connecting
/// one there.
pub fn run_dir(path: &Path) -> CheckResult {
    const NAME: &str = "run dir";
    let fix = "set run_dir (or --run-dir) to a directory on a local tmpfs (/run/vessel)";
    let (existing, detail) = match usable_dir(path) {
        Ok(found) => found,
        Err(why) => return CheckResult::fail(NAME, why, fix),
    };
    let (fs, holds_sockets) = filesystem(existing);
    if !holds_sockets {
        return CheckResult::fail(
            NAME,
            format!("{detail}: {fs} does not serve Unix sockets between processes"),
            fix,
        );
    }
    match socket_probe(existing) {
        Ok(()) => CheckResult::ok(
            NAME,
            format!("{detail}; a Unix socket binds and connects there"),
        ),
        Err(why) => CheckResult::fail(NAME, format!("{detail}; {why}"), fix),
    }
}

/// Binds, connects and removes a Unix socket in `dir`.
fn socket_probe(dir: &Path) -> Result<(), String> {
    let path = dir.join(format!(".vesseld-check-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let outcome = UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind a Unix socket at {}: {e}", path.display()))
        .and_then(|_listener| {
            UnixStream::connect(&path)
                .map(drop)
                .map_err(|e| format!("cannot connect to a Unix socket at {}: {e}", path.display()))
        });
    let _ = std::fs::remove_file(&path);
    outcome
}

/// How long connecting to an existing CRI socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The CRI socket: absent or stale is fine; a live one means a vesseld
/// (or something) already serves it.
pub fn socket(path: &Path) -> CheckResult {
    const NAME: &str = "cri socket";
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return CheckResult::ok(NAME, format!("{shown} is free: vesseld serve creates it"))
        }
        Err(e) => {
            return CheckResult::warn(NAME, format!("{shown}: {e}"), "check the path's directory")
        }
        Ok(m) if !m.file_type().is_socket() => {
            return CheckResult::warn(
                NAME,
                format!("{shown} exists and is not a socket: vesseld serve removes it"),
                "move the file away, or set socket (--socket)",
            )
        }
        Ok(_) => {}
    }
    // A listener whose backlog is full blocks connect(): bound the wait.
    let (tx, rx) = mpsc::channel();
    let target = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(&target).map(drop));
    });
    match rx.recv_timeout(CONNECT_TIMEOUT) {
        Ok(Ok(())) => CheckResult::info(
            NAME,
            format!(
                "{shown} is live: a vesseld (or another server) is already listening; \
                 a second vesseld serve on it refuses to start"
            ),
        ),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => CheckResult::ok(
            NAME,
            format!("{shown} is a stale socket file (nothing listens): vesseld serve replaces it"),
        ),
        Ok(Err(e)) => CheckResult::warn(
            NAME,
            format!("{shown}: connecting: {e}"),
            "check what owns the socket",
        ),
        Err(_) => CheckResult::info(
            NAME,
            format!(
                "{shown} is live but did not accept within {} s: a busy server listens",
                CONNECT_TIMEOUT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn dirs_that_exist_or_can_be_made_are_fine() {
        let root = tempfile::tempdir().unwrap();
        let here = state_dir(root.path());
        assert_eq!(here.status, Status::Ok, "{here:?}");
        assert!(here.detail.contains("exists"));
        let later = state_dir(&root.path().join("a/b"));
        assert_eq!(later.status, Status::Ok);
        assert!(later.detail.contains("creates it under"), "{later:?}");
        let file = root.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let blocked = state_dir(&file.join("state"));
        assert_eq!(blocked.status, Status::Fail);
        assert!(blocked.detail.contains("is not a directory"), "{blocked:?}");
    }

    #[test]
    fn the_run_dir_must_hold_sockets_and_the_probe_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let r = run_dir(&root.path().join("run"));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.detail.contains("binds and connects"));
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_live_socket_is_reported_and_a_stale_one_is_fine() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("vessel.sock");
        assert_eq!(socket(&path).status, Status::Ok);
        let listener = UnixListener::bind(&path).unwrap();
        let live = socket(&path);
        assert_eq!(live.status, Status::Info, "{live:?}");
        assert!(live.detail.contains("already listening"));
        drop(listener); // the file stays: a stale socket
        let stale = socket(&path);
        assert_eq!(stale.status, Status::Ok, "{stale:?}");
        assert!(stale.detail.contains("stale"));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert_eq!(socket(&path).status, Status::Warn);
    }

    #[test]
    fn overlay_is_probed_as_root_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(overlay(root.path(), false).status, Status::Info);
        if !nix::unistd::geteuid().is_root() {
            return; // CI runs as root; the probe below needs it.
        }
        // The probe runs in the nearest existing dir; a tempdir is on the
        // same filesystem as the state dir of a test machine.
        let r = overlay(&root.path().join("images"), true);
        assert_ne!(r.status, Status::Info);
        assert!(
            r.detail.contains(&root.path().display().to_string()),
            "{r:?}"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
