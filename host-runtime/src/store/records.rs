//! The records of the state store: pod sandboxes and containers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_cri::v1::{
    ContainerState as CriContainerState, LinuxContainerResources, Mount, PodSandboxState,
};
use serde::{Deserialize, Serialize};

/// A sandbox's lifecycle state (CRI's `PodSandboxState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// The VM runs and its agent answers.
    Ready,
    /// Stopped, failed, or its VM is gone.
    NotReady,
}

impl SandboxState {
    /// The CRI enum value.
    pub fn to_cri(self) -> PodSandboxState {
        match self {
            SandboxState::Ready => PodSandboxState::SandboxReady,
            SandboxState::NotReady => PodSandboxState::SandboxNotready,
        }
    }

    /// From the CRI enum value (`None` for an unknown number).
    pub fn from_cri(state: i32) -> Option<Self> {
        match PodSandboxState::try_from(state).ok()? {
            PodSandboxState::SandboxReady => Some(SandboxState::Ready),
            PodSandboxState::SandboxNotready => Some(SandboxState::NotReady),
        }
    }
}

/// A container's lifecycle state (CRI's `ContainerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process has exited.
    Exited,
    /// Not known (its pod's VM could not be asked).
    Unknown,
}

impl ContainerState {
    /// The CRI enum value.
    pub fn to_cri(self) -> CriContainerState {
        match self {
            ContainerState::Created => CriContainerState::ContainerCreated,
            ContainerState::Running => CriContainerState::ContainerRunning,
            ContainerState::Exited => CriContainerState::ContainerExited,
            ContainerState::Unknown => CriContainerState::ContainerUnknown,
        }
    }

    /// From the CRI enum value (`None` for an unknown number).
    pub fn from_cri(state: i32) -> Option<Self> {
        Some(match CriContainerState::try_from(state).ok()? {
            CriContainerState::ContainerCreated => ContainerState::Created,
            CriContainerState::ContainerRunning => ContainerState::Running,
            CriContainerState::ContainerExited => ContainerState::Exited,
            CriContainerState::ContainerUnknown => ContainerState::Unknown,
        })
    }
}

/// A sandbox's CRI metadata: its name is the four together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMetadata {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Attempt number of this sandbox for the pod.
    pub attempt: u32,
}

/// A container's CRI metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// Container name in the pod.
    pub name: String,
    /// Attempt number (restarts).
    pub attempt: u32,
}

/// A host process vesseld started and must find again after a restart:
/// the pid alone could be reused, the pid with its start time (field 22 of
/// `/proc/<pid>/stat`, clock ticks since boot) cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_time: u64,
}

/// The pod's VM and the processes and sockets that make it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// The vessel-vmm process.
    pub vmm: ProcessRecord,
    /// The virtiofsd of the pod's shared directory.
    pub virtiofsd: Option<ProcessRecord>,
    /// The uid the VMM runs as (least privilege), if not root.
    pub vmm_uid: Option<u32>,
    /// The hybrid-vsock socket the agent is reached through.
    pub vsock_socket: PathBuf,
    /// The VMM's control socket.
    pub control_socket: Option<PathBuf>,
    /// virtiofsd's socket.
    pub virtiofsd_socket: Option<PathBuf>,
    /// The guest's console log.
    pub console_log: Option<PathBuf>,
    /// vCPUs it was booted with.
    pub vcpus: u32,
    /// Guest memory it was booted with, MiB.
    pub memory_mib: u64,
}

/// A pod sandbox as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 64 hex characters.
    pub id: String,
    /// The CRI metadata (its name).
    pub metadata: SandboxMetadata,
    /// CRI labels.
    pub labels: BTreeMap<String, String>,
    /// CRI annotations.
    pub annotations: BTreeMap<String, String>,
    /// The runtime handler that made it.
    pub runtime_handler: String,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// Lifecycle state.
    pub state: SandboxState,
    /// The pod's network namespace (`/var/run/netns/...`); empty once removed.
    pub netns_path: String,
    /// The pod's IPs, the primary first.
    pub ips: Vec<String>,
    /// The VM, once it was started.
    pub vm: Option<VmRecord>,
    /// The host cgroup of the pod's processes; empty without one.
    pub cgroup_path: String,
    /// The CRI `log_directory`.
    pub log_directory: String,
    /// The `PodSandboxConfig` as received, prost-encoded.
    #[serde(with = "hex_bytes")]
    pub config: Vec<u8>,
}

/// A container as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    /// Its pod sandbox's id.
    pub sandbox_id: String,
    /// The CRI metadata (with the sandbox id, its name).
    pub metadata: ContainerMetadata,
    /// The image as the config named it.
    pub image_ref: String,
    /// The image's id (config digest).
    pub image_id: String,
    /// CRI labels.
    pub labels: BTreeMap<String, String>,
    /// CRI annotations.
    pub annotations: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Unix nanoseconds; 0 for not yet.
    pub created_at: i64,
    /// Unix nanoseconds; 0 for not yet.
    pub started_at: i64,
    /// Unix nanoseconds; 0 for not yet.
    pub finished_at: i64,
    /// Exit code, once exited.
    pub exit_code: i32,
    /// CRI reason (`Completed`, `Error`, `OOMKilled`, ...).
    pub reason: String,
    /// Human-readable detail of the state.
    pub message: String,
    /// The log file (the sandbox's log directory joined with the CRI `log_path`).
    pub log_path: String,
    /// The CRI mounts as requested.
    pub mounts: Vec<Mount>,
    /// The resources as last set (create or UpdateContainerResources).
    pub resources: Option<LinuxContainerResources>,
    /// The `ContainerConfig` as received, prost-encoded.
    #[serde(with = "hex_bytes")]
    pub config: Vec<u8>,
    /// The OCI `process` of the container's spec, as JSON: what the
    /// processes of ExecSync start from.
    #[serde(default)]
    pub process_json: String,
    /// The image's `StopSignal` (empty: SIGTERM).
    #[serde(default)]
    pub stop_signal: String,
}

/// Bytes as a hex string in JSON (a third the size of a number array).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::super::unhex(&text).ok_or_else(|| serde::de::Error::custom("not a hex string"))
    }
}
