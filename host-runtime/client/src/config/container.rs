//! Mirror of `ContainerConfig`.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde::Deserialize;

use super::common::{
    convert, Device, ImageSpec, Int64Value, KeyValue, LinuxContainerResources, Mount,
    NamespaceOption, SeLinuxOption, SecurityProfile,
};
use super::enums::Enum;

/// `ContainerConfig` as crictl's container config files write it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerConfigFile {
    metadata: Option<ContainerMetadata>,
    image: Option<ImageSpec>,
    command: Vec<String>,
    args: Vec<String>,
    working_dir: String,
    envs: Vec<KeyValue>,
    mounts: Vec<Mount>,
    devices: Vec<Device>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    log_path: String,
    stdin: bool,
    stdin_once: bool,
    tty: bool,
    linux: Option<LinuxContainerConfig>,
    cdi_devices: Vec<CdiDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerMetadata {
    name: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CdiDevice {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxContainerConfig {
    resources: Option<LinuxContainerResources>,
    security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Capability {
    add_capabilities: Vec<String>,
    drop_capabilities: Vec<String>,
    add_ambient_capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxContainerSecurityContext {
    capabilities: Option<Capability>,
    privileged: bool,
    namespace_options: Option<NamespaceOption>,
    selinux_options: Option<SeLinuxOption>,
    run_as_user: Option<Int64Value>,
    run_as_group: Option<Int64Value>,
    run_as_username: String,
    readonly_rootfs: bool,
    supplemental_groups: Vec<i64>,
    supplemental_groups_policy: Enum<cri::SupplementalGroupsPolicy>,
    no_new_privs: bool,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
    seccomp: Option<SecurityProfile>,
    apparmor: Option<SecurityProfile>,
    apparmor_profile: String,
    seccomp_profile_path: String,
}

// The deprecated profile fields are still on the wire and in older crictl files.
#[allow(deprecated)]
impl From<LinuxContainerSecurityContext> for cri::LinuxContainerSecurityContext {
    fn from(s: LinuxContainerSecurityContext) -> Self {
        cri::LinuxContainerSecurityContext {
            capabilities: s.capabilities.map(|c| cri::Capability {
                add_capabilities: c.add_capabilities,
                drop_capabilities: c.drop_capabilities,
                add_ambient_capabilities: c.add_ambient_capabilities,
            }),
            privileged: s.privileged,
            namespace_options: s.namespace_options.map(Into::into),
            selinux_options: s.selinux_options.map(Into::into),
            run_as_user: s.run_as_user.map(Into::into),
            run_as_group: s.run_as_group.map(Into::into),
            run_as_username: s.run_as_username,
            readonly_rootfs: s.readonly_rootfs,
            supplemental_groups: s.supplemental_groups,
            supplemental_groups_policy: s.supplemental_groups_policy.into(),
            no_new_privs: s.no_new_privs,
            masked_paths: s.masked_paths,
            readonly_paths: s.readonly_paths,
            seccomp: s.seccomp.map(Into::into),
            apparmor: s.apparmor.map(Into::into),
            apparmor_profile: s.apparmor_profile,
            seccomp_profile_path: s.seccomp_profile_path,
        }
    }
}

impl From<ContainerConfigFile> for cri::ContainerConfig {
    fn from(m: ContainerConfigFile) -> Self {
        cri::ContainerConfig {
            metadata: m.metadata.map(|md| cri::ContainerMetadata {
                name: md.name,
                attempt: md.attempt,
            }),
            image: m.image.map(Into::into),
            command: m.command,
            args: m.args,
            working_dir: m.working_dir,
            envs: convert(m.envs),
            mounts: convert(m.mounts),
            devices: convert(m.devices),
            labels: m.labels,
            annotations: m.annotations,
            log_path: m.log_path,
            stdin: m.stdin,
            stdin_once: m.stdin_once,
            tty: m.tty,
            linux: m.linux.map(|l| cri::LinuxContainerConfig {
                resources: l.resources.map(Into::into),
                security_context: l.security_context.map(Into::into),
            }),
            windows: None,
            cdi_devices: m
                .cdi_devices
                .into_iter()
                .map(|c| cri::CdiDevice { name: c.name })
                .collect(),
        }
    }
}
