//! Users and groups by name, resolved in the image's `/etc/passwd` and
//! `/etc/group` as runc and containerd do.
//!
//! The files are parsed here rather than with libc's `getpwnam`: that reads the
//! agent's own `/etc` (not the image's), goes through NSS, and does not fit the
//! static agent. The image is untrusted, so files are opened with `openat2`
//! resolved inside the rootfs (symlinks cannot leave it), must be regular
//! files, are read up to [`MAX_FILE_LEN`], and malformed lines are ignored.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use super::error::EngineError;
use crate::proto::RunAsUser;

/// Largest `/etc/passwd` or `/etc/group` read from an image.
pub const MAX_FILE_LEN: u64 = 4 << 20;

/// Most supplementary groups a user gets from `/etc/group` (the kernel's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65536;

/// A user as the container process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Groups of `/etc/group` that list the user, without the primary gid.
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd`, if the user has an entry.
    pub home: Option<String>,
}

/// Why a user or group could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The user is not in `/etc/passwd` (or there is none).
    #[error("user {0:?}: {1}")]
    User(String, String),
    /// The group is not in `/etc/group` (or there is none).
    #[error("group {0:?}: {1}")]
    Group(String, String),
}

impl UserError {
    /// Which of the two inputs was bad: `"user"` or `"group"`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::User(..) => "user",
            Self::Group(..) => "group",
        }
    }
}

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Lines of `name:x:uid:gid[:gecos:home:shell]`; others are skipped.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let name = *fields.first()?;
            // Comments and NIS compat lines (`+`, `-`) are not users.
            if name.is_empty() || name.starts_with(['#', '+', '-']) || fields.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: name.to_owned(),
                uid: fields[2].trim().parse().ok()?,
                gid: fields[3].trim().parse().ok()?,
                home: fields.get(5).map(|h| (*h).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Lines of `name:x:gid[:member,member]`; others are skipped.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let name = *fields.first()?;
            if name.is_empty() || name.starts_with(['#', '+', '-']) || fields.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: name.to_owned(),
                gid: fields[2].trim().parse().ok()?,
                members: fields
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `path` (relative to the image root) from inside `rootfs`; `Ok(None)` if it does not exist.
fn read_in_root(rootfs: &Path, path: &str) -> Result<Option<String>, String> {
    let root: OwnedFd = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open the rootfs: {e}"))?;
    // NONBLOCK: a FIFO planted at the path must not hang the agent.
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(&root, path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("open /{path} in the image: {e}")),
    };
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| format!("stat /{path} in the image: {e}"))?;
    if !meta.is_file() {
        return Err(format!("/{path} in the image is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read /{path} in the image: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(format!(
            "/{path} in the image is larger than {MAX_FILE_LEN} bytes"
        ));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn numeric(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Resolves `user` (a name or numeric uid) and `group` (a name, a numeric gid,
/// or empty for the user's primary group) in the image at `rootfs`, which may
/// also be a `/proc/<pid>/root` of a running container.
///
/// A numeric uid needs no passwd entry (its gid is then 0, as in containerd); a
/// name must be in `/etc/passwd` or `/etc/group`. Supplementary groups are every
/// group of `/etc/group` that lists the user's name.
pub fn resolve_user(rootfs: &Path, user: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_in_root(rootfs, "etc/passwd");
    let entry = match numeric(user) {
        // The entry of a numeric uid is best effort: it only adds groups and a home.
        Some(uid) => passwd
            .ok()
            .flatten()
            .and_then(|text| parse_passwd(&text).into_iter().find(|e| e.uid == uid)),
        None => {
            let text = passwd
                .map_err(|e| UserError::User(user.to_owned(), e))?
                .ok_or_else(|| {
                    UserError::User(user.to_owned(), "the image has no /etc/passwd".into())
                })?;
            let found = parse_passwd(&text).into_iter().find(|e| e.name == user);
            Some(found.ok_or_else(|| {
                UserError::User(
                    user.to_owned(),
                    "not found in the image's /etc/passwd".into(),
                )
            })?)
        }
    };
    let uid = numeric(user).or(entry.as_ref().map(|e| e.uid)).unwrap_or(0);
    let groups = read_in_root(rootfs, "etc/group");
    let gid = if group.is_empty() {
        entry.as_ref().map_or(0, |e| e.gid)
    } else if let Some(gid) = numeric(group) {
        gid
    } else {
        let text = groups
            .as_ref()
            .map_err(|e| UserError::Group(group.to_owned(), e.clone()))?
            .as_ref()
            .ok_or_else(|| {
                UserError::Group(group.to_owned(), "the image has no /etc/group".into())
            })?;
        parse_group(text)
            .into_iter()
            .find(|g| g.name == group)
            .map(|g| g.gid)
            .ok_or_else(|| {
                UserError::Group(
                    group.to_owned(),
                    "not found in the image's /etc/group".into(),
                )
            })?
    };
    let mut additional_gids = Vec::new();
    if let (Some(entry), Ok(Some(text))) = (&entry, &groups) {
        for g in parse_group(text) {
            if g.gid != gid
                && !additional_gids.contains(&g.gid)
                && g.members.contains(&entry.name)
                && additional_gids.len() < MAX_GROUPS
            {
                additional_gids.push(g.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|e| e.home).filter(|h| !h.is_empty()),
    })
}

/// Applies `run_as` (field `run_as` of a request) to the spec's `process.user`,
/// and sets `HOME` from the passwd entry of the final uid when the spec's env
/// lacks it (`/` without an entry), as runc does.
pub fn apply_to_spec(
    spec: &mut Spec,
    rootfs: &Path,
    run_as: Option<&RunAsUser>,
) -> Result<(), EngineError> {
    let Some(process) = spec.process_mut().as_mut() else {
        return Ok(());
    };
    let run_as = run_as.filter(|r| !r.user.is_empty() || !r.group.is_empty());
    let mut user = process.user().clone();
    let resolved = match run_as {
        Some(r) => {
            // An empty `user` keeps the spec's uid (and looks it up for groups and HOME).
            let name = if r.user.is_empty() {
                user.uid().to_string()
            } else {
                r.user.clone()
            };
            let group = if r.group.is_empty() && r.user.is_empty() {
                user.gid().to_string()
            } else {
                r.group.clone()
            };
            let resolved = resolve_user(rootfs, &name, &group)
                .map_err(|e| EngineError::InvalidArgument(format!("run_as.{}: {e}", e.field())))?;
            user.set_uid(resolved.uid);
            user.set_gid(resolved.gid);
            let mut gids = user.additional_gids().clone().unwrap_or_default();
            for gid in &resolved.additional_gids {
                if !gids.contains(gid) {
                    gids.push(*gid);
                }
            }
            user.set_additional_gids((!gids.is_empty()).then_some(gids));
            process.set_user(user);
            Some(resolved)
        }
        None => None,
    };
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = match resolved {
            Some(r) => r.home,
            None => {
                let uid = process.user().uid().to_string();
                resolve_user(rootfs, &uid, "0").ok().and_then(|r| r.home)
            }
        };
        env.push(format!("HOME={}", home.as_deref().unwrap_or("/")));
        process.set_env(Some(env));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        broken line\n\
        +nis\n\
        web:x:1000:1000:Web:/home/web:/bin/sh\n\
        bad:x:notanumber:1:::\n\
        short:x:1001:1001\n";
    const GROUP: &str = "root:x:0:\n\
        web:x:1000:\n\
        audio:x:29:web,other\n\
        video:x:44: other , web \n\
        garbage\n\
        staff:x:50:\n";

    fn image(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("mkdir");
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).expect("passwd");
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).expect("group");
        }
        dir
    }

    #[test]
    fn names_resolve_with_groups_and_home() {
        let dir = image(Some(PASSWD), Some(GROUP));
        let user = resolve_user(dir.path(), "web", "").expect("web");
        assert_eq!(
            user,
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![29, 44],
                home: Some("/home/web".into()),
            }
        );
        // Numeric uid with an entry gets the same groups; a group name sets the gid.
        let user = resolve_user(dir.path(), "1000", "staff").expect("1000");
        assert_eq!((user.uid, user.gid), (1000, 50));
        assert_eq!(user.additional_gids, [29, 44]);
        // A numeric uid without an entry: gid 0, no groups, no home.
        let user = resolve_user(dir.path(), "4242", "").expect("4242");
        assert_eq!((user.uid, user.gid, user.home), (4242, 0, None));
        let user = resolve_user(dir.path(), "short", "7").expect("short");
        assert_eq!((user.uid, user.gid, user.home), (1001, 7, None));
    }

    #[test]
    fn unknown_names_and_missing_files_are_errors() {
        let dir = image(Some(PASSWD), Some(GROUP));
        let err = resolve_user(dir.path(), "nobody", "").expect_err("unknown user");
        assert_eq!(err.field(), "user");
        let err = resolve_user(dir.path(), "web", "wheel").expect_err("unknown group");
        assert_eq!(err.field(), "group");
        assert!(err.to_string().contains("wheel"), "{err}");
        let dir = image(None, None);
        let err = resolve_user(dir.path(), "web", "").expect_err("no passwd");
        assert!(err.to_string().contains("no /etc/passwd"), "{err}");
        assert!(resolve_user(dir.path(), "0", "0").is_ok());
        let err = resolve_user(dir.path(), "0", "web").expect_err("no group file");
        assert!(err.to_string().contains("no /etc/group"), "{err}");
    }

    #[test]
    fn symlinks_stay_inside_the_image() {
        let dir = image(None, None);
        let etc = dir.path().join("etc");
        std::fs::write(etc.join("passwd.image"), "root:x:0:0:root:/img:/bin/sh\n").expect("write");
        // Absolute links and `..` past the root are resolved inside the image.
        std::os::unix::fs::symlink("/../../../../etc/passwd.image", etc.join("passwd"))
            .expect("ln");
        let user = resolve_user(dir.path(), "root", "").expect("root");
        assert_eq!(user.home.as_deref(), Some("/img"));
        std::fs::remove_file(etc.join("passwd")).expect("rm");
        std::os::unix::fs::symlink("/proc/self/root/etc/passwd", etc.join("passwd")).expect("ln");
        let err = resolve_user(dir.path(), "root", "").expect_err("escaped the rootfs");
        assert!(err.to_string().contains("no /etc/passwd"), "{err}");
    }

    #[test]
    fn special_and_huge_files_are_refused() {
        let dir = image(None, None);
        nix::unistd::mkfifo(
            &dir.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = resolve_user(dir.path(), "root", "").expect_err("fifo");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = image(None, None);
        let file = File::create(dir.path().join("etc/passwd")).expect("create");
        file.set_len(MAX_FILE_LEN + 1).expect("truncate");
        let err = resolve_user(dir.path(), "root", "").expect_err("huge");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn apply_sets_ids_groups_and_home() {
        let dir = image(Some(PASSWD), Some(GROUP));
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut().as_mut() {
            p.set_env(Some(vec!["PATH=/bin".into()]));
            let mut u = p.user().clone();
            u.set_additional_gids(Some(vec![5]));
            p.set_user(u);
        }
        let run_as = RunAsUser {
            user: "web".into(),
            group: String::new(),
        };
        apply_to_spec(&mut spec, dir.path(), Some(&run_as)).expect("apply");
        let process = spec.process().as_ref().expect("process");
        assert_eq!((process.user().uid(), process.user().gid()), (1000, 1000));
        assert_eq!(
            process.user().additional_gids().as_deref(),
            Some(&[5, 29, 44][..])
        );
        assert!(process
            .env()
            .iter()
            .flatten()
            .any(|e| e == "HOME=/home/web"));

        // Without run_as: ids stay, HOME comes from the uid's entry.
        let mut spec = Spec::default();
        if let Some(p) = spec.process_mut().as_mut() {
            p.set_env(Some(vec![]));
        }
        apply_to_spec(&mut spec, dir.path(), None).expect("apply");
        let env = spec.process().as_ref().and_then(|p| p.env().clone());
        assert_eq!(env, Some(vec!["HOME=/root".to_owned()]));

        let bad = RunAsUser {
            user: "ghost".into(),
            group: String::new(),
        };
        let err = apply_to_spec(&mut Spec::default(), dir.path(), Some(&bad)).expect_err("ghost");
        assert!(
            matches!(&err, EngineError::InvalidArgument(m) if m.starts_with("run_as.user")),
            "{err}"
        );
    }
}
