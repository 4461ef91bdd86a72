//! The start-up sweep: what a vesseld that died (kill -9) left behind, found
//! through the records in each pod's state dir and removed, unless the
//! pod's owner (the vesseld that made it) still runs.

use std::path::Path;
use std::time::Duration;

use super::config::{netns_name, VIRTIOFSD_SOCKET};
use super::{unmount_share, validate_name, OWNER_RECORD, SHARE_DIR};
use crate::cgroup::{PodCgroup, CGROUP_ROOT};
use crate::net::Netns;
use crate::process::{ProcessRecord, Supervised};
use crate::virtiofsd;
use crate::vm::vmm_record_path;

/// How long a swept VMM gets to shut its guest down on SIGTERM.
const VMM_GRACE: Duration = Duration::from_secs(15);

/// How long a swept virtiofsd gets after SIGTERM.
const VIRTIOFSD_GRACE: Duration = Duration::from_secs(5);

/// What the sweep did with one pod's state dir.
#[derive(Debug, Default)]
pub struct Swept {
    /// The pod's name (its state dir's name).
    pub pod: String,
    /// The pid of the live vesseld that owns it, if the pod was left alone.
    pub owned_by: Option<u32>,
    /// What was removed, in order.
    pub removed: Vec<String>,
    /// What could not be removed.
    pub errors: Vec<String>,
}

/// Removes every pod under `<run_dir>/pods` whose owner is gone: its VMM
/// and virtiofsd (adopted from their records and stopped), the share's
/// mount, its network namespace (and tap), its cgroup, its state dir.
pub async fn sweep(run_dir: &Path, state_root: &Path) -> Vec<Swept> {
    let Ok(entries) = std::fs::read_dir(run_dir.join("pods")) else {
        return Vec::new();
    };
    let mut dirs: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let mut swept = Vec::new();
    for dir in dirs {
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        // Not a pod name: not something vesseld made.
        if validate_name(&name).is_err() || !dir.is_dir() {
            continue;
        }
        let logs = state_root.join("pods").join(&name);
        swept.push(sweep_pod(&dir, &logs, name).await);
    }
    swept
}

/// Removes everything of pod `name` (as [`sweep`] does), whoever owns it:
/// for a vesseld that finds one of its own pods without a handle on it.
pub async fn sweep_one(run_dir: &Path, state_root: &Path, name: &str) -> Swept {
    let dir = run_dir.join("pods").join(name);
    let logs = state_root.join("pods").join(name);
    sweep_pod_owned(&dir, &logs, name.to_string(), true).await
}

async fn sweep_pod(dir: &Path, logs: &Path, pod: String) -> Swept {
    sweep_pod_owned(dir, logs, pod, false).await
}

async fn sweep_pod_owned(dir: &Path, logs: &Path, pod: String, ignore_owner: bool) -> Swept {
    let mut s = Swept {
        pod,
        ..Swept::default()
    };
    if ignore_owner {
        // The caller owns it.
    } else if let Ok(Some(owner)) = ProcessRecord::load(&dir.join(OWNER_RECORD)) {
        if let Ok(Some(live)) = Supervised::adopt(&owner) {
            s.owned_by = Some(live.pid());
            return s;
        }
    }
    let fs_record = virtiofsd::record_path(&dir.join(VIRTIOFSD_SOCKET));
    for (record, grace) in [
        (vmm_record_path(&dir.join(super::VM_DIR)), VMM_GRACE),
        (fs_record, VIRTIOFSD_GRACE),
    ] {
        match ProcessRecord::load(&record) {
            Ok(Some(r)) => match Supervised::adopt(&r) {
                Ok(Some(mut p)) => match p.stop(grace).await {
                    Ok(exit) => s
                        .removed
                        .push(format!("{} (pid {}): {exit}", r.role, r.pid)),
                    Err(e) => s.errors.push(e.to_string()),
                },
                Ok(None) => s
                    .removed
                    .push(format!("{} (pid {}) had already exited", r.role, r.pid)),
                Err(e) => s.errors.push(e.to_string()),
            },
            Ok(None) => {}
            Err(e) => s.errors.push(e.to_string()),
        }
    }
    let share = dir.join(SHARE_DIR);
    if share.exists() {
        match unmount_share(&share) {
            Ok(()) => s.removed.push(format!("share mount {}", share.display())),
            Err(e) => s.errors.push(e.to_string()),
        }
    }
    let netns = netns_name(&s.pod);
    match Netns::existing(&netns) {
        Ok(Some(ns)) => match ns.delete() {
            Ok(()) => s.removed.push(format!("network namespace {netns}")),
            Err(e) => s.errors.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => s.errors.push(e.to_string()),
    }
    let parent = super::recorded_cgroup_parent(dir).unwrap_or_else(|| super::CGROUP_PARENT.into());
    match PodCgroup::find(Path::new(CGROUP_ROOT), &parent, &s.pod) {
        Ok(Some(cg)) => match cg.remove().await {
            Ok(()) => s.removed.push("pod cgroup".to_string()),
            Err(e) => s.errors.push(e.to_string()),
        },
        Ok(None) => {}
        Err(e) => s.errors.push(e.to_string()),
    }
    // Only once nothing of the pod runs: the state dir holds its logs.
    if s.errors.is_empty() {
        for (what, d) in [("log dir", logs), ("state dir", dir)] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => s.removed.push(format!("{what} {}", d.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => s.errors.push(format!("{}: {e}", d.display())),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Output, SpawnSpec};

    #[tokio::test]
    async fn an_orphaned_pod_is_swept_and_an_owned_one_is_left() {
        let run = tempfile::tempdir().unwrap();
        let pods = run.path().join("pods");
        // An orphan: its owner record names a dead process, its "VMM" runs.
        let orphan = pods.join(format!("sweep-orphan-{}", std::process::id()));
        std::fs::create_dir_all(&orphan).unwrap();
        ProcessRecord::new("vesseld", u32::MAX - 1, 1, Vec::new())
            .save(&orphan.join(OWNER_RECORD))
            .unwrap();
        let mut vmm = SpawnSpec {
            role: "vessel-vmm",
            program: "/bin/sleep".into(),
            args: vec!["60".into()],
            output: Output::Null,
            fds: Vec::new(),
            namespaces: 0,
            cgroup_procs: Vec::new(),
        }
        .spawn()
        .unwrap();
        vmm.record(Vec::new())
            .save(&vmm_record_path(&orphan.join(crate::pod::VM_DIR)))
            .unwrap();
        // Owned by us, a live process: left alone.
        let owned = pods.join(format!("sweep-owned-{}", std::process::id()));
        std::fs::create_dir_all(&owned).unwrap();
        super::super::owner_record()
            .unwrap()
            .save(&owned.join(OWNER_RECORD))
            .unwrap();

        let swept = sweep(run.path(), &run.path().join("state")).await;
        assert_eq!(swept.len(), 2, "{swept:?}");
        let o = swept
            .iter()
            .find(|s| s.pod.starts_with("sweep-orphan"))
            .unwrap();
        assert!(o.errors.is_empty(), "{o:?}");
        assert!(
            o.removed.iter().any(|r| r.starts_with("vessel-vmm")),
            "{o:?}"
        );
        assert!(!orphan.exists());
        assert!(
            vmm.try_exit().unwrap().is_some(),
            "the orphan's VMM still runs"
        );
        let w = swept
            .iter()
            .find(|s| s.pod.starts_with("sweep-owned"))
            .unwrap();
        assert_eq!(w.owned_by, Some(std::process::id()));
        assert!(owned.exists());
    }
}
