//! The pod's hierarchy, set up in the background while the agent already
//! serves: enabling controllers waits for RCU grace periods, which in a
//! booting guest is time the host would otherwise spend waiting for the
//! agent to listen. What needs cgroups waits here instead.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::OnceCell;

use super::Hierarchy;

/// A [`Hierarchy`] under a root, set up once, by the first caller of [`LazyHierarchy::get`].
#[derive(Debug, Default)]
pub struct LazyHierarchy {
    /// `None`: containers get no cgroups.
    root: Option<PathBuf>,
    hierarchy: OnceCell<Option<Arc<Hierarchy>>>,
}

impl LazyHierarchy {
    /// The hierarchy under `root`, not set up yet.
    pub fn under(root: PathBuf) -> Self {
        Self {
            root: Some(root),
            hierarchy: OnceCell::new(),
        }
    }

    /// The hierarchy, after setting it up if this is the first call (later
    /// callers wait for that); `None` without one, or if setup failed
    /// (logged once: containers then get no cgroups).
    pub async fn get(&self) -> Option<Arc<Hierarchy>> {
        self.hierarchy
            .get_or_init(|| async {
                let root = self.root.clone()?;
                match tokio::task::spawn_blocking(move || Hierarchy::setup(&root)).await {
                    Ok(Ok(hierarchy)) => Some(Arc::new(hierarchy)),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "containers get no cgroups");
                        None
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cgroup setup did not finish: containers get no cgroups");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_root_there_is_no_hierarchy() {
        assert!(LazyHierarchy::default().get().await.is_none());
    }

    #[tokio::test]
    async fn a_failed_setup_is_remembered_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lazy = LazyHierarchy::under(dir.path().to_owned());
        assert!(lazy.get().await.is_none());
        // Set up once: the second call does not try again (nothing created).
        assert!(lazy.get().await.is_none());
        assert!(!dir.path().join("vessel").exists());
    }
}
