//! The container's namespaces. Entries carry no path: the agent puts the
//! pod's network, IPC and UTS namespaces (and its pid namespace when the pod
//! shares one) in their place (docs/agent-api.md, "The pod's namespaces").

use k8s_cri::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::SpecError;

const FIELD: &str = "linux.security_context.namespace_options";

/// Whether the pod shares one pid namespace among its containers
/// (`PodSandboxConfig.linux.security_context.namespace_options.pid` is
/// `POD`, the protobuf default, as crictl sends it).
pub fn pod_shares_pid(sandbox: &PodSandboxConfig) -> bool {
    let pid = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref())
        .map_or(0, |ns| ns.pid);
    pid == NamespaceMode::Pod as i32
}

/// The namespace entries, as containerd's `WithPodNamespaces` lays them out
/// (the pod's network, IPC and UTS; pid per container or the pod's; own
/// mount; a cgroup namespace unless privileged). Rejected: the node's
/// namespaces (a pod is a VM: it cannot join the host's), `TARGET` pid
/// namespaces (ephemeral containers; not yet), and a container pid
/// namespace in a pod that shares one (the pod decides it at `RunPodSandbox`).
pub fn build(
    options: Option<&NamespaceOption>,
    sandbox: &PodSandboxConfig,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let default = NamespaceOption::default();
    let options = options.unwrap_or(&default);
    for (name, mode) in [
        ("network", options.network),
        ("pid", options.pid),
        ("ipc", options.ipc),
    ] {
        match NamespaceMode::try_from(mode) {
            Ok(NamespaceMode::Node) => {
                return Err(SpecError::invalid(
                    format!("{FIELD}.{name}"),
                    "NODE is not supported: vessel runs every pod in its own VM, which cannot \
                     share the node's namespaces",
                ))
            }
            Ok(NamespaceMode::Target) if name == "pid" => {
                return Err(SpecError::invalid(
                    format!("{FIELD}.pid"),
                    "TARGET (another container's pid namespace) is not supported yet",
                ))
            }
            Ok(NamespaceMode::Target) | Err(_) => {
                return Err(SpecError::invalid(
                    format!("{FIELD}.{name}"),
                    format!("unsupported namespace mode {mode}"),
                ))
            }
            Ok(NamespaceMode::Pod | NamespaceMode::Container) => {}
        }
    }
    // The kubelet sends NODE for pods with hostUsers (the default) and POD
    // with id mappings for hostUsers: false.
    if options
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode != NamespaceMode::Node as i32)
    {
        return Err(SpecError::invalid(
            format!("{FIELD}.userns_options"),
            "user namespaces are not supported (hostUsers: false); the pod's VM is its boundary",
        ));
    }
    // POD in a pod without a shared pid namespace gives the container its
    // own, as the pod has no other (containerd would put it with the pause
    // process). CONTAINER in a pod that shares one cannot be honoured: the
    // agent puts every container in the pod's.
    if options.pid == NamespaceMode::Container as i32 && pod_shares_pid(sandbox) {
        return Err(SpecError::invalid(
            format!("{FIELD}.pid"),
            "is CONTAINER, but the pod sandbox shares one pid namespace (POD)",
        ));
    }
    let mut types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ];
    // containerd hides the host's cgroups behind a namespace, except for privileged containers.
    if !privileged {
        types.push(LinuxNamespaceType::Cgroup);
    }
    types
        .into_iter()
        .map(|typ| Ok(LinuxNamespaceBuilder::default().typ(typ).build()?))
        .collect()
}
