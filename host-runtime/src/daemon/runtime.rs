//! The state every CRI service shares: configuration, the state store, the
//! image store, the node's CNI network, the live pods and the event feed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use k8s_cri::v1::ContainerEventResponse;
use tokio::sync::broadcast;
use tonic::Status;
use vessel_image::ImageStore;

use crate::cni::{load_network, Cni};
use crate::config::Config;
use crate::container::fanout::OutputFanout;
use crate::pod::Pod;
use crate::store::Store;

/// How many container events a slow `GetContainerEvents` reader may lag
/// behind before it misses some (the kubelet then relists).
const EVENT_BACKLOG: usize = 1024;

/// A running pod sandbox: its pod (VM, virtiofsd, network) behind a lock
/// that orders the RPCs touching it.
pub type LivePod = Arc<tokio::sync::Mutex<Pod>>;

/// vesseld's shared state (see the module doc).
pub struct Runtime {
    /// The configuration, flags and environment applied.
    pub config: Config,
    /// Pod and container records.
    pub store: Store,
    /// Images and container root filesystems.
    pub images: ImageStore,
    /// Running pods by sandbox id.
    pods: Mutex<HashMap<String, LivePod>>,
    /// Container lifecycle events, for `GetContainerEvents`.
    pub events: broadcast::Sender<ContainerEventResponse>,
    /// Serializes the name check and insert of new sandboxes and containers.
    pub create_lock: tokio::sync::Mutex<()>,
    /// The output copiers and exit waiter of each container.
    pub tasks: Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>,
    /// Each container's CRI log, shared by its two output copiers and
    /// `ReopenContainerLog`.
    pub logs: Mutex<HashMap<String, SharedLog>>,
    /// Each running container's output fan-out to attach sessions.
    pub fanouts: Mutex<HashMap<String, Arc<OutputFanout>>>,
    /// The streaming server whose URLs Exec, Attach and PortForward return
    /// (set once `serve` started it).
    pub streaming: OnceLock<vessel_streaming::StreamingServer>,
    /// The node's pod CIDR, as the kubelet last sent it (`UpdateRuntimeConfig`).
    pub pod_cidr: Mutex<Option<String>>,
}

/// A container's CRI log writer.
pub type SharedLog = Arc<Mutex<crate::container::cri_log::CriLogWriter>>;

impl Runtime {
    /// The runtime over opened stores.
    pub fn new(config: Config, store: Store, images: ImageStore) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Arc::new(Runtime {
            config,
            store,
            images,
            pods: Mutex::new(HashMap::new()),
            events,
            create_lock: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            fanouts: Mutex::new(HashMap::new()),
            streaming: OnceLock::new(),
            pod_cidr: Mutex::new(None),
        })
    }

    /// The node's CNI network, read afresh from the conf dir (so a network
    /// installed after vesseld started is used, as containerd does).
    pub fn cni(&self) -> Result<Cni, Status> {
        let c = &self.config.cni;
        let network = load_network(&c.conf_dir).map_err(|e| {
            Status::failed_precondition(format!("the pod network is not ready: {e}"))
        })?;
        Ok(Cni::new(
            network,
            c.bin_dirs.clone(),
            self.config.run_dir.join("cni-cache"),
        ))
    }

    /// Takes the node's pod CIDR from the kubelet: checks it, keeps it, and
    /// with `cni.conf_template` writes the pod network from the template
    /// (its first CIDR as `{{.PodCIDR}}`). An empty CIDR changes nothing.
    pub fn set_pod_cidr(&self, text: &str) -> Result<(), Status> {
        if text.is_empty() {
            return Ok(());
        }
        let cidrs = crate::cni::parse_pod_cidrs(text).map_err(|why| {
            Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {why}"))
        })?;
        if let Some(template) = &self.config.cni.conf_template {
            let written =
                crate::cni::write_from_template(&self.config.cni.conf_dir, template, &cidrs[0])
                    .map_err(|e| {
                        Status::failed_precondition(format!(
                            "cni.conf_template: cannot write the pod network: {e}"
                        ))
                    })?;
            tracing::info!(pod_cidr = %text, file = %written.display(), "pod network written from the CNI template");
        } else {
            tracing::info!(pod_cidr = %text, "pod CIDR noted (no cni.conf_template: the CNI config assigns addresses)");
        }
        *self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.to_string());
        Ok(())
    }

    /// The live pod of a sandbox, if it runs.
    pub fn pod(&self, sandbox_id: &str) -> Option<LivePod> {
        self.lock_pods().get(sandbox_id).cloned()
    }

    /// Records a sandbox's running pod.
    pub fn add_pod(&self, sandbox_id: &str, pod: Pod) -> LivePod {
        let live = Arc::new(tokio::sync::Mutex::new(pod));
        self.lock_pods()
            .insert(sandbox_id.to_string(), Arc::clone(&live));
        live
    }

    /// Forgets a sandbox's pod (to stop it).
    pub fn take_pod(&self, sandbox_id: &str) -> Option<LivePod> {
        self.lock_pods().remove(sandbox_id)
    }

    /// Every live pod.
    pub fn live_pods(&self) -> Vec<(String, LivePod)> {
        self.lock_pods()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    fn lock_pods(&self) -> std::sync::MutexGuard<'_, HashMap<String, LivePod>> {
        // A panic while holding this map lock cannot leave it half-changed
        // (single inserts and removes), so a poisoned lock is still good.
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a task of a container, to abort it when the container goes.
    pub fn add_task(&self, container_id: &str, task: tokio::task::AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(container_id.to_string())
            .or_default()
            .push(task);
    }

    /// Aborts a container's tasks.
    pub fn abort_tasks(&self, container_id: &str) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container_id);
        for t in tasks.into_iter().flatten() {
            t.abort();
        }
    }

    /// Publishes a container event (nobody listening is fine).
    pub fn publish(&self, event: ContainerEventResponse) {
        let _ = self.events.send(event);
    }
}

/// Now, in Unix nanoseconds (the CRI's timestamps).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
