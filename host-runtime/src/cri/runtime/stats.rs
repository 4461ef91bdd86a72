//! The stats RPCs: each pod's agent reports its containers' cgroups, its
//! process count and its NICs (`Stats.Get`); the pod's CPU and memory are its
//! host cgroup's (VMM and virtiofsd, guest RAM touched included: what the pod
//! costs the node). This turns them into CRI stats, with `usage_nano_cores`
//! from the previous sample of the same container or pod (as containerd
//! computes it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_cri::v1::{
    ContainerAttributes, ContainerMetadata, ContainerStats, CpuUsage, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxMetadata, PodSandboxStats, ProcessUsage, UInt64Value,
};
use tonic::Status;
use vessel_agent_api::proto::stats_client::StatsClient;
use vessel_agent_api::proto::{
    CgroupStats, CpuStats, GetStatsRequest, GetStatsResponse, MemoryStats,
};

use crate::cgroup::Usage;
use crate::daemon::runtime::Runtime;
use crate::pod::{agent_call, GUEST_NIC};
use crate::store::{ContainerRecord, SandboxRecord};

/// The last CPU sample (time, cumulative ns) of each container and pod.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// The cores used since the previous sample of `id` (none on the first).
    fn nano_cores(&self, id: &str, at: i64, total_ns: u64) -> Option<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let previous = map.insert(id.to_string(), (at, total_ns));
        let (then, before) = previous?;
        let elapsed = u64::try_from(at.checked_sub(then)?)
            .ok()
            .filter(|e| *e > 0)?;
        let used = total_ns.checked_sub(before)?;
        Some((u128::from(used) * 1_000_000_000 / u128::from(elapsed)) as u64)
    }
}

fn v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// How long the list RPCs wait for one pod's agent. Shorter than a single
/// pod's call: the kubelet lists every pod's stats at once, and a guest
/// that does not answer must cost the list this much, not stall it.
pub const LIST_AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's stats of a running sandbox's pod within `timeout`, or `None`
/// when it does not run.
pub async fn agent_stats(
    rt: &Runtime,
    sandbox_id: &str,
    timeout: Duration,
) -> Result<Option<GetStatsResponse>, Status> {
    let Some(pod) = rt.pod(sandbox_id) else {
        return Ok(None);
    };
    let Some(channel) = pod.lock().await.agent_channel() else {
        return Ok(None);
    };
    let stats = agent_call(
        "Stats.Get",
        timeout,
        StatsClient::new(channel).get(GetStatsRequest::default()),
    )
    .await
    .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(Some(stats))
}

/// [`agent_stats`] for the list RPCs: bounded by [`LIST_AGENT_TIMEOUT`],
/// and a pod whose agent fails is listed without its guest's figures (and
/// logged) instead of failing or stalling the whole list.
pub async fn agent_stats_for_list(rt: &Runtime, sandbox_id: &str) -> Option<GetStatsResponse> {
    match agent_stats(rt, sandbox_id, LIST_AGENT_TIMEOUT).await {
        Ok(stats) => stats,
        Err(status) => {
            tracing::warn!(pod = sandbox_id, error = %status.message(), "no guest stats for this pod");
            None
        }
    }
}

/// The host cgroup usage of a running sandbox's pod, and when it was read (ns).
pub async fn host_usage(rt: &Runtime, sandbox_id: &str) -> Option<(i64, Usage)> {
    let pod = rt.pod(sandbox_id)?;
    let usage = pod.lock().await.host_cgroup()?.usage();
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0);
    Some((at, usage))
}

/// The host usage in the agent's shape, so one conversion serves both.
fn as_cgroup_stats(u: &Usage) -> CgroupStats {
    CgroupStats {
        cpu: u.cpu_usec.map(|usage_usec| CpuStats {
            usage_usec,
            ..Default::default()
        }),
        memory: u.memory.map(|m| MemoryStats {
            usage_bytes: m.usage,
            working_set_bytes: m.working_set,
            rss_bytes: m.rss,
            cache_bytes: m.cache,
            page_faults: m.page_faults,
            major_page_faults: m.major_page_faults,
            limit_bytes: m.limit,
            ..Default::default()
        }),
        pids: None,
    }
}

fn cpu(samples: &CpuSamples, id: &str, at: i64, cg: Option<&CgroupStats>) -> Option<CpuUsage> {
    let c = cg?.cpu.as_ref()?;
    let total = c.usage_usec.saturating_mul(1000);
    Some(CpuUsage {
        timestamp: at,
        usage_core_nano_seconds: v(total),
        usage_nano_cores: samples.nano_cores(id, at, total).and_then(v),
    })
}

fn memory(at: i64, cg: Option<&CgroupStats>) -> Option<MemoryUsage> {
    let m = cg?.memory.as_ref()?;
    Some(MemoryUsage {
        timestamp: at,
        working_set_bytes: v(m.working_set_bytes),
        available_bytes: (m.limit_bytes > 0)
            .then(|| m.limit_bytes.saturating_sub(m.working_set_bytes))
            .and_then(v),
        usage_bytes: v(m.usage_bytes),
        rss_bytes: v(m.rss_bytes),
        page_faults: v(m.page_faults),
        major_page_faults: v(m.major_page_faults),
    })
}

/// The disk use of a container's writable layer (a bounded walk that
/// follows nothing the guest made, off the async threads), or `None`.
pub async fn writable_layer(rt: &Runtime, container_id: &str) -> Option<FilesystemUsage> {
    let images = rt.images.clone();
    let id = container_id.to_string();
    let measured = tokio::task::spawn_blocking(move || images.writable_usage(&id)).await;
    match measured {
        Ok(Ok(u)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            u.map(|u| crate::cri::image::usage(u, now))
        }
        Ok(Err(e)) => {
            tracing::warn!(container = container_id, error = %e, "cannot measure the writable layer");
            None
        }
        Err(_) => None,
    }
}

/// A container's CRI stats from its pod's agent stats and its writable layer.
pub fn container_stats(
    samples: &CpuSamples,
    c: &ContainerRecord,
    stats: Option<&GetStatsResponse>,
    writable_layer: Option<FilesystemUsage>,
) -> ContainerStats {
    let at = stats.map_or(0, |s| s.timestamp);
    let cg = stats
        .and_then(|s| s.containers.iter().find(|x| x.container_id == c.id))
        .and_then(|x| x.cgroup.as_ref());
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(ContainerMetadata {
                name: c.metadata.name.clone(),
                attempt: c.metadata.attempt,
            }),
            labels: c
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: c
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        cpu: cpu(samples, &c.id, at, cg),
        memory: memory(at, cg),
        writable_layer,
        swap: None,
    }
}

/// A sandbox's CRI stats: CPU and memory of its host cgroup, processes and NICs from the guest, its containers.
pub fn sandbox_stats(
    samples: &CpuSamples,
    s: &SandboxRecord,
    containers: &[ContainerRecord],
    writable_layers: Vec<Option<FilesystemUsage>>,
    stats: Option<&GetStatsResponse>,
    host: Option<(i64, Usage)>,
) -> PodSandboxStats {
    let at = stats.map_or(0, |st| st.timestamp);
    let pod = stats.and_then(|st| st.pod.as_ref());
    let host_at = host.map_or(0, |(t, _)| t);
    let host = host.map(|(_, u)| as_cgroup_stats(&u));
    let interfaces: Vec<NetworkInterfaceUsage> = stats
        .map(|st| {
            st.interfaces
                .iter()
                .map(|i| NetworkInterfaceUsage {
                    name: i.name.clone(),
                    rx_bytes: v(i.rx_bytes),
                    rx_errors: v(i.rx_errors),
                    tx_bytes: v(i.tx_bytes),
                    tx_errors: v(i.tx_errors),
                })
                .collect()
        })
        .unwrap_or_default();
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: s.id.clone(),
            metadata: Some(PodSandboxMetadata {
                name: s.metadata.name.clone(),
                uid: s.metadata.uid.clone(),
                namespace: s.metadata.namespace.clone(),
                attempt: s.metadata.attempt,
            }),
            labels: s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: s
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cpu(samples, &s.id, host_at, host.as_ref()),
            memory: memory(host_at, host.as_ref()),
            network: stats.map(|_| NetworkUsage {
                timestamp: at,
                default_interface: interfaces.iter().find(|i| i.name == GUEST_NIC).cloned(),
                interfaces: interfaces.clone(),
            }),
            process: pod.and_then(|p| p.pids.as_ref()).map(|p| ProcessUsage {
                timestamp: at,
                process_count: v(p.current),
            }),
            containers: containers
                .iter()
                .zip(writable_layers)
                .map(|(c, w)| container_stats(samples, c, stats, w))
                .collect(),
        }),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nano_cores_come_from_the_previous_sample() {
        let s = CpuSamples::default();
        assert_eq!(s.nano_cores("c", 1_000_000_000, 0), None);
        // Half a core over one second.
        assert_eq!(
            s.nano_cores("c", 2_000_000_000, 500_000_000),
            Some(500_000_000)
        );
        // A clock that went back or a counter that reset gives nothing.
        assert_eq!(s.nano_cores("c", 1_500_000_000, 600_000_000), None);
        assert_eq!(s.nano_cores("c", 3_000_000_000, 1), None);
    }
}
