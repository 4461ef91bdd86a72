//! Pod sandboxes as the CRI makes and unmakes them: RunPodSandbox boots a
//! pod VM on the node's CNI network (the VM takes the place of the pause
//! container), StopPodSandbox stops it, RemovePodSandbox forgets it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};
use prost::Message;
use tonic::Status;
use vessel_agent_api::proto::Dns;

use super::sizing::{vm_size, HandlerDefaults};
use crate::cni::{PodNetwork, PortMapping, Protocol};
use crate::container::spec::pod_shares_pid;
use crate::daemon::runtime::{now_nanos, Runtime};
use crate::net::PodAddressing;
use crate::pod::{CriPod, Pod, PodConfig, Step, GUEST_NIC};
use crate::store::{
    ContainerFilter, ContainerState, ProcessRecord, SandboxMetadata, SandboxRecord, SandboxState,
    VmRecord,
};

/// How long a pod VM may take to answer after its VMM starts (the nested
/// test host is slow; a real host takes well under a second).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a sandbox's VMM is checked for life.
const VM_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How many characters of the sandbox id name the pod's host-side parts
/// (state dir, netns, cgroup): the whole id would make socket paths too long.
pub const HOST_NAME_LEN: usize = 16;

/// The InvalidArgument status for a field.
pub fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// The host-side name of a sandbox's pod.
pub fn host_name(sandbox_id: &str) -> &str {
    &sandbox_id[..HOST_NAME_LEN.min(sandbox_id.len())]
}

/// The reason of a container whose pod VM exited under it (killed, or a
/// crashed guest); the message says how.
pub const VM_EXITED: &str = "PodVMExited";

/// The reason of a container whose pod's agent stopped answering while its
/// VM still ran.
pub const AGENT_LOST: &str = "PodAgentLost";

impl Runtime {
    /// RunPodSandbox: checks the request, records the sandbox, boots its pod
    /// VM; on failure undoes everything and forgets it. Returns its id.
    pub async fn run_sandbox(
        self: &std::sync::Arc<Self>,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, Status> {
        let metadata = sandbox_metadata(&config)?;
        let handler_name = if runtime_handler.is_empty() {
            self.config.default_runtime_handler.as_str()
        } else {
            runtime_handler
        };
        let handler = self.config.handler(handler_name).ok_or_else(|| {
            invalid(
                "runtime_handler",
                format!(
                    "unknown runtime handler {handler_name:?} (this vesseld has: {})",
                    self.config
                        .runtime_handlers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        refuse_node_namespaces(&config)?;
        let size = vm_size(
            &config,
            HandlerDefaults {
                vcpus: handler.default_vcpus,
                memory_mib: u64::from(handler.default_memory_mib),
            },
        )?;
        let cni = self.cni()?;

        let record = {
            let _creating = self.create_lock.lock().await;
            if let Some(existing) = self.store.sandbox_by_name(&metadata)? {
                return Err(Status::already_exists(format!(
                    "a pod sandbox named {}/{} (uid {}, attempt {}) already exists: {existing}",
                    metadata.namespace, metadata.name, metadata.uid, metadata.attempt
                )));
            }
            let record = SandboxRecord {
                id: crate::store::new_id()?,
                metadata: metadata.clone(),
                labels: to_btree(&config.labels),
                annotations: to_btree(&config.annotations),
                runtime_handler: handler_name.to_string(),
                created_at: now_nanos(),
                state: SandboxState::NotReady,
                netns_path: String::new(),
                ips: Vec::new(),
                vm: None,
                cgroup_path: String::new(),
                log_directory: config.log_directory.clone(),
                config: config.encode_to_vec(),
            };
            self.store.insert_sandbox(&record)?;
            record
        };
        let id = record.id.clone();
        let span = tracing::info_span!("RunPodSandbox", pod = %id, name = %metadata.name, namespace = %metadata.namespace);
        let _enter = span.enter();

        let pod_config = self.pod_config(&id, &metadata, &config, handler, size, cni)?;
        let progress = |step: &Step<'_>| log_step(&id, step);
        let started = async {
            let mut pod = Pod::new(pod_config).map_err(|e| invalid("config", e))?;
            match pod.start(&progress).await {
                Ok(()) => Ok(pod),
                Err(e) => {
                    let status = Status::internal(format!("starting the pod VM: {e}"));
                    if let Err(undo) = pod.stop(&progress).await {
                        tracing::error!(pod = %id, error = %undo, "rolling back a failed RunPodSandbox left something behind");
                    }
                    Err(status)
                }
            }
        }
        .await;
        let pod = match started {
            Ok(pod) => pod,
            Err(status) => {
                self.store.delete_sandbox(&id)?;
                return Err(status);
            }
        };
        let ips = pod
            .cni_result()
            .map(|r| {
                r.sandbox_ips(GUEST_NIC)
                    .iter()
                    .map(|ip| ip.address.ip().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let vm = vm_record(&pod);
        let netns = pod.config().netns_path().display().to_string();
        let cgroup = pod
            .host_cgroup()
            .and_then(|cg| cg.dirs().first().map(|d| d.display().to_string()))
            .unwrap_or_default();
        let vmm = vm.as_ref().map(|vm| vm.vmm);
        self.add_pod(&id, pod);
        if let Some(vmm) = vmm {
            self.watch_vm(&id, vmm);
        }
        self.store.update_sandbox(&id, |s| {
            s.state = SandboxState::Ready;
            s.ips = ips;
            s.vm = vm;
            s.netns_path = netns;
            s.cgroup_path = cgroup;
        })?;
        tracing::info!(pod = %id, "pod sandbox ready");
        Ok(id)
    }

    /// What the pod of sandbox `id` is made of (on creation and on adoption).
    fn pod_config(
        &self,
        id: &str,
        metadata: &SandboxMetadata,
        config: &PodSandboxConfig,
        handler: &crate::config::RuntimeHandler,
        size: super::sizing::VmSize,
        cni: crate::cni::Cni,
    ) -> Result<PodConfig, Status> {
        let id = id.to_string();
        let pod_config = PodConfig {
            name: host_name(&id).to_string(),
            rootfs: PathBuf::new(),
            run_dir: self.config.run_dir.clone(),
            state_root: self.config.state_dir.clone(),
            vmm: handler.vmm.clone(),
            kernel: handler.kernel.clone(),
            initramfs: handler.initramfs.clone(),
            virtiofsd: handler.virtiofsd.clone(),
            cpus: size.vcpus,
            memory_mib: u32::try_from(size.memory_mib).unwrap_or(u32::MAX),
            addressing: PodAddressing::default(),
            boot_timeout: BOOT_TIMEOUT,
            ids: None,
            kernel_args: handler.kernel_args.clone(),
            pod_ids: self.config.pod_ids,
            cgroup_parent: crate::cgroup::parent_path(&self.config.cgroup.parent)
                .map_err(|e| Status::internal(format!("cgroup.parent: {e}")))?,
            cri: None,
        };
        let cri = CriPod {
            cni,
            attach: pod_network(
                &id,
                metadata,
                pod_config.netns_path(),
                port_mappings(config)?,
            ),
            hostname: if config.hostname.is_empty() {
                metadata.name.clone()
            } else {
                config.hostname.clone()
            },
            dns: config.dns_config.as_ref().map(|d| Dns {
                nameservers: d.servers.clone(),
                searches: d.searches.clone(),
                options: d.options.clone(),
            }),
            sysctls: config
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone())
                .unwrap_or_default(),
            share_pid_namespace: pod_shares_pid(config),
        };
        Ok(PodConfig {
            cri: Some(cri),
            ..pod_config
        })
    }

    /// StopPodSandbox: kills its containers and stops its VM and network.
    /// Stopping a stopped sandbox is fine; an unknown one is NotFound.
    pub async fn stop_sandbox(&self, id_or_prefix: &str) -> Result<(), Status> {
        let record = self.store.find_sandbox(id_or_prefix)?;
        let id = record.id;
        let containers = self.store.list_containers(&ContainerFilter {
            sandbox_id: id.clone(),
            ..ContainerFilter::default()
        })?;
        for c in containers {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                if let Err(e) = self.stop_container(&c.id, 0).await {
                    tracing::warn!(pod = %id, container = %c.id, error = %e, "cannot stop a container of a stopping sandbox");
                }
            }
        }
        if let Some(pod) = self.take_pod(&id) {
            let mut pod = pod.lock().await;
            let progress = |step: &Step<'_>| log_step(&id, step);
            if let Err(e) = pod.stop(&progress).await {
                // Keep it findable: a retried stop runs what is left again.
                self.store
                    .update_sandbox(&id, |s| s.state = SandboxState::NotReady)?;
                return Err(Status::internal(format!("stopping the pod VM: {e}")));
            }
        } else if record.state == SandboxState::Ready || record.vm.is_some() {
            self.tear_down_unheld(&id, &record.metadata, &record.netns_path)
                .await?;
        }
        self.mark_containers_gone(&id, "Error", "the pod sandbox was stopped")?;
        self.store.update_sandbox(&id, |s| {
            s.state = SandboxState::NotReady;
            s.vm = None;
        })?;
        tracing::info!(pod = %id, "pod sandbox stopped");
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, removes its containers and its
    /// record. An unknown sandbox is fine (the kubelet retries removals).
    pub async fn remove_sandbox(&self, id_or_prefix: &str) -> Result<(), Status> {
        let record = match self.store.find_sandbox(id_or_prefix) {
            Ok(r) => r,
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let id = record.id;
        if self.pod(&id).is_some() || record.state == SandboxState::Ready {
            self.stop_sandbox(&id).await?;
        }
        let containers = self.store.list_containers(&ContainerFilter {
            sandbox_id: id.clone(),
            ..ContainerFilter::default()
        })?;
        for c in containers {
            self.remove_container(&c.id).await?;
        }
        self.store.delete_sandbox(&id)?;
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }

    /// Removes what is left of a sandbox's pod that this vesseld holds no
    /// handle on (made by an earlier vesseld): processes, share, network
    /// (CNI DEL first, so its address is released), cgroup, state dir.
    pub async fn tear_down_unheld(
        &self,
        id: &str,
        metadata: &SandboxMetadata,
        netns_path: &str,
    ) -> Result<(), Status> {
        let name = host_name(id);
        if !netns_path.is_empty() {
            if let Ok(cni) = self.cni() {
                let attach = pod_network(id, metadata, PathBuf::from(netns_path), Vec::new());
                if let Err(e) = cni.del(&attach).await {
                    tracing::warn!(pod = %id, error = %e, "CNI DEL of a pod left by an earlier vesseld");
                }
            }
        }
        let swept = crate::pod::sweep_one(&self.config.run_dir, &self.config.state_dir, name).await;
        for what in &swept.removed {
            tracing::info!(pod = %id, "removed {what}");
        }
        if !swept.errors.is_empty() {
            return Err(Status::internal(format!(
                "removing the pod left by an earlier vesseld: {}",
                swept.errors.join("; ")
            )));
        }
        Ok(())
    }

    /// At start-up: takes over every sandbox an earlier vesseld left ready
    /// (its VM, virtiofsd, network, containers, logs); one whose VM is gone
    /// is torn down and marked not ready, its containers exited.
    pub async fn recover(self: &std::sync::Arc<Self>) {
        let sandboxes = match self
            .store
            .list_sandboxes(&crate::store::SandboxFilter::default())
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the recorded sandboxes");
                return;
            }
        };
        for s in sandboxes {
            if s.state != SandboxState::Ready && s.vm.is_none() {
                continue;
            }
            match self.adopt(&s).await {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::warn!(pod = %s.id, "the pod VM of a ready sandbox is gone; tearing down what is left")
                }
                Err(e) => {
                    tracing::error!(pod = %s.id, error = %e.message(), "cannot take over a pod; tearing it down")
                }
            }
            if let Err(e) = self
                .tear_down_unheld(&s.id, &s.metadata, &s.netns_path)
                .await
            {
                tracing::error!(pod = %s.id, error = %e.message(), "cannot tear down a pod from an earlier vesseld");
            }
            let _ = self.mark_containers_gone(
                &s.id,
                VM_EXITED,
                "the pod VM was gone when vesseld restarted",
            );
            let _ = self.store.update_sandbox(&s.id, |r| {
                r.state = SandboxState::NotReady;
                r.vm = None;
            });
        }
    }

    /// Takes over one sandbox's running pod; false when its VM is gone.
    async fn adopt(self: &std::sync::Arc<Self>, s: &SandboxRecord) -> Result<bool, Status> {
        let config = PodSandboxConfig::decode(s.config.as_slice())
            .map_err(|e| Status::internal(format!("recorded sandbox config: {e}")))?;
        let handler = self.config.handler(&s.runtime_handler).ok_or_else(|| {
            Status::internal(format!(
                "runtime handler {:?} is no longer configured",
                s.runtime_handler
            ))
        })?;
        let size = super::sizing::VmSize {
            vcpus: s.vm.as_ref().map_or(handler.default_vcpus, |vm| vm.vcpus),
            memory_mib: s
                .vm
                .as_ref()
                .map_or(u64::from(handler.default_memory_mib), |vm| vm.memory_mib),
        };
        let pod_config =
            self.pod_config(&s.id, &s.metadata, &config, handler, size, self.cni()?)?;
        let Some(pod) = Pod::adopt(pod_config)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        else {
            return Ok(false);
        };
        let channel = pod.agent_channel();
        let vmm = vm_record(&pod).map(|vm| vm.vmm);
        self.add_pod(&s.id, pod);
        if let Some(vmm) = vmm {
            self.watch_vm(&s.id, vmm);
        }
        match channel {
            Some(channel) => self.reattach_containers(&s.id, channel).await,
            None => {
                self.mark_containers_gone(&s.id, AGENT_LOST, "the pod's agent does not answer")?;
                self.store
                    .update_sandbox(&s.id, |r| r.state = SandboxState::NotReady)?;
            }
        }
        tracing::info!(pod = %s.id, "took over a running pod sandbox");
        Ok(true)
    }

    /// Watches a sandbox's VMM: when it dies while the sandbox is up (killed,
    /// crashed guest), the sandbox becomes NotReady and its containers
    /// exited, saying why; Stop/Remove then clean up as usual.
    pub fn watch_vm(self: &std::sync::Arc<Self>, sandbox_id: &str, vmm: ProcessRecord) {
        let rt = std::sync::Arc::clone(self);
        let id = sandbox_id.to_string();
        tokio::spawn(async move {
            let vmm_log = match rt.pod(&id) {
                Some(pod) => pod.lock().await.config().log_dir().join("vmm.log"),
                None => return,
            };
            loop {
                tokio::time::sleep(VM_WATCH_INTERVAL).await;
                if rt.pod(&id).is_none() {
                    return; // stopped or removed
                }
                if vmm.is_alive() {
                    continue;
                }
                // The VMM's last word says whether the guest crashed (a
                // triple fault), powered off or the VMM itself failed.
                let last =
                    crate::vm::last_log_line(&vmm_log).unwrap_or_else(|| "no log line".to_string());
                tracing::warn!(pod = %id, pid = vmm.pid, vmm_log = %last, "the pod's vessel-vmm exited; the sandbox is not ready");
                let why = format!(
                    "the pod VM exited (vessel-vmm pid {} is gone; its log ends: {last})",
                    vmm.pid
                );
                if let Err(e) = rt.mark_containers_gone(&id, VM_EXITED, &why) {
                    tracing::error!(pod = %id, error = %e.message(), "cannot mark the containers of a dead pod VM");
                }
                if let Err(e) = rt
                    .store
                    .update_sandbox(&id, |s| s.state = SandboxState::NotReady)
                {
                    tracing::error!(pod = %id, error = %e, "cannot mark a dead pod VM's sandbox");
                }
                return;
            }
        });
    }

    /// Marks the sandbox's containers that still look alive as exited, with
    /// `reason` and the message `why`: their VM, where they ran, is gone.
    pub fn mark_containers_gone(
        &self,
        sandbox_id: &str,
        reason: &str,
        why: &str,
    ) -> Result<(), Status> {
        let containers = self.store.list_containers(&ContainerFilter {
            sandbox_id: sandbox_id.to_string(),
            ..ContainerFilter::default()
        })?;
        for c in containers {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                let updated = self.store.update_container(&c.id, |r| {
                    if matches!(r.state, ContainerState::Running | ContainerState::Created) {
                        r.state = ContainerState::Exited;
                        r.finished_at = now_nanos();
                        r.exit_code = 137;
                        r.reason = reason.to_string();
                        r.message = why.to_string();
                    }
                })?;
                self.publish(self.event(
                    &updated,
                    k8s_cri::v1::ContainerEventType::ContainerStoppedEvent,
                ));
            }
        }
        Ok(())
    }
}

fn sandbox_metadata(config: &PodSandboxConfig) -> Result<SandboxMetadata, Status> {
    let m = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("config.metadata", "is missing"))?;
    for (field, value) in [
        ("config.metadata.name", &m.name),
        ("config.metadata.namespace", &m.namespace),
        ("config.metadata.uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(invalid(field, "is empty"));
        }
    }
    Ok(SandboxMetadata {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        attempt: m.attempt,
    })
}

/// The node's network, pid and IPC namespaces are the node's; a pod VM
/// cannot join them.
fn refuse_node_namespaces(config: &PodSandboxConfig) -> Result<(), Status> {
    let Some(ns) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref())
    else {
        return Ok(());
    };
    for (field, mode, what) in [
        ("network", ns.network, "hostNetwork"),
        ("pid", ns.pid, "hostPID"),
        ("ipc", ns.ipc, "hostIPC"),
    ] {
        if mode == NamespaceMode::Node as i32 {
            return Err(invalid(
                &format!("config.linux.security_context.namespace_options.{field}"),
                format!(
                    "NODE ({what}) is not supported: vessel runs every pod in its own VM, \
                     which cannot join the node's namespaces"
                ),
            ));
        }
    }
    Ok(())
}

/// Which pod the CNI chain attaches (or detaches): its `CNI_*` and `CNI_ARGS`.
fn pod_network(
    id: &str,
    metadata: &SandboxMetadata,
    netns: PathBuf,
    port_mappings: Vec<PortMapping>,
) -> PodNetwork {
    PodNetwork {
        sandbox_id: id.to_string(),
        netns,
        ifname: GUEST_NIC.to_string(),
        pod_namespace: metadata.namespace.clone(),
        pod_name: metadata.name.clone(),
        pod_uid: metadata.uid.clone(),
        port_mappings,
    }
}

fn port_mappings(config: &PodSandboxConfig) -> Result<Vec<PortMapping>, Status> {
    let mut out = Vec::new();
    for (i, p) in config.port_mappings.iter().enumerate() {
        if p.host_port <= 0 {
            continue;
        }
        let port = |v: i32, what: &str| {
            u16::try_from(v).map_err(|_| {
                invalid(
                    &format!("config.port_mappings[{i}].{what}"),
                    "is not a port",
                )
            })
        };
        let protocol = match k8s_cri::v1::Protocol::try_from(p.protocol) {
            Ok(k8s_cri::v1::Protocol::Tcp) => Protocol::Tcp,
            Ok(k8s_cri::v1::Protocol::Udp) => Protocol::Udp,
            Ok(k8s_cri::v1::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => {
                return Err(invalid(
                    &format!("config.port_mappings[{i}].protocol"),
                    format!("unknown protocol {}", p.protocol),
                ))
            }
        };
        out.push(PortMapping {
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol,
            host_ip: p.host_ip.clone(),
        });
    }
    Ok(out)
}

fn to_btree(map: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// What a restarted vesseld needs to find the pod's VM again.
fn vm_record(pod: &Pod) -> Option<VmRecord> {
    let vm = pod.vm()?;
    let pid = vm.pid()?;
    let config = vm.config();
    Some(VmRecord {
        vmm: ProcessRecord {
            pid,
            start_time: crate::process::start_time(pid).unwrap_or(0),
        },
        virtiofsd: None,
        vmm_uid: pod.config().ids.map(|i| i.vmm()),
        vsock_socket: config.vsock_path(),
        control_socket: None,
        virtiofsd_socket: Some(pod.config().virtiofsd_config().socket),
        console_log: Some(config.console_path()),
        vcpus: pod.config().cpus,
        memory_mib: u64::from(pod.config().memory_mib),
    })
}

fn log_step(pod: &str, step: &Step<'_>) {
    match step.error {
        None => tracing::debug!(pod, took_ms = step.took.as_millis() as u64, "{}", step.what),
        Some(e) => {
            tracing::warn!(pod, took_ms = step.took.as_millis() as u64, error = %e, "{} failed", step.what)
        }
    }
}
