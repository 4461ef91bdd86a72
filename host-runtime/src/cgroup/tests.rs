use std::time::Duration;

use super::*;
use crate::process::{Output, SpawnSpec};

#[test]
fn names_must_stay_under_the_parent() {
    for bad in ["", "..", "a/b", "."] {
        let err = PodCgroup::create(
            Path::new(CGROUP_ROOT),
            Path::new("vessel-test"),
            bad,
            1 << 30,
        );
        assert!(matches!(err, Err(CgroupError::BadName(_))), "{bad:?}");
    }
}

#[test]
fn parents_must_stay_under_the_root() {
    for bad in ["", "..", "a/../..", "/abs"] {
        let err = PodCgroup::create(Path::new(CGROUP_ROOT), Path::new(bad), "pod", 1 << 30);
        assert!(matches!(err, Err(CgroupError::BadParent(_))), "{bad:?}");
        let found = PodCgroup::find(Path::new(CGROUP_ROOT), Path::new(bad), "pod");
        assert!(matches!(found, Err(CgroupError::BadParent(_))), "{bad:?}");
    }
}

/// A parent two levels deep (a nested systemd slice) is made level by level.
#[test]
fn a_nested_parent_is_made() {
    let root = Path::new(CGROUP_ROOT);
    let top = format!("vessel-test-{}.slice", std::process::id());
    let parent = Path::new(&top).join(format!("{}-pods.slice", top.trim_end_matches(".slice")));
    let cg = PodCgroup::create(root, &parent, "pod", 256 << 20).unwrap();
    assert!(
        cg.dirs().iter().all(|d| d.ends_with(parent.join("pod"))),
        "{:?}",
        cg.dirs()
    );
    assert_eq!(
        PodCgroup::find(root, &parent, "pod")
            .unwrap()
            .map(|c| c.dirs().to_vec()),
        Some(cg.dirs().to_vec())
    );
    cg.remove_now().unwrap();
    for d in cg.dirs() {
        let _ = std::fs::remove_dir(d.parent().unwrap());
        let _ = std::fs::remove_dir(d.parent().unwrap().parent().unwrap());
    }
}

#[test]
fn no_hierarchy_is_named() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        detect(dir.path()),
        Err(CgroupError::NoHierarchy(_))
    ));
}

/// On this host's real cgroups (v1 on the development and CI machines, v2
/// in the nested test host): a process spawned into the pod cgroup is in
/// it before it runs, the limit is set, and the cgroup goes away after.
#[tokio::test]
async fn a_process_joins_the_pod_cgroup_and_the_cgroup_is_removed() {
    let root = Path::new(CGROUP_ROOT);
    let name = format!("cgroup-test-{}", std::process::id());
    let cg = PodCgroup::create(root, Path::new("vessel-test"), &name, 256 << 20).unwrap();
    assert_eq!(cg.memory_limit(), Some(256 << 20));
    let mut p = SpawnSpec {
        role: "process",
        program: "/bin/sleep".into(),
        args: vec!["30".into()],
        output: Output::Null,
        fds: Vec::new(),
        namespaces: 0,
        cgroup_procs: cg.procs_files().unwrap(),
    }
    .spawn()
    .unwrap();
    assert!(cg.contains(p.pid()), "{:?}", cg.dirs());
    // A cgroup with a process cannot go.
    assert!(cg.remove_now().is_err());
    p.stop(Duration::from_secs(5)).await.unwrap();
    cg.remove().await.unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} is left", d.display());
        // The test's parent too (a real one is shared by every pod).
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
}
