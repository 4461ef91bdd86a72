//! Leaving the initramfs for a tmpfs root, as `switch_root` does, so containers
//! can `pivot_root`.
//!
//! The kernel's initramfs is the root of the mount tree ("rootfs"), which
//! `pivot_root` cannot move away (EINVAL). PID 1 therefore copies the initramfs
//! onto a fresh tmpfs, frees the old files, moves the tmpfs over `/`, chroots
//! into it and re-execs itself from there, so the agent and `/proc/self/exe`
//! live on an ordinary mount with a parent.
//!
//! The copy is written here because nothing in the crates we use copies device
//! nodes and keeps modes and owners in one pass; the tree is a few entries.

use std::ffi::{CString, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};

/// Set on the re-exec, so the new process knows the switch is done.
pub const SWITCHED_ENV: &str = "VESSEL_ROOT_SWITCHED";

/// Where the tmpfs is assembled before it moves over `/`.
const NEW_ROOT: &str = "/.vessel-root";

/// ramfs, the initramfs's type when the kernel has no tmpfs (nix does not name it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// The binary the kernel started as init, re-exec'd from the new root.
const INIT_PATH: &str = "/init";

/// A step of the switch that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct SwitchError {
    step: String,
    #[source]
    source: io::Error,
}

fn fail(step: impl Into<String>) -> impl FnOnce(io::Error) -> SwitchError {
    let step = step.into();
    move |source| SwitchError { step, source }
}

fn errno(step: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> SwitchError {
    let step = step.into();
    move |e| SwitchError {
        step,
        source: e.into(),
    }
}

/// Whether this process already runs from the tmpfs root (and forgets the marker).
///
/// Must run before any thread starts: it changes the environment.
pub fn already_switched() -> bool {
    let switched = std::env::var_os(SWITCHED_ENV).is_some();
    std::env::remove_var(SWITCHED_ENV);
    switched
}

/// Switches to a tmpfs root and re-execs; returns only if the switch did not
/// happen (not an initramfs, or a failure, which is logged and leaves the
/// initramfs as it was where possible).
///
/// Must run before any thread starts and before the pseudo filesystems are mounted.
pub fn to_tmpfs() {
    match statfs("/") {
        Ok(fs) if fs.filesystem_type() == TMPFS_MAGIC || fs.filesystem_type() == RAMFS_MAGIC => {}
        Ok(_) => {
            tracing::info!("root is not an initramfs; staying on it");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot statfs /; staying on it");
            return;
        }
    }
    match switch() {
        Ok(never) => match never {},
        Err(err) => {
            tracing::error!(error = %err, "cannot leave the initramfs; containers will fail to pivot_root")
        }
    }
}

fn switch() -> Result<std::convert::Infallible, SwitchError> {
    let root_dev = fs::metadata("/").map_err(fail("stat /"))?.dev();
    fs::create_dir_all(NEW_ROOT).map_err(fail(format!("create {NEW_ROOT}")))?;
    mount(
        Some("tmpfs"),
        NEW_ROOT,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(errno("mount the tmpfs root"))?;
    if let Err(err) = copy_dir(Path::new("/"), Path::new(NEW_ROOT), root_dev) {
        let _ = umount2(NEW_ROOT, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(NEW_ROOT);
        return Err(err);
    }
    // Past this point there is no going back: free the initramfs's memory.
    remove_old(Path::new("/"), root_dev);
    std::env::set_current_dir(NEW_ROOT).map_err(fail("chdir to the new root"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(errno("move the new root over /"))?;
    nix::unistd::chroot(".").map_err(errno("chroot into the new root"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    tracing::info!("moved to a tmpfs root; re-executing");
    Err(reexec())
}

/// Copies the tree under `from` (on device `dev` only) into `to`.
fn copy_dir(from: &Path, to: &Path, dev: u64) -> Result<(), SwitchError> {
    for entry in fs::read_dir(from).map_err(fail(format!("read {}", from.display())))? {
        let entry = entry.map_err(fail(format!("read {}", from.display())))?;
        let src = entry.path();
        if src == Path::new(NEW_ROOT) {
            continue;
        }
        let meta = fs::symlink_metadata(&src).map_err(fail(format!("stat {}", src.display())))?;
        if meta.dev() != dev {
            continue;
        }
        let dst = to.join(entry.file_name());
        copy_entry(&src, &dst, &meta, dev)?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(fail(format!("chmod {}", dst.display())))?;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))
            .map_err(fail(format!("chown {}", dst.display())))?;
    }
    Ok(())
}

fn copy_entry(src: &Path, dst: &Path, meta: &fs::Metadata, dev: u64) -> Result<(), SwitchError> {
    let kind = meta.file_type();
    let what = || format!("copy {}", src.display());
    if kind.is_dir() {
        fs::create_dir(dst).map_err(fail(what()))?;
        copy_dir(src, dst, dev)
    } else if kind.is_symlink() {
        let target = fs::read_link(src).map_err(fail(what()))?;
        std::os::unix::fs::symlink(target, dst).map_err(fail(what()))
    } else if kind.is_file() {
        fs::copy(src, dst).map(drop).map_err(fail(what()))
    } else {
        use std::os::unix::fs::FileTypeExt;
        let sflag = if kind.is_char_device() {
            SFlag::S_IFCHR
        } else if kind.is_block_device() {
            SFlag::S_IFBLK
        } else if kind.is_fifo() {
            SFlag::S_IFIFO
        } else {
            // Sockets cannot be copied and mean nothing before init runs.
            return Ok(());
        };
        mknod(
            dst,
            sflag,
            Mode::from_bits_truncate(meta.mode()),
            meta.rdev(),
        )
        .map_err(errno(what()))
    }
}

/// Removes the initramfs's files (on device `dev`), best effort.
fn remove_old(dir: &Path, dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == Path::new(NEW_ROOT) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_old(&path, dev);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Execs the init binary from the new root with the same arguments; returns the failure.
fn reexec() -> SwitchError {
    let args: Vec<OsString> = std::env::args_os().collect();
    let to_c =
        |s: &[u8]| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let built = (|| -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let path = to_c(Path::new(INIT_PATH).as_os_str().as_bytes())?;
        let argv = args
            .iter()
            .map(|a| to_c(a.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let mut env = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                to_c(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        env.push(to_c(format!("{SWITCHED_ENV}=1").as_bytes())?);
        Ok((path, argv, env))
    })();
    match built {
        Ok((path, argv, env)) => match nix::unistd::execve(&path, &argv, &env) {
            Ok(never) => match never {},
            Err(e) => fail(format!("exec {INIT_PATH} from the new root"))(e.into()),
        },
        Err(e) => fail("build the exec arguments")(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_links_and_modes_on_one_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::create_dir_all(src.join("sbin")).expect("mkdir");
        fs::write(src.join("init"), b"binary").expect("write");
        fs::set_permissions(src.join("init"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(src.join("sbin"), fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink("../init", src.join("sbin/init")).expect("symlink");
        fs::create_dir(&dst).expect("mkdir");
        let dev = fs::metadata(&src).expect("stat").dev();
        copy_dir(&src, &dst, dev).expect("copy");
        assert_eq!(fs::read(dst.join("init")).expect("read"), b"binary");
        let mode = |p: &Path| fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(mode(&dst.join("init")), 0o755);
        assert_eq!(mode(&dst.join("sbin")), 0o700);
        assert_eq!(
            fs::read_link(dst.join("sbin/init")).expect("link"),
            Path::new("../init")
        );
    }
}
