//! The container's filesystem view: its mounts, `/dev`, `pivot_root`, masked
//! and read-only paths, and the read-only root.

use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};

use super::{sys, SetupError};

const NONE: Option<&str> = None;

/// Builds the container's mount tree under `rootfs` and pivots into it.
pub fn setup(rootfs: &Path, spec: &Spec) -> Result<(), SetupError> {
    // Nothing mounted here may propagate back into the agent's namespace.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| sys("make / private", e))?;
    // pivot_root needs the new root to be a mount point of its own.
    mount(
        Some(rootfs),
        rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(|e| sys(format!("bind-mount rootfs {rootfs:?}"), e))?;
    let root = fs::canonicalize(rootfs)
        .map_err(|e| SetupError::internal(format!("resolve rootfs {rootfs:?}: {e}")))?;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        mount_one(&root, m).map_err(|err| SetupError {
            kind: err.kind,
            message: format!("mounts[{i}] ({:?}): {}", m.destination(), err.message),
        })?;
    }
    super::dev::create_devices(&root)?;
    enter_root(&root)?;
    let linux = spec.linux().as_ref();
    for path in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask(Path::new(path))?;
    }
    for path in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        make_readonly(Path::new(path))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_readonly(Path::new("/"))?;
    }
    Ok(())
}

/// `dest` under `root`, refusing a path that symlinks lead outside the root.
pub(super) fn target_under(root: &Path, dest: &Path) -> Result<PathBuf, SetupError> {
    let relative = dest.strip_prefix("/").unwrap_or(dest);
    let target = root.join(relative);
    // Symlinks in an image could point a mount point at the agent's own files.
    let parent = target.parent().unwrap_or(root);
    let resolved = fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    if !resolved.starts_with(root) {
        return Err(SetupError::invalid(format!(
            "{dest:?} resolves outside the rootfs"
        )));
    }
    Ok(target)
}

/// Mount flags for the OCI option words; the rest becomes filesystem data.
fn parse_options(options: &[String]) -> (MsFlags, MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" => {
                let base = match option.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_SHARED,
                };
                let rec = if option.starts_with('r') {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                propagation = base | rec;
                continue;
            }
            other => {
                data.push(other.to_owned());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, propagation, data.join(","))
}

fn mount_one(root: &Path, m: &Mount) -> Result<(), SetupError> {
    let target = target_under(root, m.destination())?;
    let options = m.options().clone().unwrap_or_default();
    let (flags, propagation, data) = parse_options(&options);
    let typ = m.typ().as_deref().unwrap_or("none");
    if flags.contains(MsFlags::MS_BIND) || typ == "bind" {
        let source = m
            .source()
            .as_ref()
            .ok_or_else(|| SetupError::invalid("bind mount without a source"))?;
        create_mount_point(&target, source.is_dir())?;
        let rec = flags & MsFlags::MS_REC;
        mount(Some(source), &target, NONE, MsFlags::MS_BIND | rec, NONE)
            .map_err(|e| sys(format!("bind {source:?}"), e))?;
        // Bind mounts ignore most flags on the first call; they take effect on a remount.
        let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            mount(
                NONE,
                &target,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                NONE,
            )
            .map_err(|e| sys("remount the bind mount", e))?;
        }
    } else {
        create_mount_point(&target, true)?;
        // On a cgroup v2 guest the spec's "cgroup" means the unified hierarchy, as in runc.
        let fstype = if typ == "cgroup" { "cgroup2" } else { typ };
        let source = m
            .source()
            .as_ref()
            .map_or_else(|| PathBuf::from(fstype), Clone::clone);
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(&source), &target, Some(fstype), flags, data)
            .map_err(|e| sys(format!("mount {fstype}"), e))?;
    }
    if !propagation.is_empty() {
        mount(NONE, &target, NONE, propagation, NONE)
            .map_err(|e| sys("set mount propagation", e))?;
    }
    Ok(())
}

pub(super) fn create_mount_point(target: &Path, dir: bool) -> Result<(), SetupError> {
    let created = if dir {
        fs::create_dir_all(target)
    } else {
        target.parent().map_or(Ok(()), fs::create_dir_all).and_then(
            |()| match fs::symlink_metadata(target) {
                Ok(_) => Ok(()),
                Err(_) => fs::File::create(target).map(drop),
            },
        )
    };
    created.map_err(|e| SetupError::internal(format!("create mount point {target:?}: {e}")))
}

/// `pivot_root` into `root` and detach the old root, so no path leads back out.
fn enter_root(root: &Path) -> Result<(), SetupError> {
    chdir(root).map_err(|e| sys("chdir into the rootfs", e))?;
    // pivot_root(".", ".") stacks the old root on top of the new one (runc's trick):
    // no directory for it is needed in the rootfs, and one umount removes it.
    // No move+chroot fallback: a chroot on top of the old root can be climbed out
    // of with CAP_SYS_CHROOT. The agent leaves the initramfs at boot
    // (init::switch_root) precisely so this works in the guest.
    pivot_root(".", ".").map_err(|errno| match errno {
        Errno::EINVAL => SetupError::internal(format!(
            "pivot_root: {errno} (the agent's root is not a mount point with a parent; is it still on the initramfs?)"
        )),
        _ => sys("pivot_root", errno),
    })?;
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(|e| sys("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| sys("unmount the old root", e))?;
    chdir("/").map_err(|e| sys("chdir /", e))
}

/// Hides `path`: an empty read-only tmpfs over a directory, `/dev/null` over a file.
fn mask(path: &Path) -> Result<(), SetupError> {
    let result = match fs::metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        ),
        Ok(_) => mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE),
    };
    result.map_err(|e| sys(format!("mask {path:?}"), e))
}

fn make_readonly(path: &Path) -> Result<(), SetupError> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(|e| sys(format!("bind {path:?} for read-only"), e))?;
    remount_readonly(path)
}

fn remount_readonly(path: &Path) -> Result<(), SetupError> {
    mount(
        NONE,
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        NONE,
    )
    .map_err(|e| sys(format!("remount {path:?} read-only"), e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn words(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| (*o).to_owned()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let (flags, propagation, data) = parse_options(&words(&[
            "nosuid", "ro", "mode=755", "rw", "rbind", "rslave", "size=1k",
        ]));
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        assert_eq!(data, "mode=755,size=1k");
    }

    #[test]
    fn targets_stay_under_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        fs::create_dir(root.join("etc")).expect("mkdir");
        symlink("/", root.join("escape")).expect("symlink");
        assert_eq!(
            target_under(&root, Path::new("/etc/x")).ok(),
            Some(root.join("etc/x"))
        );
        assert!(target_under(&root, Path::new("/escape/x")).is_err());
    }
}
