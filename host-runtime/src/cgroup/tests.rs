use std::time::Duration;

use super::*;
use crate::process::{Output, SpawnSpec};

#[test]
fn names_must_stay_under_the_parent() {
    for bad in ["", "..", "a/b", "."] {
        let err = PodCgroup::create(Path::new(CGROUP_ROOT), "vessel-test", bad, 1 << 30);
        assert!(matches!(err, Err(CgroupError::BadName(_))), "{bad:?}");
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
    let cg = PodCgroup::create(root, "vessel-test", &name, 256 << 20).unwrap();
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
