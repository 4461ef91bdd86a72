//! Where pod cgroups go: `cgroup.parent` of vesseld's configuration, a
//! systemd slice (`vessel.slice`, `a-b.slice`) or an absolute cgroupfs path
//! (`/vessel`), as a path relative to a hierarchy's root.
//!
//! A slice expands as systemd lays slices out (`a-b.slice` is
//! `a.slice/a-b.slice`): vessel makes the directories itself (the cgroupfs
//! way) but at the place the systemd driver would use, so the kubelet's and
//! the operator's view of the tree match.

use std::path::{Component, Path, PathBuf};

/// A `cgroup.parent` value that names no place under the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?}: {why}")]
pub struct BadParent {
    /// The value.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The relative path of the cgroup that `parent` names.
pub fn parent_path(parent: &str) -> Result<PathBuf, BadParent> {
    let bad = |why| BadParent {
        value: parent.to_string(),
        why,
    };
    if let Some(path) = parent.strip_prefix('/') {
        if parent.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let rel = Path::new(path);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad("an absolute cgroup path must not hold '.' or '..'"));
        }
        if rel.as_os_str().is_empty() {
            return Err(bad("the cgroup root itself cannot hold pods"));
        }
        return Ok(rel.to_path_buf());
    }
    let Some(name) = parent.strip_suffix(".slice") else {
        return Err(bad(
            "neither a systemd slice (NAME.slice) nor an absolute cgroup path",
        ));
    };
    if name == "-" {
        return Err(bad("the root slice cannot hold pods"));
    }
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Err(bad("a slice name is one word without '/'"));
    }
    let parts: Vec<&str> = name.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("a slice name has no empty '-' parts"));
    }
    let mut path = PathBuf::new();
    for i in 1..=parts.len() {
        path.push(format!("{}.slice", parts[..i].join("-")));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::parent_path;
    use std::path::Path;

    #[test]
    fn slices_expand_as_systemd_lays_them_out() {
        assert_eq!(
            parent_path("vessel.slice").unwrap(),
            Path::new("vessel.slice")
        );
        assert_eq!(
            parent_path("kubepods-vessel.slice").unwrap(),
            Path::new("kubepods.slice/kubepods-vessel.slice")
        );
        assert_eq!(parent_path("/vessel").unwrap(), Path::new("vessel"));
        assert_eq!(parent_path("/a/b/").unwrap(), Path::new("a/b"));
    }

    #[test]
    fn values_that_leave_or_are_the_root_are_refused() {
        for bad in [
            "/",
            "/a/../b",
            "/./a",
            "vessel",
            "-.slice",
            ".slice",
            "a--b.slice",
            "a/b.slice",
            "a b.slice",
            "",
        ] {
            assert!(parent_path(bad).is_err(), "{bad:?}");
        }
    }
}
