//! The OCI runtime spec of a CRI container, built as containerd's CRI plugin
//! builds it (`container_create_linux.go`, `opts/spec_linux.go`), for the
//! agent's `Containers.Create` (docs/agent-api.md).
//!
//! Inputs: the CRI `ContainerConfig` and `PodSandboxConfig`, the image's
//! config ([`ImageConfig`]), what the agent's `Sandbox.Setup` answered
//! (`SandboxInfo`: hostname, the pod's hosts/hostname/resolv.conf files in
//! the guest) and a [`HostPathMapper`] that turns the kubelet's host paths
//! into guest paths. Output: the spec and the user for the agent to resolve
//! in the image ([`ContainerSpec::run_as`]).
//!
//! Where vessel differs from containerd, because the pod is a VM: the node's
//! namespaces and mount propagation from the host are refused; host devices
//! are created in the guest by number; AppArmor and SELinux are ignored (the
//! guest has neither); the pod's sysctls are applied by `Sandbox.Setup`, not
//! per container; `/dev/shm` is per container.

mod capabilities;
mod devices;
mod error;
mod image;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{
    LinuxBuilder, Mount, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use vessel_agent_api::proto::{RunAsUser, SandboxInfo};

pub use capabilities::{ALL as ALL_CAPABILITIES, DEFAULT as DEFAULT_CAPABILITIES};
pub use error::SpecError;
pub use image::ImageConfig;
pub use mounts::HostPathMapper;
pub use namespaces::pod_shares_pid;
pub use resources::linux_resources;
pub use seccomp::{default_profile as default_seccomp_profile, MAX_PROFILE_BYTES};

/// Paths containerd masks in every unprivileged container that does not
/// bring its own list (kernel state a container should not read).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containerd makes read-only in every unprivileged container that
/// does not bring its own list.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The OCI spec version the specs declare.
const OCI_VERSION: &str = "1.0.2";

/// Everything a container's spec is built from.
pub struct SpecInput<'a> {
    /// The CRI `CreateContainerRequest.config`.
    pub config: &'a ContainerConfig,
    /// The CRI `CreateContainerRequest.sandbox_config`.
    pub sandbox_config: &'a PodSandboxConfig,
    /// What the agent's `Sandbox.Setup` answered for the pod.
    pub sandbox: &'a SandboxInfo,
    /// The image's config.
    pub image: &'a ImageConfig,
    /// Turns each CRI mount's host path into its guest path.
    pub host_paths: &'a dyn HostPathMapper,
    /// Mounts added to containerd's defaults (before the CRI mounts, which
    /// replace any with the same destination).
    pub extra_mounts: Vec<Mount>,
}

/// A container's spec and who it runs as.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The OCI runtime spec (`oci_spec_json` of `Containers.Create`).
    pub spec: Spec,
    /// The user (and group) for the agent to resolve in the image
    /// (`CreateContainerRequest.run_as`): from `run_as_username`,
    /// `run_as_user`/`run_as_group`, the image's `User`, or `0`.
    pub run_as: RunAsUser,
}

const SC: &str = "linux.security_context";

/// Builds the spec of a CRI container (see the module doc). Every invalid
/// field is a [`SpecError::Invalid`] naming it.
pub fn build(input: SpecInput<'_>) -> Result<ContainerSpec, SpecError> {
    let config = input.config;
    let linux = config.linux.as_ref();
    let sc: Option<&LinuxContainerSecurityContext> =
        linux.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|sc| sc.privileged);
    let sandbox_privileged = input
        .sandbox_config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged);
    if privileged && !sandbox_privileged {
        return Err(SpecError::invalid(
            format!("{SC}.privileged"),
            "a privileged container needs a privileged pod sandbox",
        ));
    }
    if let Some(sc) = sc {
        #[allow(deprecated)] // The old field still arrives from older kubelets.
        let apparmor_profile = &sc.apparmor_profile;
        if sc.apparmor.is_some() || !apparmor_profile.is_empty() {
            tracing::debug!("apparmor profile ignored: the guest has no AppArmor");
        }
        if sc.selinux_options.is_some() {
            tracing::debug!("selinux options ignored: the guest has no SELinux");
        }
    }
    let hostname = if input.sandbox.hostname.is_empty() {
        input.sandbox_config.hostname.clone()
    } else {
        input.sandbox.hostname.clone()
    };

    let args = process::args(config, input.image)?;
    let env = process::env(config, input.image, &hostname)?;
    let cwd = process::cwd(config, input.image)?;
    let user = process::user(sc, input.image)?;
    let caps = capabilities::build(sc.and_then(|sc| sc.capabilities.as_ref()), privileged)?;
    let seccomp = seccomp::profile(
        sc,
        privileged,
        caps.bounding().as_ref().unwrap_or(&Default::default()),
    )?;
    let resources_cri = linux.and_then(|l| l.resources.as_ref());
    let devices = devices::build(&config.devices, privileged)?;
    let resources = resources::build(resources_cri, devices.rules)?;
    let namespaces = namespaces::build(
        sc.and_then(|sc| sc.namespace_options.as_ref()),
        input.sandbox_config,
        privileged,
    )?;
    let readonly_rootfs = sc.is_some_and(|sc| sc.readonly_rootfs);
    let mut base = mounts::defaults(privileged)?;
    base.extend(input.extra_mounts.iter().cloned());
    let mounts = mounts::all(
        base,
        &config.mounts,
        input.sandbox,
        readonly_rootfs,
        input.host_paths,
    )?;
    let (masked, readonly) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            paths(sc.map(|sc| &sc.masked_paths), &MASKED_PATHS, "masked_paths")?,
            paths(
                sc.map(|sc| &sc.readonly_paths),
                &READONLY_PATHS,
                "readonly_paths",
            )?,
        )
    };

    let process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids)
                .build()?,
        )
        .capabilities(caps)
        .no_new_privileges(sc.is_some_and(|sc| sc.no_new_privs))
        .oom_score_adj(resources::oom_score_adj(resources_cri))
        .build()?;
    let mut linux_spec = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(masked)
        .readonly_paths(readonly);
    if !devices.nodes.is_empty() {
        linux_spec = linux_spec.devices(devices.nodes);
    }
    if let Some(seccomp) = seccomp {
        linux_spec = linux_spec.seccomp(seccomp);
    }
    let mut linux_spec = linux_spec.build()?;
    // The builder starts from oci-spec's defaults, which hold an empty resources object.
    linux_spec.set_resources(resources);
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(readonly_rootfs)
                .build()?,
        )
        .mounts(mounts)
        .linux(linux_spec)
        .annotations(annotations(&input))
        .build()?;
    // Same as the pod's: the agent refuses another one in the pod's UTS
    // namespace. (oci-spec's default, which the builder starts from, is "youki".)
    spec.set_hostname((!hostname.is_empty()).then_some(hostname));
    Ok(ContainerSpec {
        spec,
        run_as: user.run_as,
    })
}

/// The CRI's masked or read-only paths, or containerd's defaults when the
/// request has none (the kubelet always sends its list; crictl may not).
fn paths(
    requested: Option<&Vec<String>>,
    defaults: &[&str],
    name: &str,
) -> Result<Vec<String>, SpecError> {
    match requested.filter(|r| !r.is_empty()) {
        None => Ok(defaults.iter().map(|p| p.to_string()).collect()),
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if !p.starts_with('/') || p.contains('\0') {
                    return Err(SpecError::invalid(
                        format!("{SC}.{name}[{i}]"),
                        format!("{p:?} is not an absolute path"),
                    ));
                }
            }
            Ok(list.clone())
        }
    }
}

/// containerd's `io.kubernetes.cri.*` annotations, which tools inside the
/// guest and the verbose status read.
fn annotations(input: &SpecInput<'_>) -> HashMap<String, String> {
    let meta = input.sandbox_config.metadata.clone().unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let image = input
        .config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        (
            "io.kubernetes.cri.sandbox-id",
            input.sandbox.sandbox_id.clone(),
        ),
        ("io.kubernetes.cri.sandbox-name", meta.name),
        ("io.kubernetes.cri.sandbox-namespace", meta.namespace),
        ("io.kubernetes.cri.container-name", name),
        ("io.kubernetes.cri.image-name", image),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
