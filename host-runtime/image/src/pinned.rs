//! Pinned images: the ones the operator lists in `[images] pinned`, reported
//! with `pinned = true` so that the kubelet's image garbage collector keeps
//! them (containerd pins its sandbox image; CRI-O has `pinned_images`).

use crate::reference::ImageRef;

/// The operator's list, normalized once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedImages {
    /// Whole names (`docker.io/library/busybox:1.36`, `...@sha256:...`) and ids.
    exact: Vec<String>,
    /// Name prefixes, from entries that end in `*` (`registry.k8s.io/pause*`).
    prefixes: Vec<String>,
}

impl PinnedImages {
    /// Normalizes `entries` as pulls do (`busybox` → `docker.io/library/busybox:latest`,
    /// names without a registry go to `default_registry`); an entry ending in `*`
    /// matches every name that starts with the rest, as written. An entry that is
    /// not a reference is an error naming it.
    pub fn new(entries: &[String], default_registry: &str) -> crate::error::Result<Self> {
        let mut pinned = Self::default();
        for entry in entries {
            if let Some(prefix) = entry.strip_suffix('*') {
                pinned.prefixes.push(prefix.to_string());
            } else if entry.starts_with("sha256:") {
                pinned.exact.push(entry.clone());
            } else {
                let r = ImageRef::parse_with_default(entry, default_registry)?;
                pinned.exact.push(r.to_string());
            }
        }
        Ok(pinned)
    }

    /// Whether the image with `id` and `names` is pinned.
    pub fn matches(&self, id: &str, names: &[String]) -> bool {
        self.exact.iter().any(|e| e == id)
            || names.iter().any(|n| {
                self.exact.iter().any(|e| e == n)
                    || self.prefixes.iter().any(|p| n.starts_with(p.as_str()))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(entries: &[&str]) -> PinnedImages {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        PinnedImages::new(&entries, "docker.io").expect("valid entries")
    }

    #[test]
    fn short_names_are_normalized_as_pulls_are() {
        let p = pinned(&["busybox"]);
        let names = vec!["docker.io/library/busybox:latest".to_string()];
        assert!(p.matches("sha256:1", &names));
        assert!(!p.matches("sha256:1", &["docker.io/library/busybox:1.36".to_string()]));
    }

    #[test]
    fn prefixes_ids_and_digests_match() {
        let p = pinned(&["registry.k8s.io/pause*", "sha256:abc"]);
        assert!(p.matches("sha256:2", &["registry.k8s.io/pause:3.10".to_string()]));
        assert!(p.matches("sha256:abc", &[]));
        assert!(!p.matches("sha256:2", &["docker.io/library/pause:3.10".to_string()]));
    }

    #[test]
    fn a_bad_entry_is_an_error_naming_it() {
        let err = PinnedImages::new(&["UPPER/Case".to_string()], "docker.io").unwrap_err();
        assert!(err.to_string().contains("UPPER/Case"), "{err}");
    }
}
