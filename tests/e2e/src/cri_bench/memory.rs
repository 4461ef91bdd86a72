//! The host memory of one running pod of each runtime: its processes on the
//! host, found from the runtime's verbose status, and (vessel) the guest RAM
//! it holds.

use k8s_cri::v1::{ContainerStatusRequest, PodSandboxStatusRequest};
use serde_json::Value;
use vessel_client::{call, request, ClientError, Cri};

use super::lifecycle::RunningPod;
use super::{Runtime, QUICK};
use crate::pss::{outside_guest_ram, pids_of, Memory};
use crate::rss::guest_ram_held_bytes;

/// What one running pod costs the host.
#[derive(Debug, Clone, Default)]
pub struct PodMemory {
    /// The runtime's own processes for the pod, by part: vessel's VMM and
    /// virtiofsd (guest RAM left out), containerd's shim and pause.
    pub overhead: Vec<(&'static str, Memory)>,
    /// The container's process, where it runs on the host (containerd's
    /// `sleep`; vessel's runs in the guest, inside its RAM).
    pub workload: Option<Memory>,
    /// vessel: the guest RAM the host holds for the pod (KiB) and the VM's
    /// size (MiB).
    pub guest_ram: Option<(u64, u64)>,
}

/// Reading a pod's memory failed.
#[derive(Debug)]
pub struct MemoryError(pub String);

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MemoryError {}

impl From<ClientError> for MemoryError {
    fn from(e: ClientError) -> Self {
        MemoryError(e.to_string())
    }
}

/// Sums the memory of `pids`, each outside guest RAM.
fn memory_of(what: &str, pids: &[u32]) -> Result<Memory, MemoryError> {
    if pids.is_empty() {
        return Err(MemoryError(format!("no {what} process found")));
    }
    pids.iter().try_fold(Memory::default(), |sum, pid| {
        outside_guest_ram(*pid)
            .map(|m| sum + m)
            .map_err(|e| MemoryError(format!("smaps of {what} (pid {pid}): {e}")))
    })
}

/// The JSON document a verbose status carries under `info["info"]`.
fn verbose_info(info: &std::collections::HashMap<String, String>) -> Result<Value, MemoryError> {
    let raw = info
        .get("info")
        .ok_or_else(|| MemoryError("the verbose status has no \"info\"".into()))?;
    serde_json::from_str(raw).map_err(|e| MemoryError(format!("verbose info: {e}: {raw}")))
}

fn pid_at(doc: &Value, pointer: &str) -> Result<u32, MemoryError> {
    doc.pointer(pointer)
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| MemoryError(format!("no pid at {pointer} in {doc}")))
}

/// The host memory of `pod`, run by `runtime`.
pub async fn pod_memory(
    runtime: Runtime,
    cri: &mut Cri,
    pod: &RunningPod,
) -> Result<PodMemory, MemoryError> {
    let status = call(
        "PodSandboxStatus",
        Some(QUICK),
        cri.runtime.pod_sandbox_status(request(
            PodSandboxStatusRequest {
                pod_sandbox_id: pod.pod_id.clone(),
                verbose: true,
            },
            Some(QUICK),
        )),
    )
    .await?;
    let info = verbose_info(&status.info)?;
    match runtime {
        Runtime::Vessel => {
            let vmm = pid_at(&info, "/vm/pid")?;
            let size_mib = info
                .pointer("/vm/memoryMiB")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            // virtiofsd serves the pod's state dir, named by the id's first 16
            // characters (and forks once for its sandbox: both count).
            let share = format!("/pods/{}/", pod.pod_id.get(..16).unwrap_or(&pod.pod_id));
            let held = guest_ram_held_bytes(vmm)
                .map_err(|e| MemoryError(format!("guest RAM of pid {vmm}: {e}")))?;
            Ok(PodMemory {
                overhead: vec![
                    ("VMM", memory_of("vessel-vmm", &[vmm])?),
                    (
                        "virtiofsd",
                        memory_of("virtiofsd", &pids_of("virtiofsd", &share))?,
                    ),
                ],
                workload: None,
                guest_ram: Some((held / 1024, size_mib)),
            })
        }
        Runtime::Containerd => {
            let pause = pid_at(&info, "/pid")?;
            let shim = pids_of("containerd-shim-runc-v2", &format!("-id {}", pod.pod_id));
            let container = call(
                "ContainerStatus",
                Some(QUICK),
                cri.runtime.container_status(request(
                    ContainerStatusRequest {
                        container_id: pod.container_id.clone(),
                        verbose: true,
                    },
                    Some(QUICK),
                )),
            )
            .await?;
            let sleeper = pid_at(&verbose_info(&container.info)?, "/pid")?;
            Ok(PodMemory {
                overhead: vec![
                    ("shim", memory_of("containerd-shim-runc-v2", &shim)?),
                    ("pause", memory_of("pause", &[pause])?),
                ],
                workload: Some(memory_of("the container's sleep", &[sleeper])?),
                guest_ram: None,
            })
        }
    }
}
