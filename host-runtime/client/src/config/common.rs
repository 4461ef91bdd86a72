//! Mirrors of the messages both config files use.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use serde::Deserialize;

use super::enums::Enum;

/// `ImageSpec`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSpec {
    image: String,
    annotations: HashMap<String, String>,
    user_specified_image: String,
    runtime_handler: String,
}

impl From<ImageSpec> for cri::ImageSpec {
    fn from(m: ImageSpec) -> Self {
        cri::ImageSpec {
            image: m.image,
            annotations: m.annotations,
            user_specified_image: m.user_specified_image,
            runtime_handler: m.runtime_handler,
        }
    }
}

/// `KeyValue` (an environment variable).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyValue {
    key: String,
    value: String,
}

impl From<KeyValue> for cri::KeyValue {
    fn from(m: KeyValue) -> Self {
        cri::KeyValue {
            key: m.key,
            value: m.value,
        }
    }
}

/// `IdMapping`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdMapping {
    host_id: u32,
    container_id: u32,
    length: u32,
}

impl From<IdMapping> for cri::IdMapping {
    fn from(m: IdMapping) -> Self {
        cri::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        }
    }
}

/// `Mount`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mount {
    container_path: String,
    host_path: String,
    readonly: bool,
    selinux_relabel: bool,
    propagation: Enum<cri::MountPropagation>,
    uid_mappings: Vec<IdMapping>,
    gid_mappings: Vec<IdMapping>,
    recursive_read_only: bool,
    image: Option<ImageSpec>,
}

impl From<Mount> for cri::Mount {
    fn from(m: Mount) -> Self {
        cri::Mount {
            container_path: m.container_path,
            host_path: m.host_path,
            readonly: m.readonly,
            selinux_relabel: m.selinux_relabel,
            propagation: m.propagation.into(),
            uid_mappings: convert(m.uid_mappings),
            gid_mappings: convert(m.gid_mappings),
            recursive_read_only: m.recursive_read_only,
            image: m.image.map(Into::into),
        }
    }
}

/// `Device`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Device {
    container_path: String,
    host_path: String,
    permissions: String,
}

impl From<Device> for cri::Device {
    fn from(m: Device) -> Self {
        cri::Device {
            container_path: m.container_path,
            host_path: m.host_path,
            permissions: m.permissions,
        }
    }
}

/// `HugepageLimit`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HugepageLimit {
    page_size: String,
    limit: u64,
}

/// `LinuxContainerResources`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxContainerResources {
    cpu_period: i64,
    cpu_quota: i64,
    cpu_shares: i64,
    memory_limit_in_bytes: i64,
    oom_score_adj: i64,
    cpuset_cpus: String,
    cpuset_mems: String,
    hugepage_limits: Vec<HugepageLimit>,
    unified: HashMap<String, String>,
    memory_swap_limit_in_bytes: i64,
}

impl From<LinuxContainerResources> for cri::LinuxContainerResources {
    fn from(m: LinuxContainerResources) -> Self {
        cri::LinuxContainerResources {
            cpu_period: m.cpu_period,
            cpu_quota: m.cpu_quota,
            cpu_shares: m.cpu_shares,
            memory_limit_in_bytes: m.memory_limit_in_bytes,
            oom_score_adj: m.oom_score_adj,
            cpuset_cpus: m.cpuset_cpus,
            cpuset_mems: m.cpuset_mems,
            hugepage_limits: m
                .hugepage_limits
                .into_iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size,
                    limit: h.limit,
                })
                .collect(),
            unified: m.unified,
            memory_swap_limit_in_bytes: m.memory_swap_limit_in_bytes,
        }
    }
}

/// `UserNamespace`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserNamespace {
    mode: Enum<cri::NamespaceMode>,
    uids: Vec<IdMapping>,
    gids: Vec<IdMapping>,
}

/// `NamespaceOption`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOption {
    network: Enum<cri::NamespaceMode>,
    pid: Enum<cri::NamespaceMode>,
    ipc: Enum<cri::NamespaceMode>,
    target_id: String,
    userns_options: Option<UserNamespace>,
}

impl From<NamespaceOption> for cri::NamespaceOption {
    fn from(m: NamespaceOption) -> Self {
        cri::NamespaceOption {
            network: m.network.into(),
            pid: m.pid.into(),
            ipc: m.ipc.into(),
            target_id: m.target_id,
            userns_options: m.userns_options.map(|u| cri::UserNamespace {
                mode: u.mode.into(),
                uids: convert(u.uids),
                gids: convert(u.gids),
            }),
        }
    }
}

/// `Int64Value` (`{"value": N}`, as crictl's files write it).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Int64Value {
    value: i64,
}

impl From<Int64Value> for cri::Int64Value {
    fn from(m: Int64Value) -> Self {
        cri::Int64Value { value: m.value }
    }
}

/// `SELinuxOption`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeLinuxOption {
    user: String,
    role: String,
    #[serde(rename = "type")]
    kind: String,
    level: String,
}

impl From<SeLinuxOption> for cri::SeLinuxOption {
    fn from(m: SeLinuxOption) -> Self {
        cri::SeLinuxOption {
            user: m.user,
            role: m.role,
            r#type: m.kind,
            level: m.level,
        }
    }
}

/// `SecurityProfile` (seccomp, AppArmor).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityProfile {
    profile_type: Enum<cri::security_profile::ProfileType>,
    localhost_ref: String,
}

impl From<SecurityProfile> for cri::SecurityProfile {
    fn from(m: SecurityProfile) -> Self {
        cri::SecurityProfile {
            profile_type: m.profile_type.into(),
            localhost_ref: m.localhost_ref,
        }
    }
}

/// Converts a list of mirrors into their prost messages.
pub fn convert<M, T: From<M>>(items: Vec<M>) -> Vec<T> {
    items.into_iter().map(T::from).collect()
}
