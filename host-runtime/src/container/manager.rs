//! Containers as the CRI drives them, in a running pod VM: create (rootfs
//! from the image store, mounts, the OCI spec, the agent's Create, the log
//! copiers), start (and the waiter that records the exit at once), stop,
//! remove, ExecSync.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_cri::v1::{ContainerConfig, ContainerEventResponse, ContainerEventType, PodSandboxConfig};
use prost::Message;
use tonic::Status;
use vessel_agent_api::client::stdio::read_output;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::processes_client::ProcessesClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, ListContainersRequest, SignalContainerRequest,
    StartContainerRequest, StdioStream, StreamStdio, WaitContainerRequest, WaitProcessRequest,
};

use super::cri_log::{resolve_log_path, CriLogWriter, Stream, DEFAULT_MAX_LINE};
use super::exec::ExecSpec;
use super::fanout::OutputFanout;
use super::share::ContainerShare;
use super::spec::{self, ImageConfig, SpecInput};
use crate::daemon::runtime::{now_nanos, Runtime, SharedLog};
use crate::pod::{agent_call, AGENT_CALL_TIMEOUT, SHARE_DIR};
use crate::sandbox::manager::invalid;
use crate::store::{ContainerMetadata, ContainerRecord, ContainerState, SandboxState};
use crate::vm::VmProcess;

/// Most output ExecSync returns per stream, as the kubelet caps it
/// (`maxExecSyncOutput`); more is cut off, as containerd does.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// How many times in a row a container's exit waiter asks again after the
/// connection to a running pod's agent broke.
const WAIT_RETRIES: u32 = 30;

/// The pause between those.
const WAIT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How long a container may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn agent_status(e: crate::pod::PodError) -> Status {
    match e {
        crate::pod::PodError::Agent { call, status } => {
            Status::new(status.code(), format!("{call}: {}", status.message()))
        }
        crate::pod::PodError::AgentTimeout { .. } => Status::deadline_exceeded(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl Runtime {
    /// A CRI container event for `c`, with its pod's status and the
    /// statuses of the pod's containers (what the kubelet's evented PLEG
    /// reads instead of asking).
    pub fn event(&self, c: &ContainerRecord, kind: ContainerEventType) -> ContainerEventResponse {
        use crate::cri::runtime::convert;
        let pod = self.store.find_sandbox(&c.sandbox_id).ok();
        let filter = crate::store::ContainerFilter {
            sandbox_id: c.sandbox_id.clone(),
            ..crate::store::ContainerFilter::default()
        };
        let containers = self.store.list_containers(&filter).unwrap_or_default();
        ContainerEventResponse {
            container_id: c.id.clone(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status: pod.as_ref().map(convert::pod_sandbox_status),
            containers_statuses: containers.iter().map(convert::container_status).collect(),
        }
    }

    /// The agent channel and share paths of a ready sandbox.
    pub(crate) async fn ready_pod(&self, sandbox_id: &str) -> Result<ReadyPod, Status> {
        let record = self.store.find_sandbox(sandbox_id)?;
        let live = match (record.state, self.pod(&record.id)) {
            (SandboxState::Ready, Some(live)) => live,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {} is not ready",
                    record.id
                )))
            }
        };
        let pod = live.lock().await;
        let (Some(channel), Some(sandbox)) = (pod.agent_channel(), pod.sandbox_info().cloned())
        else {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} has no agent",
                record.id
            )));
        };
        Ok(ReadyPod {
            id: record.id,
            log_directory: record.log_directory,
            channel,
            sandbox,
            share_source: pod.config().share_source(),
            share: pod.config().state_dir().join(SHARE_DIR),
        })
    }

    /// CreateContainer: see the module doc. Rolls back what it made on failure.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, Status> {
        let metadata = config
            .metadata
            .as_ref()
            .ok_or_else(|| invalid("config.metadata", "is missing"))?;
        if metadata.name.is_empty() {
            return Err(invalid("config.metadata.name", "is empty"));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(invalid("config.image.image", "is empty"));
        }
        let pod = self.ready_pod(sandbox_id).await?;
        let image_id = self
            .images
            .resolve(&image_name)
            .map_err(crate::cri::image::status_of)?
            .ok_or_else(|| Status::not_found(format!("image {image_name:?} is not pulled")))?;
        let image = ImageConfig::from_config_json(
            &self
                .images
                .config_json(&image_id)
                .map_err(crate::cri::image::status_of)?,
        )
        .map_err(|e| Status::internal(format!("image {image_id} has a bad config: {e}")))?;
        let log_path = resolve_log_path(&pod.log_directory, &config.log_path)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;

        let mut record = ContainerRecord {
            id: crate::store::new_id()?,
            sandbox_id: pod.id.clone(),
            metadata: ContainerMetadata {
                name: metadata.name.clone(),
                attempt: metadata.attempt,
            },
            image_ref: image_name.clone(),
            image_id: image_id.clone(),
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            state: ContainerState::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            mounts: config.mounts.clone(),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            config: config.encode_to_vec(),
            process_json: String::new(),
            stop_signal: image.stop_signal.clone(),
        };
        let id = record.id.clone();
        // The record first: it reserves the name (AlreadyExists names the holder).
        {
            let _creating = self.create_lock.lock().await;
            self.store.insert_container(&record)?;
        }
        let share = ContainerShare::new(&pod.share_source, &pod.share, &id);
        let made = self
            .make_container(&pod, &share, &mut record, &config, &sandbox_config, &image)
            .await;
        if let Err(status) = made {
            tracing::warn!(pod = %pod.id, container = %id, error = %status.message(), "CreateContainer failed; rolling back");
            self.abort_tasks(&id);
            self.logs_lock().remove(&id);
            self.fanouts_lock().remove(&id);
            let _ = agent_call(
                "Containers.Delete",
                AGENT_CALL_TIMEOUT,
                ContainersClient::new(pod.channel.clone()).delete(DeleteContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await;
            if let Err(e) = self.images.remove_rootfs(&id).await {
                tracing::error!(container = %id, error = %e, "cannot remove the rootfs of a failed container");
            }
            if let Err(e) = share.remove() {
                tracing::error!(container = %id, error = %e, "cannot remove the mounts of a failed container");
            }
            self.store.delete_container(&id)?;
            return Err(status);
        }
        self.store
            .update_container(&id, |r| r.process_json = record.process_json.clone())?;
        self.publish(self.event(&record, ContainerEventType::ContainerCreatedEvent));
        tracing::info!(pod = %pod.id, container = %id, name = %metadata.name, image = %image_name, "container created");
        Ok(id)
    }

    async fn make_container(
        &self,
        pod: &ReadyPod,
        share: &ContainerShare,
        record: &mut ContainerRecord,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
        image: &ImageConfig,
    ) -> Result<(), Status> {
        let id = record.id.clone();
        let rootfs_target = share.make()?;
        self.images
            .create_rootfs(&id, &record.image_id, &rootfs_target)
            .await
            .map_err(crate::cri::image::status_of)?;
        let mut guest_paths = Vec::new();
        for (i, m) in config.mounts.iter().enumerate() {
            if m.host_path.is_empty() {
                return Err(invalid(
                    &format!("config.mounts[{i}].host_path"),
                    "is empty",
                ));
            }
            if m.selinux_relabel {
                tracing::debug!(container = %id, mount = i, "selinux_relabel ignored: the guest has no SELinux");
            }
            guest_paths.push(share.bind(i, std::path::Path::new(&m.host_path), m.readonly)?);
        }
        let mapper = |i: usize, _m: &k8s_cri::v1::Mount| -> Result<String, spec::SpecError> {
            Ok(guest_paths.get(i).cloned().unwrap_or_default())
        };
        let built = spec::build(SpecInput {
            config,
            sandbox_config,
            sandbox: &pod.sandbox,
            image,
            host_paths: &mapper,
            extra_mounts: Vec::new(),
        })?;
        record.process_json = serde_json::to_string(&built.spec.process())
            .map_err(|e| Status::internal(format!("container process to JSON: {e}")))?;
        let spec_json = serde_json::to_string(&built.spec)
            .map_err(|e| Status::internal(format!("container spec to JSON: {e}")))?;
        agent_call(
            "Containers.Create",
            AGENT_CALL_TIMEOUT,
            ContainersClient::new(pod.channel.clone()).create(CreateContainerRequest {
                container_id: id.clone(),
                oci_spec_json: spec_json,
                rootfs: share.guest_rootfs(),
                streams: Some(StreamStdio {
                    stdin: config.stdin,
                    terminal_size: None,
                }),
                run_as: Some(built.run_as),
                ..CreateContainerRequest::default()
            }),
        )
        .await
        .map_err(agent_status)?;
        // The copiers attach now: the agent holds the output until they read.
        self.attach_output(&pod.channel, &id, record_log_path(record))
    }

    /// Starts the two copiers of a container's output into its CRI log
    /// (opened for appending).
    fn attach_output(
        &self,
        channel: &Channel,
        id: &str,
        log_path: Option<PathBuf>,
    ) -> Result<(), Status> {
        let log = match log_path {
            Some(path) => Some(Arc::new(Mutex::new(
                CriLogWriter::open(&path, DEFAULT_MAX_LINE)
                    .map_err(|e| Status::internal(e.to_string()))?,
            ))),
            None => None,
        };
        if let Some(log) = &log {
            self.logs_lock().insert(id.to_string(), Arc::clone(log));
        }
        let fanout = Arc::new(OutputFanout::default());
        self.fanouts_lock()
            .insert(id.to_string(), Arc::clone(&fanout));
        for stream in [Stream::Stdout, Stream::Stderr] {
            let task = tokio::spawn(copy_output(
                channel.clone(),
                id.to_string(),
                stream,
                log.clone(),
                Arc::clone(&fanout),
            ));
            self.add_task(id, task.abort_handle());
        }
        Ok(())
    }

    /// After a restart: finds the sandbox's containers in its agent again,
    /// records the exits that happened meanwhile, and re-attaches the log
    /// copiers (the agent kept the output no one read) and exit waiters.
    pub async fn reattach_containers(self: &Arc<Self>, sandbox_id: &str, channel: Channel) {
        let known = match agent_call(
            "Containers.List",
            AGENT_CALL_TIMEOUT,
            ContainersClient::new(channel.clone()).list(ListContainersRequest {}),
        )
        .await
        {
            Ok(r) => r.containers,
            Err(e) => {
                tracing::warn!(pod = %sandbox_id, error = %e, "cannot list the containers of an adopted pod");
                Vec::new()
            }
        };
        let records = match self.store.list_containers(&crate::store::ContainerFilter {
            sandbox_id: sandbox_id.to_string(),
            ..Default::default()
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(pod = %sandbox_id, error = %e, "cannot list recorded containers");
                return;
            }
        };
        for c in records {
            if !matches!(c.state, ContainerState::Running | ContainerState::Created) {
                continue;
            }
            let Some(info) = known.iter().find(|k| k.container_id == c.id) else {
                let _ = self.store.update_container(&c.id, |r| {
                    r.state = ContainerState::Exited;
                    r.finished_at = now_nanos();
                    r.exit_code = 137;
                    r.reason = "Error".to_string();
                    r.message = "the pod's agent no longer knows this container".to_string();
                });
                continue;
            };
            if let Err(e) = self.attach_output(&channel, &c.id, record_log_path(&c)) {
                tracing::warn!(pod = %sandbox_id, container = %c.id, error = %e.message(), "cannot re-attach the container log");
            }
            if c.state == ContainerState::Running {
                // Wait returns at once for a container that exited meanwhile.
                let rt = Arc::clone(self);
                let (ch, id) = (channel.clone(), c.id.clone());
                let sandbox = sandbox_id.to_string();
                let waiter = tokio::spawn(async move { rt.wait_exit(ch, id, sandbox).await });
                self.add_task(&c.id, waiter.abort_handle());
            }
            tracing::info!(pod = %sandbox_id, container = %c.id, status = info.status, "container found again");
        }
    }

    /// The attach fan-out of a container's output, while its copiers run.
    pub fn output_fanout(&self, id: &str) -> Option<Arc<OutputFanout>> {
        self.fanouts_lock().get(id).cloned()
    }

    fn fanouts_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<OutputFanout>>> {
        self.fanouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn logs_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, SharedLog>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// StartContainer: runs the process and starts the waiter that records
    /// its exit.
    pub async fn start_container(self: &Arc<Self>, id_or_prefix: &str) -> Result<(), Status> {
        let c = self.store.find_container(id_or_prefix)?;
        if c.state != ContainerState::Created {
            return Err(Status::failed_precondition(format!(
                "container {} is {:?}, not created",
                c.id, c.state
            )));
        }
        let pod = self.ready_pod(&c.sandbox_id).await?;
        agent_call(
            "Containers.Start",
            AGENT_CALL_TIMEOUT,
            ContainersClient::new(pod.channel.clone()).start(StartContainerRequest {
                container_id: c.id.clone(),
            }),
        )
        .await
        .map_err(agent_status)?;
        let started = self.store.update_container(&c.id, |r| {
            r.state = ContainerState::Running;
            r.started_at = now_nanos();
        })?;
        self.publish(self.event(&started, ContainerEventType::ContainerStartedEvent));
        let rt = Arc::clone(self);
        let id = c.id.clone();
        let sandbox = c.sandbox_id.clone();
        let waiter = tokio::spawn(async move { rt.wait_exit(pod.channel, id, sandbox).await });
        self.add_task(&c.id, waiter.abort_handle());
        tracing::info!(pod = %c.sandbox_id, container = %c.id, "container started");
        Ok(())
    }

    /// Waits for a container's exit (no deadline: it may run for months)
    /// and records it at once. A broken connection to the agent is not an
    /// exit: the wait is asked again while the pod's VMM runs, and only a
    /// pod that is gone (or an agent that keeps failing) counts as lost.
    async fn wait_exit(&self, channel: Channel, id: String, sandbox_id: String) {
        let mut failures = 0u32;
        let mut vm_gone = false;
        let reply = loop {
            let reply = ContainersClient::new(channel.clone())
                .wait(WaitContainerRequest {
                    container_id: id.clone(),
                })
                .await;
            match reply {
                Ok(r) => break Ok(r.into_inner()),
                Err(status) => {
                    failures += 1;
                    let vm_runs = match self.pod(&sandbox_id) {
                        Some(pod) => {
                            pod.lock()
                                .await
                                .vm()
                                .and_then(VmProcess::pid)
                                .is_some_and(|pid| {
                                    crate::store::ProcessRecord::of(pid).is_ok_and(|r| r.is_alive())
                                })
                        }
                        None => false,
                    };
                    tracing::warn!(pod = %sandbox_id, container = %id, code = ?status.code(), error = %status.message(), vm_runs, failures, "Containers.Wait failed");
                    if !vm_runs || failures >= WAIT_RETRIES {
                        vm_gone = !vm_runs;
                        break Err(status);
                    }
                    tokio::time::sleep(WAIT_RETRY_PAUSE).await;
                }
            }
        };
        let lost = reply.is_err();
        let (exit_code, oom, finished_at, message) = match reply {
            Ok(r) => (r.exit_code, r.oom_killed, r.finished_at, String::new()),
            // The VM went away under it (killed VMM, crashed guest, stopped
            // pod): its log's last line says how, if it is still there.
            Err(status) if vm_gone => {
                let log = match self.pod(&sandbox_id) {
                    Some(pod) => pod.lock().await.vm().map(|vm| vm.config().vmm_log_path()),
                    None => None,
                };
                let last = log.and_then(|l| crate::vm::last_log_line(&l));
                let last = last.map_or_else(
                    || status.message().to_string(),
                    |l| l.escape_debug().to_string(),
                );
                (
                    137,
                    false,
                    now_nanos(),
                    format!("the pod VM exited: {last}"),
                )
            }
            Err(status) => (
                137,
                false,
                now_nanos(),
                format!("lost the pod's agent: {}", status.message()),
            ),
        };
        let updated = self.store.update_container(&id, |r| {
            if r.state == ContainerState::Running {
                r.state = ContainerState::Exited;
                r.exit_code = exit_code;
                // The guest's clock (its exit time, right also when vesseld
                // learns of it late), within [start, now] by the host's:
                // the guest's clock may lag or lead it.
                r.finished_at = if finished_at > 0 {
                    finished_at.max(r.started_at).min(now_nanos())
                } else {
                    now_nanos()
                };
                r.reason = if lost && vm_gone {
                    crate::sandbox::manager::VM_EXITED
                } else if lost {
                    crate::sandbox::manager::AGENT_LOST
                } else if oom {
                    "OOMKilled"
                } else if exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string();
                r.message = message;
            }
        });
        match updated {
            Ok(c) => {
                tracing::info!(pod = %c.sandbox_id, container = %id, exit_code, oom, "container exited");
                self.publish(self.event(&c, ContainerEventType::ContainerStoppedEvent));
            }
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "exit of a container already removed")
            }
        }
    }

    /// StopContainer: its stop signal, then SIGKILL after `timeout` seconds.
    /// A container that is not running is fine.
    pub async fn stop_container(&self, id_or_prefix: &str, timeout: i64) -> Result<(), Status> {
        let c = self.store.find_container(id_or_prefix)?;
        match c.state {
            ContainerState::Running => {}
            ContainerState::Created => {
                // Never started: nothing runs; it just counts as exited.
                let c = self.store.update_container(&c.id, |r| {
                    r.state = ContainerState::Exited;
                    r.finished_at = now_nanos();
                    r.exit_code = 0;
                    r.reason = "Completed".to_string();
                })?;
                self.publish(self.event(&c, ContainerEventType::ContainerStoppedEvent));
                return Ok(());
            }
            _ => return Ok(()),
        }
        let Some(live) = self.pod(&c.sandbox_id) else {
            return Ok(());
        };
        let channel = live.lock().await.agent_channel();
        let Some(channel) = channel else {
            return Ok(());
        };
        let signal = if timeout > 0 {
            parse_signal(&c.stop_signal).unwrap_or(libc::SIGTERM)
        } else {
            libc::SIGKILL
        };
        self.signal(&channel, &c.id, signal).await?;
        if signal != libc::SIGKILL
            && self
                .exited_within(&c.id, Duration::from_secs(timeout as u64))
                .await
        {
            return Ok(());
        }
        if signal != libc::SIGKILL {
            self.signal(&channel, &c.id, libc::SIGKILL).await?;
        }
        if !self.exited_within(&c.id, KILL_WAIT).await {
            return Err(Status::deadline_exceeded(format!(
                "container {} did not exit {KILL_WAIT:?} after SIGKILL",
                c.id
            )));
        }
        Ok(())
    }

    async fn signal(&self, channel: &Channel, id: &str, signal: i32) -> Result<(), Status> {
        let sent = agent_call(
            "Containers.Signal",
            AGENT_CALL_TIMEOUT,
            ContainersClient::new(channel.clone()).signal(SignalContainerRequest {
                container_id: id.to_string(),
                signal: signal as u32,
            }),
        )
        .await;
        match sent {
            Ok(_) => Ok(()),
            // Exited meanwhile.
            Err(crate::pod::PodError::Agent { status, .. })
                if status.code() == tonic::Code::FailedPrecondition =>
            {
                Ok(())
            }
            Err(e) => Err(agent_status(e)),
        }
    }

    /// Whether the waiter records the container's exit within `limit`.
    async fn exited_within(&self, id: &str, limit: Duration) -> bool {
        let mut events = self.events.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.store.container(id) {
                Ok(c) if c.state != ContainerState::Running => return true,
                Err(_) => return true,
                Ok(_) => {}
            }
            // Woken by any event, re-checked; a short tick covers a lag.
            let wait = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                events.recv(),
            );
            let _ = wait.await;
            if tokio::time::Instant::now() >= deadline {
                return matches!(self.store.container(id), Ok(c) if c.state != ContainerState::Running);
            }
        }
    }

    /// RemoveContainer: kills it if it runs, deletes it in the guest,
    /// unmounts its rootfs and mounts, forgets it. Unknown ids are fine.
    pub async fn remove_container(&self, id_or_prefix: &str) -> Result<(), Status> {
        let c = match self.store.find_container(id_or_prefix) {
            Ok(c) => c,
            Err(crate::store::StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if c.state == ContainerState::Running {
            self.stop_container(&c.id, 0).await?;
        }
        let live = self.pod(&c.sandbox_id);
        let (channel, source, share) = match &live {
            Some(live) => {
                let pod = live.lock().await;
                (
                    pod.agent_channel(),
                    Some(pod.config().share_source()),
                    Some(pod.config().state_dir().join(SHARE_DIR)),
                )
            }
            None => (None, None, None),
        };
        if let Some(channel) = channel {
            agent_call(
                "Containers.Delete",
                AGENT_CALL_TIMEOUT,
                ContainersClient::new(channel).delete(DeleteContainerRequest {
                    container_id: c.id.clone(),
                }),
            )
            .await
            .map_err(agent_status)?;
        }
        self.abort_tasks(&c.id);
        self.logs_lock().remove(&c.id);
        self.fanouts_lock().remove(&c.id);
        self.images
            .remove_rootfs(&c.id)
            .await
            .map_err(crate::cri::image::status_of)?;
        if let (Some(source), Some(share)) = (source, share) {
            ContainerShare::new(&source, &share, &c.id).remove()?;
        }
        if let Some(removed) = self.store.delete_container(&c.id)? {
            self.publish(self.event(&removed, ContainerEventType::ContainerDeletedEvent));
        }
        tracing::info!(pod = %c.sandbox_id, container = %c.id, "container removed");
        Ok(())
    }

    /// ReopenContainerLog: the kubelet rotated the file.
    pub fn reopen_log(&self, id_or_prefix: &str) -> Result<(), Status> {
        let c = self.store.find_container(id_or_prefix)?;
        if c.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let log = self.logs_lock().get(&c.id).cloned();
        if let Some(log) = log {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .reopen()
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(())
    }

    /// ExecSync: runs `cmd` in the container to its end (or `timeout`
    /// seconds, 0 for none); returns stdout, stderr (each cut at
    /// [`MAX_EXEC_OUTPUT`]) and the exit code.
    pub async fn exec_sync(
        &self,
        id_or_prefix: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32), Status> {
        // The timeout bounds the whole call, starting included: a guest
        // that does not answer costs the caller what it asked for.
        let deadline = (timeout > 0)
            .then(|| tokio::time::Instant::now() + Duration::from_secs(timeout as u64));
        let exec = self
            .start_exec_by(
                id_or_prefix,
                &ExecSpec {
                    cmd: cmd.clone(),
                    ..ExecSpec::default()
                },
                deadline,
            )
            .await?;
        let (c, exec_id) = (exec.container_id.clone(), exec.exec_id.clone());
        let mut processes = ProcessesClient::new(exec.channel.clone());
        let out = tokio::spawn(collect_capped(
            exec.channel.clone(),
            c.clone(),
            exec_id.clone(),
            StdioStream::Stdout,
        ));
        let err = tokio::spawn(collect_capped(
            exec.channel.clone(),
            c.clone(),
            exec_id.clone(),
            StdioStream::Stderr,
        ));
        let wait = processes.wait(WaitProcessRequest {
            container_id: c.clone(),
            exec_id: exec_id.clone(),
        });
        let waited = match deadline {
            Some(d) => tokio::time::timeout_at(d, wait).await,
            None => Ok(wait.await),
        };
        let result = match waited {
            Ok(Ok(reply)) => {
                let code = reply.into_inner().exit_code;
                // A process the command left behind may hold its output
                // open (as may a hostile guest): the rest of the timeout
                // (at least EXEC_DRAIN_MIN, for output still in transit),
                // or EXEC_DRAIN_TIMEOUT without one. Then an error, as
                // containerd's drain_exec_sync_io_timeout gives.
                let now = tokio::time::Instant::now();
                let drain =
                    deadline.map_or(now + EXEC_DRAIN_TIMEOUT, |d| d.max(now + EXEC_DRAIN_MIN));
                let (out_abort, err_abort) = (out.abort_handle(), err.abort_handle());
                match tokio::time::timeout_at(drain, futures_util::future::join(out, err)).await {
                    Ok((stdout, stderr)) => {
                        Ok((stdout.unwrap_or_default(), stderr.unwrap_or_default(), code))
                    }
                    Err(_) => {
                        out_abort.abort();
                        err_abort.abort();
                        Err(Status::deadline_exceeded(format!(
                            "command {cmd:?} exited with {code}, but its output did not end in time (a process it started may hold it open)"
                        )))
                    }
                }
            }
            Ok(Err(status)) => {
                out.abort();
                err.abort();
                Err(Status::new(
                    status.code(),
                    format!("Processes.Wait: {}", status.message()),
                ))
            }
            Err(_) => {
                out.abort();
                err.abort();
                // Killing and forgetting it may take as long again on a
                // guest that stopped answering: not on the caller's time.
                tokio::spawn(async move {
                    exec.kill().await;
                    exec.delete().await;
                });
                return Err(Status::deadline_exceeded(format!(
                    "command {cmd:?} did not finish within {timeout} s"
                )));
            }
        };
        exec.delete().await;
        result
    }
}

/// How long ExecSync without a timeout waits for the output of a command
/// that has exited.
const EXEC_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The least time ExecSync gives a command's output to arrive after it
/// exited, even past its timeout (a probe that ends just in time).
const EXEC_DRAIN_MIN: Duration = Duration::from_secs(2);

/// The CRI log file of a container, if it has one.
fn record_log_path(c: &ContainerRecord) -> Option<PathBuf> {
    (!c.log_path.is_empty()).then(|| PathBuf::from(&c.log_path))
}

/// What container calls need of their sandbox.
pub(crate) struct ReadyPod {
    pub(crate) id: String,
    log_directory: String,
    pub(crate) channel: Channel,
    sandbox: vessel_agent_api::proto::SandboxInfo,
    share_source: PathBuf,
    share: PathBuf,
}

/// Copies one output of a container into its CRI log (or drops it when the
/// container has no log) and to its attach sessions until the stream ends.
async fn copy_output(
    channel: Channel,
    id: String,
    stream: Stream,
    log: Option<SharedLog>,
    fanout: Arc<OutputFanout>,
) {
    let agent_stream = match stream {
        Stream::Stdout => StdioStream::Stdout,
        Stream::Stderr => StdioStream::Stderr,
    };
    let mut failed = false;
    let copied = read_output(channel, &id, "", agent_stream, |data| {
        fanout.publish(stream, data);
        if let (Some(log), false) = (&log, failed) {
            if let Err(e) = log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(stream, data)
            {
                // Keep reading: an unread stream would block the container.
                tracing::warn!(container = %id, error = %e, "cannot write the container log");
                failed = true;
            }
        }
    })
    .await;
    fanout.close(stream);
    if let Some(log) = &log {
        let _ = log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .close_stream(stream);
    }
    if let Err(status) = copied {
        tracing::debug!(container = %id, stream = stream.as_str(), error = %status.message(), "output stream ended");
    }
}

/// One output of an exec, cut at [`MAX_EXEC_OUTPUT`] (read to its end).
async fn collect_capped(
    channel: Channel,
    id: String,
    exec_id: String,
    stream: StdioStream,
) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = read_output(channel, &id, &exec_id, stream, |data| {
        let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
        out.extend_from_slice(&data[..data.len().min(room)]);
    })
    .await;
    out
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    nix::sys::signal::Signal::iterator()
        .find(|sig| sig.as_str().strip_prefix("SIG") == Some(name))
        .map(|sig| sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal(""), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }
}
