//! The size of a pod's VM (vCPUs, guest memory) from the CRI sandbox
//! config, and the RuntimeClass overhead that accounts for it.
//!
//! The formula (docs/configuration.md, "Pod VM sizing"):
//!
//! - memory: the pod's memory limit (`linux.resources.memory_limit_in_bytes`,
//!   the sum of its containers' limits, which the kubelet sends) in MiB,
//!   rounded up, plus the guest's own overhead (kernel, agent, page tables):
//!   [`GUEST_OVERHEAD_MIB`], or more if the RuntimeClass overhead the kubelet
//!   sends (`linux.overhead`) leaves more than that after the host processes'
//!   share ([`HOST_OVERHEAD_MIB`]). Without a limit: the handler's default.
//!   Never below [`MIN_MEMORY_MIB`].
//! - vCPUs: the pod's CPU quota over its period, rounded up
//!   (`linux.resources.cpu_quota` / `cpu_period`); without a quota, the
//!   handler's default. At least 1.
//!
//! The VM's size is fixed at boot (no hotplug): a pod without limits gets
//! the handler's default however its containers are sized later.

use k8s_cri::v1::{LinuxContainerResources, PodSandboxConfig};

/// Guest memory for the guest's kernel, agent and page tables, on top of
/// what the pod's containers may use.
pub const GUEST_OVERHEAD_MIB: u64 = 64;

/// Host memory of a pod's processes outside guest RAM (the VMM and
/// virtiofsd: 5.2 MiB measured for an idle pod, docs/benchmarks.md; the
/// goal is at most 8).
pub const HOST_OVERHEAD_MIB: u64 = 8;

/// The least guest memory a pod VM gets (a pod with tiny limits still boots
/// and runs a shell).
pub const MIN_MEMORY_MIB: u64 = 128;

/// Host CPU for the VMM's device threads and virtiofsd, declared as the
/// RuntimeClass overhead (the vCPUs run inside the pod's own quota).
pub const HOST_OVERHEAD_MILLICPUS: u64 = 250;

/// Most vCPUs vessel-vmm boots (its `MAX_CPUS`).
pub const MAX_VCPUS: u32 = 32;

/// Most guest memory vessel-vmm boots, MiB (its `MAX_MEMORY_MIB`).
pub const MAX_MEMORY_MIB: u64 = 65536;

const MIB: u64 = 1024 * 1024;

/// A runtime handler's VM size for pods that set no limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerDefaults {
    /// vCPUs of a pod without a CPU quota.
    pub vcpus: u32,
    /// Guest memory (MiB) of a pod without a memory limit.
    pub memory_mib: u64,
}

impl Default for HandlerDefaults {
    /// The defaults of the `vessel` handler: 1 vCPU, 256 MiB (run-pod's).
    fn default() -> Self {
        HandlerDefaults {
            vcpus: 1,
            memory_mib: 256,
        }
    }
}

/// A pod VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
}

/// A pod whose limits no VM can hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizingError {
    /// The limits ask for more than vessel-vmm boots; names the CRI field.
    #[error("{field}: {message}")]
    TooLarge {
        /// The field (`linux.resources.memory_limit_in_bytes`).
        field: &'static str,
        /// What was asked and what fits.
        message: String,
    },
}

impl From<SizingError> for tonic::Status {
    fn from(err: SizingError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// The VM size of a pod (see the module doc for the formula).
pub fn vm_size(
    sandbox: &PodSandboxConfig,
    defaults: HandlerDefaults,
) -> Result<VmSize, SizingError> {
    let linux = sandbox.linux.as_ref();
    let resources = linux.and_then(|l| l.resources.as_ref());
    let overhead = linux.and_then(|l| l.overhead.as_ref());
    let guest_overhead = overhead
        .map(|o| positive(o.memory_limit_in_bytes))
        .map_or(0, |bytes| mib_up(bytes).saturating_sub(HOST_OVERHEAD_MIB))
        .max(GUEST_OVERHEAD_MIB);
    let memory_mib = match resources.map(|r| positive(r.memory_limit_in_bytes)) {
        Some(limit) if limit > 0 => mib_up(limit).saturating_add(guest_overhead),
        _ => defaults.memory_mib,
    }
    .max(MIN_MEMORY_MIB);
    if memory_mib > MAX_MEMORY_MIB {
        return Err(SizingError::TooLarge {
            field: "linux.resources.memory_limit_in_bytes",
            message: format!(
                "the pod needs a VM of {memory_mib} MiB (limit plus {guest_overhead} MiB of guest \
                 overhead); vessel-vmm boots at most {MAX_MEMORY_MIB} MiB"
            ),
        });
    }
    let vcpus = match resources.and_then(cpu_limit) {
        Some(vcpus) => vcpus,
        None => u64::from(defaults.vcpus),
    }
    .max(1);
    if vcpus > u64::from(MAX_VCPUS) {
        return Err(SizingError::TooLarge {
            field: "linux.resources.cpu_quota",
            message: format!(
                "the pod's CPU limit needs {vcpus} vCPUs; vessel-vmm boots at most {MAX_VCPUS}"
            ),
        });
    }
    Ok(VmSize {
        // At most MAX_VCPUS after the check above.
        vcpus: vcpus as u32,
        memory_mib,
    })
}

/// ceil(quota / period) for a positive quota; the CRI's default period is
/// 100 ms when the kubelet leaves it 0.
fn cpu_limit(res: &LinuxContainerResources) -> Option<u64> {
    let quota = positive(res.cpu_quota);
    if quota == 0 {
        return None;
    }
    let period = match positive(res.cpu_period) {
        0 => 100_000,
        p => p,
    };
    Some(quota.div_ceil(period))
}

fn positive(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// The RuntimeClass `overhead.podFixed` to declare for the `vessel`
/// handler: what a pod costs beyond its containers' limits, so the
/// scheduler and the pod's host cgroup account for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodFixedOverhead {
    /// Memory in MiB: the guest's overhead plus the host processes'.
    pub memory_mib: u64,
    /// CPU in millicores: the host processes'.
    pub cpu_millis: u64,
}

impl PodFixedOverhead {
    /// The quantities as Kubernetes writes them (`memory: 72Mi`, `cpu: 250m`).
    pub fn quantities(&self) -> (String, String) {
        (
            format!("{}Mi", self.memory_mib),
            format!("{}m", self.cpu_millis),
        )
    }

    /// The RuntimeClass manifest for `handler` with this overhead.
    pub fn runtime_class_yaml(&self, handler: &str) -> String {
        let (memory, cpu) = self.quantities();
        format!(
            "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: {handler}\n\
             handler: {handler}\noverhead:\n  podFixed:\n    memory: \"{memory}\"\n    \
             cpu: \"{cpu}\"\n"
        )
    }
}

/// The overhead a pod of vessel costs (see [`PodFixedOverhead`]). With it
/// declared, the kubelet sends `linux.overhead` of this size and
/// [`vm_size`] gives the guest exactly [`GUEST_OVERHEAD_MIB`] on top of
/// the pod's limit.
pub fn pod_fixed_overhead() -> PodFixedOverhead {
    PodFixedOverhead {
        memory_mib: GUEST_OVERHEAD_MIB + HOST_OVERHEAD_MIB,
        cpu_millis: HOST_OVERHEAD_MILLICPUS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::LinuxPodSandboxConfig;

    fn pod(
        resources: Option<LinuxContainerResources>,
        overhead: Option<LinuxContainerResources>,
    ) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                resources,
                overhead,
                ..LinuxPodSandboxConfig::default()
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn limits(memory: i64, quota: i64, period: i64) -> LinuxContainerResources {
        LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_period: period,
            ..LinuxContainerResources::default()
        }
    }

    fn size(p: &PodSandboxConfig) -> VmSize {
        vm_size(p, HandlerDefaults::default()).expect("size")
    }

    #[test]
    fn a_pod_without_limits_gets_the_handler_defaults() {
        let expected = VmSize {
            vcpus: 1,
            memory_mib: 256,
        };
        assert_eq!(size(&PodSandboxConfig::default()), expected);
        assert_eq!(size(&pod(None, None)), expected);
        assert_eq!(size(&pod(Some(limits(0, 0, 0)), None)), expected);
        // -1 (unlimited) counts as no limit.
        assert_eq!(size(&pod(Some(limits(-1, -1, 100_000)), None)), expected);
        let big = HandlerDefaults {
            vcpus: 4,
            memory_mib: 2048,
        };
        assert_eq!(
            vm_size(&PodSandboxConfig::default(), big).expect("size"),
            VmSize {
                vcpus: 4,
                memory_mib: 2048
            }
        );
    }

    #[test]
    fn limits_plus_the_guest_overhead_size_the_vm() {
        // 512 MiB and 1.5 CPUs: 576 MiB and 2 vCPUs.
        let p = pod(Some(limits(512 * MIB as i64, 150_000, 100_000)), None);
        assert_eq!(
            size(&p),
            VmSize {
                vcpus: 2,
                memory_mib: 512 + GUEST_OVERHEAD_MIB
            }
        );
        // Bytes round up to the next MiB; quota over a 50 ms period.
        let p = pod(Some(limits(300 * MIB as i64 + 1, 100_000, 50_000)), None);
        assert_eq!(
            size(&p),
            VmSize {
                vcpus: 2,
                memory_mib: 301 + GUEST_OVERHEAD_MIB
            }
        );
        // No period: the CRI's 100 ms.
        let p = pod(Some(limits(0, 250_000, 0)), None);
        assert_eq!(size(&p).vcpus, 3);
    }

    #[test]
    fn small_limits_stop_at_the_floor() {
        let p = pod(Some(limits(16 * MIB as i64, 10_000, 100_000)), None);
        assert_eq!(
            size(&p),
            VmSize {
                vcpus: 1,
                memory_mib: MIN_MEMORY_MIB
            }
        );
    }

    #[test]
    fn a_larger_declared_overhead_gives_the_guest_more_room() {
        let declared = pod_fixed_overhead();
        let overhead = |mib: u64| limits((mib * MIB) as i64, 0, 0);
        // The declared overhead: exactly the guest's share on top.
        let p = pod(
            Some(limits(512 * MIB as i64, 0, 0)),
            Some(overhead(declared.memory_mib)),
        );
        assert_eq!(size(&p).memory_mib, 512 + GUEST_OVERHEAD_MIB);
        // 200 MiB declared: 192 MiB for the guest.
        let p = pod(Some(limits(512 * MIB as i64, 0, 0)), Some(overhead(200)));
        assert_eq!(size(&p).memory_mib, 512 + 200 - HOST_OVERHEAD_MIB);
        // A smaller one never shrinks the guest's share.
        let p = pod(Some(limits(512 * MIB as i64, 0, 0)), Some(overhead(10)));
        assert_eq!(size(&p).memory_mib, 512 + GUEST_OVERHEAD_MIB);
    }

    #[test]
    fn limits_no_vm_can_hold_are_refused_naming_the_field() {
        let p = pod(Some(limits(i64::MAX, 0, 0)), None);
        let err = vm_size(&p, HandlerDefaults::default()).expect_err("too much memory");
        assert!(
            err.to_string()
                .starts_with("linux.resources.memory_limit_in_bytes:"),
            "{err}"
        );
        let p = pod(Some(limits(0, 3_300_000, 100_000)), None);
        let err = vm_size(&p, HandlerDefaults::default()).expect_err("too many cpus");
        assert!(
            err.to_string().starts_with("linux.resources.cpu_quota:"),
            "{err}"
        );
        assert_eq!(
            tonic::Status::from(err).code(),
            tonic::Code::InvalidArgument
        );
        // 32 vCPUs exactly fit.
        let p = pod(Some(limits(0, 3_200_000, 100_000)), None);
        assert_eq!(size(&p).vcpus, 32);
    }

    #[test]
    fn the_runtime_class_declares_the_fixed_overhead() {
        let o = pod_fixed_overhead();
        assert_eq!(o.memory_mib, GUEST_OVERHEAD_MIB + HOST_OVERHEAD_MIB);
        assert_eq!(o.quantities(), ("72Mi".to_string(), "250m".to_string()));
        let yaml = o.runtime_class_yaml("vessel");
        assert!(yaml.contains("handler: vessel\n"), "{yaml}");
        assert!(yaml.contains("    memory: \"72Mi\"\n"), "{yaml}");
        assert!(yaml.contains("    cpu: \"250m\"\n"), "{yaml}");
    }
}
