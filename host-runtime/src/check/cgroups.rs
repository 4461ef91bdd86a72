//! cgroups: each pod's VMM and virtiofsd go into a cgroup of the pod with
//! a memory limit (`crate::cgroup`), so the memory controller is required;
//! pids and cpu are used where the host has them.

use std::path::Path;

use super::CheckResult;
use crate::cgroup::{detect, Version};

/// The controllers vessel uses; only memory is required.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The host's cgroup version and the controllers vessel can use under
/// `root` (as `cgroup::detect` sees it).
pub fn cgroups(root: &Path) -> CheckResult {
    const NAME: &str = "cgroups";
    match detect(root) {
        Err(e) => CheckResult::fail(
            NAME,
            e.to_string(),
            format!(
                "mount cgroup2 on {} (`mount -t cgroup2 none {0}`), or boot with \
                 systemd.unified_cgroup_hierarchy=1",
                root.display()
            ),
        ),
        Ok(Version::V2) => v2(root),
        Ok(Version::V1) => v1(root),
    }
}

fn words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn v2(root: &Path) -> CheckResult {
    const NAME: &str = "cgroups";
    let available = words(&root.join("cgroup.controllers"));
    let enabled = words(&root.join("cgroup.subtree_control"));
    let has = |list: &[String], c: &str| list.iter().any(|w| w == c);
    let missing: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !has(&available, c))
        .collect();
    let to_enable: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .collect();
    let mut detail = format!(
        "v2 at {}; available: {}; enabled for children (cgroup.subtree_control): {}",
        root.display(),
        available.join(" "),
        if enabled.is_empty() {
            "none".to_string()
        } else {
            enabled.join(" ")
        }
    );
    if missing.contains(&"memory") {
        return CheckResult::fail(
            NAME,
            format!("{detail}; no memory controller: a pod's memory limit cannot be set"),
            "boot with the memory controller enabled (remove cgroup_disable=memory from the \
             kernel command line)",
        );
    }
    if !to_enable.is_empty() {
        detail.push_str(&format!(
            "; vesseld enables {} itself for its pods' parent",
            to_enable.join(" ")
        ));
        // A cgroup namespace root that is not the host's (a container) may
        // hold processes; the kernel then refuses to enable controllers
        // for its children (the "no internal processes" rule).
        let nested = root.join("cgroup.type").exists();
        let busy = !std::fs::read_to_string(root.join("cgroup.procs"))
            .unwrap_or_default()
            .trim()
            .is_empty();
        if nested && busy {
            return CheckResult::fail(
                NAME,
                format!(
                    "{detail}, but {} is not the host's root cgroup and has processes, so \
                     the kernel refuses that",
                    root.display()
                ),
                format!(
                    "enable them before starting vesseld: move the processes into a child \
                     cgroup, then `echo '+{}' > {}`",
                    to_enable.join(" +"),
                    root.join("cgroup.subtree_control").display()
                ),
            );
        }
    }
    if !missing.is_empty() {
        return CheckResult::warn(
            NAME,
            format!(
                "{detail}; no {} controller: pods' host processes are not bounded by it",
                missing.join(", ")
            ),
            "enable the controller in the kernel (CONFIG_CGROUP_PIDS, CONFIG_CGROUP_SCHED) \
             and on the kernel command line",
        );
    }
    CheckResult::ok(NAME, detail)
}

fn v1(root: &Path) -> CheckResult {
    const NAME: &str = "cgroups";
    let (mounted, missing): (Vec<&str>, Vec<&str>) = CONTROLLERS
        .into_iter()
        .partition(|c| root.join(c).join("cgroup.procs").exists());
    let mut detail = format!(
        "v1 at {}; hierarchies vessel uses: {}",
        root.display(),
        mounted.join(" ")
    );
    if root.join("unified/cgroup.controllers").exists() {
        detail.push_str(" (hybrid: vessel does not use the cgroup2 hierarchy at unified/)");
    }
    if !missing.is_empty() {
        return CheckResult::warn(
            NAME,
            format!(
                "{detail}; {} not mounted: pods' host processes are not bounded by it",
                missing.join(", ")
            ),
            format!(
                "mount them (`mount -t cgroup -o pids cgroup {}/pids`), or move the host to \
                 cgroup v2",
                root.display()
            ),
        );
    }
    CheckResult::warn(
        NAME,
        format!(
            "{detail}; vessel works on v1, but Kubernetes has put cgroup v1 in maintenance \
             mode (1.31) and recent kubelets refuse v1 hosts unless `failCgroupV1: false`"
        ),
        "move the host to cgroup v2 (boot with systemd.unified_cgroup_hierarchy=1)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    fn write(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn no_hierarchy_fails() {
        let root = tempfile::tempdir().unwrap();
        let r = cgroups(root.path());
        assert_eq!(r.status, Status::Fail);
        assert!(r.fix.contains("cgroup2"));
    }

    #[test]
    fn v2_reports_its_controllers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "cgroup.controllers",
            "cpuset cpu io memory hugetlb pids\n",
        );
        write(r, "cgroup.subtree_control", "cpu memory pids\n");
        let ok = cgroups(r);
        assert_eq!(ok.status, Status::Ok, "{ok:?}");
        assert!(ok
            .detail
            .contains("enabled for children (cgroup.subtree_control): cpu memory pids"));

        // Available but not enabled: vesseld enables them at the real root.
        write(r, "cgroup.subtree_control", "");
        let r2 = cgroups(r);
        assert_eq!(r2.status, Status::Ok);
        assert!(
            r2.detail.contains("vesseld enables memory pids cpu itself"),
            "{r2:?}"
        );

        // ... but not in a container's cgroup that has processes.
        write(r, "cgroup.type", "domain\n");
        write(r, "cgroup.procs", "1\n42\n");
        let busy = cgroups(r);
        assert_eq!(busy.status, Status::Fail);
        assert!(busy.fix.contains("+memory +pids +cpu"), "{busy:?}");

        // No pids controller: a warning; no memory: a failure.
        write(r, "cgroup.procs", "");
        write(r, "cgroup.controllers", "cpu memory\n");
        write(r, "cgroup.subtree_control", "cpu memory\n");
        assert_eq!(cgroups(r).status, Status::Warn);
        write(r, "cgroup.controllers", "cpu pids\n");
        let no_memory = cgroups(r);
        assert_eq!(no_memory.status, Status::Fail);
        assert!(no_memory.detail.contains("no memory controller"));
    }

    #[test]
    fn v1_reports_its_hierarchies_and_warns() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "memory/cgroup.procs", "");
        write(r, "cpu/cgroup.procs", "");
        let partial = cgroups(r);
        assert_eq!(partial.status, Status::Warn);
        assert!(partial.detail.contains("pids not mounted"), "{partial:?}");
        write(r, "pids/cgroup.procs", "");
        write(r, "unified/cgroup.controllers", "");
        let full = cgroups(r);
        assert_eq!(full.status, Status::Warn);
        assert!(full.detail.contains("memory pids cpu (hybrid"), "{full:?}");
        assert!(full.fix.contains("cgroup v2"));
    }
}
