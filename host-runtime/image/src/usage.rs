//! Disk usage of a directory tree that a guest may be writing (a container's
//! writable layer is its virtio-fs rootfs): walked by file descriptor, each
//! directory opened beneath its parent with `openat2` and no symlink
//! followed, so a directory swapped for a symlink mid-walk cannot lead the
//! walk out of the tree; one filesystem only; and bounded, because the
//! guest decides how many entries and how deep.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::fsat;

/// What a walk may cost: inodes counted and directory depth (each level
/// holds one open directory).
#[derive(Debug, Clone, Copy)]
pub struct UsageLimits {
    /// Stop counting after this many inodes.
    pub max_inodes: u64,
    /// Do not descend deeper than this.
    pub max_depth: usize,
}

impl Default for UsageLimits {
    fn default() -> Self {
        // A million inodes is a few seconds of walking; overlay paths end
        // at PATH_MAX long before 256 levels of real names.
        Self {
            max_inodes: 1_000_000,
            max_depth: 256,
        }
    }
}

/// Bytes allocated and inodes under a tree; `truncated` when a limit
/// stopped the walk (the figures are then lower bounds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeUsage {
    /// Bytes allocated (blocks × 512).
    pub bytes: u64,
    /// Inodes, hard links counted once.
    pub inodes: u64,
    /// A limit was reached.
    pub truncated: bool,
}

/// Usage of the tree at `dir` (the directory itself included), leaving out
/// the top-level entry named `skip`.
pub fn tree_usage(dir: &Path, skip: Option<&OsStr>, limits: UsageLimits) -> io::Result<TreeUsage> {
    let root = std::fs::File::open(dir)?;
    let st = fstat(root.as_fd())?;
    let mut walk = Walk {
        dev: st.st_dev,
        seen: HashSet::new(),
        usage: TreeUsage::default(),
        limits,
    };
    walk.count(&st);
    walk.dir(OwnedFd::from(root), skip, 0)?;
    Ok(walk.usage)
}

struct Walk {
    dev: libc::dev_t,
    seen: HashSet<(libc::dev_t, libc::ino_t)>,
    usage: TreeUsage,
    limits: UsageLimits,
}

impl Walk {
    /// Counts an inode once; false when the inode limit is reached.
    fn count(&mut self, st: &libc::stat) -> bool {
        if self.usage.inodes >= self.limits.max_inodes {
            self.usage.truncated = true;
            return false;
        }
        if self.seen.insert((st.st_dev, st.st_ino)) {
            self.usage.bytes += st.st_blocks as u64 * 512;
            self.usage.inodes += 1;
        }
        true
    }

    fn dir(&mut self, fd: OwnedFd, skip: Option<&OsStr>, depth: usize) -> io::Result<()> {
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
        let dir_fd = listing.as_raw_fd();
        // Names first: the listing's fd stays valid while children are opened.
        let names: Vec<Vec<u8>> = listing
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        // SAFETY: `listing` owns dir_fd and outlives this borrow.
        let parent = unsafe { std::os::fd::BorrowedFd::borrow_raw(dir_fd) };
        for name in names {
            let name = OsStr::from_bytes(&name);
            if skip == Some(name) {
                continue;
            }
            // Gone meanwhile, or not ours to see: not counted.
            let Ok(st) = fsat::lstat(parent, name) else {
                continue;
            };
            if st.st_dev != self.dev {
                continue;
            }
            if !self.count(&st) {
                return Ok(());
            }
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                if depth + 1 >= self.limits.max_depth {
                    self.usage.truncated = true;
                    continue;
                }
                // Beneath the parent, no symlinks: a swapped entry fails here.
                if let Ok(child) = fsat::open_dir(parent, name) {
                    self.dir(child, None, depth + 1)?;
                }
            }
        }
        Ok(())
    }
}

fn fstat(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_tree_once_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 1 << 20]).unwrap();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), vec![2u8; 64 << 10]).unwrap();
        std::fs::hard_link(tree.join("a/b/file"), tree.join("a/link")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("big"), tree.join("bigfile")).unwrap();

        let u = tree_usage(&tree, None, UsageLimits::default()).unwrap();
        // tree, a, b, file (= link), escape, bigfile.
        assert_eq!(u.inodes, 6, "{u:?}");
        assert!(u.bytes >= 64 << 10 && u.bytes < 1 << 20, "{u:?}");
        assert!(!u.truncated);

        let skipped = tree_usage(&tree, Some(OsStr::new("a")), UsageLimits::default()).unwrap();
        assert_eq!(skipped.inodes, 2, "{skipped:?}");
    }

    #[test]
    fn limits_stop_the_walk_and_say_so() {
        let tmp = tempfile::tempdir().unwrap();
        let mut deep = tmp.path().to_path_buf();
        for i in 0..10 {
            deep = deep.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        for i in 0..20 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"x").unwrap();
        }
        let few = UsageLimits {
            max_inodes: 5,
            max_depth: 256,
        };
        let u = tree_usage(tmp.path(), None, few).unwrap();
        assert_eq!((u.inodes, u.truncated), (5, true));
        let shallow = UsageLimits {
            max_inodes: 1000,
            max_depth: 3,
        };
        let u = tree_usage(tmp.path(), None, shallow).unwrap();
        assert!(u.truncated, "{u:?}");
        // The top, 20 files, d0, d1, d2 (d2's children are not walked).
        assert_eq!(u.inodes, 24, "{u:?}");
    }
}
