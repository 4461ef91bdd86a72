//! Joining or creating the container's namespaces.

use std::fs::File;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{sys, SetupError};

fn flag(typ: LinuxNamespaceType) -> Option<CloneFlags> {
    Some(match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        // Rejected by validation; listed so a new type is a compile-time decision.
        LinuxNamespaceType::User | LinuxNamespaceType::Time => return None,
    })
}

/// Joins the namespaces that have a path and unshares the rest.
// Mount, UTS, IPC and pid namespaces are always new unless the spec joins one:
// the rootfs, hostname and process isolation depend on them.
pub fn enter(spec: &Spec) -> Result<(), SetupError> {
    let mut new = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    for ns in namespaces.into_iter().flatten() {
        let Some(flag) = flag(ns.typ()) else {
            return Err(SetupError::invalid(format!(
                "{} namespaces are not supported",
                ns.typ()
            )));
        };
        match ns.path() {
            Some(path) => {
                let file = File::open(path).map_err(|e| {
                    SetupError::internal(format!("open {} namespace {path:?}: {e}", ns.typ()))
                })?;
                setns(&file, flag)
                    .map_err(|e| sys(format!("join {} namespace {path:?}", ns.typ()), e))?;
                new.remove(flag);
            }
            None => new.insert(flag),
        }
    }
    unshare(new).map_err(|e| sys("unshare the container namespaces", e))
}
