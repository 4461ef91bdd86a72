//! Mirror of `PodSandboxConfig`.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde::Deserialize;

use super::common::{
    Int64Value, LinuxContainerResources, NamespaceOption, SeLinuxOption, SecurityProfile,
};
use super::enums::Enum;

/// `PodSandboxConfig` as crictl's pod config files write it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodSandboxConfigFile {
    metadata: Option<PodSandboxMetadata>,
    hostname: String,
    log_directory: String,
    dns_config: Option<DnsConfig>,
    port_mappings: Vec<PortMapping>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodSandboxMetadata {
    name: String,
    uid: String,
    namespace: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DnsConfig {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PortMapping {
    protocol: Enum<cri::Protocol>,
    container_port: i32,
    host_port: i32,
    host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxPodSandboxConfig {
    cgroup_parent: String,
    security_context: Option<LinuxSandboxSecurityContext>,
    sysctls: HashMap<String, String>,
    overhead: Option<LinuxContainerResources>,
    resources: Option<LinuxContainerResources>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LinuxSandboxSecurityContext {
    namespace_options: Option<NamespaceOption>,
    selinux_options: Option<SeLinuxOption>,
    run_as_user: Option<Int64Value>,
    run_as_group: Option<Int64Value>,
    readonly_rootfs: bool,
    supplemental_groups: Vec<i64>,
    supplemental_groups_policy: Enum<cri::SupplementalGroupsPolicy>,
    privileged: bool,
    seccomp: Option<SecurityProfile>,
    apparmor: Option<SecurityProfile>,
    seccomp_profile_path: String,
}

// `seccomp_profile_path` is deprecated but still on the wire and in older crictl files.
#[allow(deprecated)]
impl From<PodSandboxConfigFile> for cri::PodSandboxConfig {
    fn from(m: PodSandboxConfigFile) -> Self {
        cri::PodSandboxConfig {
            metadata: m.metadata.map(|md| cri::PodSandboxMetadata {
                name: md.name,
                uid: md.uid,
                namespace: md.namespace,
                attempt: md.attempt,
            }),
            hostname: m.hostname,
            log_directory: m.log_directory,
            dns_config: m.dns_config.map(|d| cri::DnsConfig {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            }),
            port_mappings: m
                .port_mappings
                .into_iter()
                .map(|p| cri::PortMapping {
                    protocol: p.protocol.into(),
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            labels: m.labels,
            annotations: m.annotations,
            linux: m.linux.map(|l| cri::LinuxPodSandboxConfig {
                cgroup_parent: l.cgroup_parent,
                security_context: l
                    .security_context
                    .map(|s| cri::LinuxSandboxSecurityContext {
                        namespace_options: s.namespace_options.map(Into::into),
                        selinux_options: s.selinux_options.map(Into::into),
                        run_as_user: s.run_as_user.map(Into::into),
                        run_as_group: s.run_as_group.map(Into::into),
                        readonly_rootfs: s.readonly_rootfs,
                        supplemental_groups: s.supplemental_groups,
                        supplemental_groups_policy: s.supplemental_groups_policy.into(),
                        privileged: s.privileged,
                        seccomp: s.seccomp.map(Into::into),
                        apparmor: s.apparmor.map(Into::into),
                        seccomp_profile_path: s.seccomp_profile_path,
                    }),
                sysctls: l.sysctls,
                overhead: l.overhead.map(Into::into),
                resources: l.resources.map(Into::into),
            }),
            windows: None,
        }
    }
}
