//! cgroup v2 for the pod and its containers.
//!
//! Layout under the hierarchy root (`/sys/fs/cgroup` in the guest, where PID 1
//! mounts cgroup2): `vessel/pod` holds the pod (its totals are the pod's
//! stats), and each container gets `vessel/pod/<container_id>`. The agent
//! itself stays in the root cgroup, outside the pod, so the pod's limits and
//! OOM kills never hit it. The controllers cpu, cpuset, memory, pids and
//! hugetlb are enabled down to the pod when the hierarchy offers them. Each
//! container's cgroup also gets a device program ([`devices`]) that allows
//! only the spec's device rules and the default devices.

mod container;
pub mod devices;
mod error;
pub mod files;
mod lazy;
mod notify;
pub mod resources;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

pub use container::{ContainerCgroup, PendingCgroup};
pub use error::CgroupError;
pub use lazy::LazyHierarchy;
pub use notify::FileWatch;

/// Where PID 1 mounts the unified hierarchy.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// `statfs` magic of cgroup2 (`CGROUP2_SUPER_MAGIC`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A controller the agent manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// cpu.weight, cpu.max.
    Cpu,
    /// cpuset.cpus, cpuset.mems.
    Cpuset,
    /// memory.max, memory.swap.max, memory.events.
    Memory,
    /// pids.max.
    Pids,
    /// hugetlb.<size>.max.
    Hugetlb,
}

impl Controller {
    /// Every controller the agent enables, in the order it enables them.
    pub const ALL: [Controller; 5] = [
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Pids,
        Controller::Hugetlb,
    ];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Hugetlb => "hugetlb",
        }
    }

    /// The controller of that name, if the agent manages it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Enables `controllers` for the children of `dir` in one write, which the
/// kernel applies at once: each write to `cgroup.subtree_control` waits for
/// RCU grace periods, so one write per controller cost a booting guest
/// hundreds of milliseconds. If the whole set is refused, each controller is
/// tried alone, so one the kernel refuses does not take the others with it.
fn enable(dir: &Path, controllers: &BTreeSet<Controller>, failed: &str) {
    if controllers.is_empty() {
        return;
    }
    let control = dir.join("cgroup.subtree_control");
    let all: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    if files::write(&control, &all.join(" ")).is_ok() {
        return;
    }
    for c in controllers {
        if let Err(err) = files::write(&control, &format!("+{c}")) {
            tracing::warn!(controller = %c, error = %err, "{failed}");
        }
    }
}

fn names(set: &BTreeSet<Controller>) -> String {
    if set.is_empty() {
        return "none".to_owned();
    }
    set.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ")
}

/// The agent's part of the unified hierarchy: the pod cgroup and its controllers.
#[derive(Debug)]
pub struct Hierarchy {
    root: PathBuf,
    pod: PathBuf,
    controllers: BTreeSet<Controller>,
}

impl Hierarchy {
    /// Checks that `root` is a cgroup2 mount, creates `vessel/pod` and enables
    /// what it can of [`Controller::ALL`] down to it (a controller the kernel or
    /// the parent lacks is logged and left out).
    pub fn setup(root: &Path) -> Result<Self, CgroupError> {
        let fs = nix::sys::statfs::statfs(root)
            .map_err(|e| CgroupError::io("statfs", root, e.into()))?;
        #[allow(clippy::unnecessary_cast)] // the field's type differs between libcs
        if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::Unavailable(format!(
                "{} is not a cgroup v2 (unified) hierarchy",
                root.display()
            )));
        }
        let vessel = root.join("vessel");
        let pod = vessel.join("pod");
        for dir in [&vessel, &pod] {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::io("mkdir", dir, e)),
            }
        }
        let offered = Self::read_controllers(&root.join("cgroup.controllers"))?;
        let wanted: BTreeSet<Controller> = Controller::ALL
            .into_iter()
            .filter(|c| offered.contains(c))
            .collect();
        for dir in [root, &vessel] {
            enable(dir, &wanted, "cannot enable a cgroup controller");
        }
        for c in Controller::ALL {
            if !offered.contains(&c) {
                tracing::warn!(controller = %c, root = %root.display(), "cgroup controller not offered by the kernel here");
            }
        }
        // The pod passes everything it has on to the containers.
        let controllers = Self::read_controllers(&pod.join("cgroup.controllers"))?;
        enable(
            &pod,
            &controllers,
            "cannot enable a cgroup controller for containers",
        );
        let controllers = Self::read_controllers(&pod.join("cgroup.subtree_control"))?;
        tracing::info!(root = %root.display(), controllers = %names(&controllers), "cgroups ready");
        Ok(Self {
            root: root.to_owned(),
            pod,
            controllers,
        })
    }

    fn read_controllers(path: &Path) -> Result<BTreeSet<Controller>, CgroupError> {
        Ok(files::read(path)?
            .split_whitespace()
            .filter_map(Controller::from_name)
            .collect())
    }

    /// The hierarchy root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pod's cgroup directory.
    pub fn pod(&self) -> &Path {
        &self.pod
    }

    /// The controllers containers get.
    pub fn controllers(&self) -> &BTreeSet<Controller> {
        &self.controllers
    }

    /// Fails with a message naming `field` unless every controller of `plan` is enabled.
    pub fn check(&self, plan: &resources::Plan) -> Result<(), CgroupError> {
        match plan
            .writes
            .iter()
            .find(|w| !self.controllers.contains(&w.controller))
        {
            None => Ok(()),
            Some(w) => Err(CgroupError::Unavailable(format!(
                "{} needs the {} cgroup controller, which this guest does not offer \
                 (enabled under {}: {})",
                w.field,
                w.controller,
                self.pod.display(),
                names(&self.controllers)
            ))),
        }
    }
}

/// The cgroup for a new container: `None` without a hierarchy, which is only
/// fine when the spec asks for no limits.
pub fn for_container(
    hierarchy: Option<&Hierarchy>,
    id: &str,
    spec: &oci_spec::runtime::Spec,
) -> Result<Option<PendingCgroup>, CgroupError> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let created = match hierarchy {
        Some(h) => ContainerCgroup::create(h, id, resources).map(Some),
        None => {
            tracing::warn!(container_id = %id, "no cgroup v2 hierarchy: the container gets no device program");
            let plan = match resources {
                Some(r) => resources::plan(r),
                None => Ok(resources::Plan::default()),
            };
            plan.and_then(|plan| match plan.writes.first() {
                None => Ok(None),
                Some(w) => Err(CgroupError::Unavailable(format!(
                    "{}: this agent has no cgroup v2 hierarchy to apply it to",
                    w.field
                ))),
            })
        }
    };
    created.map_err(|e| e.in_field("oci_spec_json."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_names_round_trip() {
        for c in Controller::ALL {
            assert_eq!(Controller::from_name(c.name()), Some(c));
        }
        assert_eq!(Controller::from_name("io"), None);
    }

    #[test]
    fn a_plain_directory_is_not_a_hierarchy() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Hierarchy::setup(dir.path()),
            Err(CgroupError::Unavailable(m)) if m.contains("not a cgroup v2")
        ));
    }
}
