//! CRI container resources as OCI `linux.resources`, and the OOM score.

use std::collections::HashMap;

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::SpecError;

/// The OCI resources of a CRI container, as containerd's `WithResources`
/// sets them: zero means unset; a memory limit without a swap limit gets
/// swap = limit (no swapping; the agent skips it where the guest has no
/// swap); hugepage limits and `unified` (where the kubelet puts pids and
/// memory.high) pass through. `prefix` names the fields in errors
/// (`linux.resources` at create, `linux` at UpdateContainerResources).
/// Also the body of the agent's `Resources.Update`.
pub fn linux_resources(
    res: &LinuxContainerResources,
    prefix: &str,
) -> Result<LinuxResources, SpecError> {
    let field = |name: &str| format!("{prefix}.{name}");
    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if res.cpu_period != 0 {
        let period = u64::try_from(res.cpu_period)
            .map_err(|_| SpecError::invalid(field("cpu_period"), "must not be negative"))?;
        cpu = cpu.period(period);
        has_cpu = true;
    }
    if res.cpu_quota != 0 {
        cpu = cpu.quota(res.cpu_quota);
        has_cpu = true;
    }
    if res.cpu_shares != 0 {
        let shares = u64::try_from(res.cpu_shares)
            .map_err(|_| SpecError::invalid(field("cpu_shares"), "must not be negative"))?;
        cpu = cpu.shares(shares);
        has_cpu = true;
    }
    if !res.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(res.cpuset_cpus.clone());
        has_cpu = true;
    }
    if !res.cpuset_mems.is_empty() {
        cpu = cpu.mems(res.cpuset_mems.clone());
        has_cpu = true;
    }
    let mut builder = LinuxResourcesBuilder::default();
    if has_cpu {
        builder = builder.cpu(cpu.build()?);
    }
    let limit = res.memory_limit_in_bytes;
    let swap = match res.memory_swap_limit_in_bytes {
        0 if limit != 0 => limit,
        swap => swap,
    };
    if limit != 0 || swap != 0 {
        let mut memory = LinuxMemoryBuilder::default();
        if limit != 0 {
            memory = memory.limit(limit);
        }
        if swap != 0 {
            memory = memory.swap(swap);
        }
        builder = builder.memory(memory.build()?);
    }
    if !res.hugepage_limits.is_empty() {
        let limits = res
            .hugepage_limits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                if h.page_size.is_empty() {
                    return Err(SpecError::invalid(
                        field(&format!("hugepage_limits[{i}].page_size")),
                        "is empty",
                    ));
                }
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::invalid(
                        field(&format!("hugepage_limits[{i}].limit")),
                        format!("{} is too large", h.limit),
                    )
                })?;
                Ok(LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(limit)
                    .build()?)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        builder = builder.hugepage_limits(limits);
    }
    if !res.unified.is_empty() {
        builder = builder.unified(
            res.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(builder.build()?)
}

/// The container's `linux.resources`: the CRI resources plus the device
/// rules; `None` when there is nothing to set.
pub fn build(
    res: Option<&LinuxContainerResources>,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<Option<LinuxResources>, SpecError> {
    let mut resources = match res {
        Some(res) => linux_resources(res, "linux.resources")?,
        None => LinuxResources::default(),
    };
    if !device_rules.is_empty() {
        resources.set_devices(Some(device_rules));
    }
    Ok((resources != LinuxResources::default()).then_some(resources))
}

/// `process.oomScoreAdj`: the CRI value, clamped to the kernel's range
/// −1000..=1000 (the kubelet computes values inside it; containerd writes
/// what it gets and the kernel would refuse the rest). Always set, 0 by
/// default, as containerd's `WithOOMScoreAdj` does.
pub fn oom_score_adj(res: Option<&LinuxContainerResources>) -> i32 {
    let adj = res.map_or(0, |r| r.oom_score_adj).clamp(-1000, 1000);
    // In range after the clamp.
    adj as i32
}
