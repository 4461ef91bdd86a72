//! The pod sandbox: per-pod setup applied once (`Sandbox.Setup`) and torn down
//! with the agent.
//!
//! Setup validates the whole request, then finds every link it names, then
//! applies: namespaces and hostname, files, sysctls, network, shares. A failure
//! part-way undoes what was applied, newest first.

mod error;
mod files;
mod namespaces;
mod network;
pub mod pause;
mod spec;
mod sysctl;
mod virtiofs;

use std::sync::Arc;

use tokio::sync::Mutex;

pub use error::SandboxError;
pub use files::SANDBOX_DIR;
pub use namespaces::NS_DIR;
pub use spec::{Mac, SandboxSpec};

use crate::container::Engine;
use crate::proto::{self, SetupSandboxRequest};
use spec::SysctlScope;

/// Everything applied, kept for `Get` and for teardown.
#[derive(Debug, Default)]
struct Applied {
    namespaces: namespaces::PodNs,
    files: files::Written,
    sysctls: sysctl::Previous,
    network: network::Journal,
    mounts: virtiofs::Mounted,
}

impl Applied {
    /// Reverses everything, newest first.
    async fn undo(self, handle: Option<&rtnetlink::Handle>) {
        self.mounts.undo();
        if let Some(handle) = handle {
            self.network.undo(handle).await;
        }
        self.sysctls.undo();
        self.files.undo();
        self.namespaces.undo().await;
    }
}

#[derive(Debug)]
struct Ready {
    info: proto::SandboxInfo,
    applied: Applied,
    handle: rtnetlink::Handle,
}

/// The agent's one sandbox; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sandbox {
    engine: Engine,
    /// `None` until `Setup` succeeds; the async lock serialises Setup calls.
    state: Arc<Mutex<Option<Ready>>>,
}

impl Sandbox {
    /// A sandbox not yet set up, whose namespaces `engine`'s containers will join.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            state: Arc::default(),
        }
    }

    /// Applies `req` once; see the module docs.
    pub async fn setup(
        &self,
        req: &SetupSandboxRequest,
    ) -> Result<proto::SandboxInfo, SandboxError> {
        let mut state = self.state.lock().await;
        if let Some(ready) = state.as_ref() {
            return Err(SandboxError::FailedPrecondition(format!(
                "sandbox {:?} is already set up",
                ready.info.sandbox_id
            )));
        }
        let spec = SandboxSpec::from_request(req)?;
        sysctl::check_exist(&spec.sysctls)?;
        let handle = network::connect()?;
        let resolved = network::resolve(&handle, &spec).await?;
        let mut applied = Applied::default();
        match self.apply(&spec, &resolved, &handle, &mut applied).await {
            Ok(info) => {
                tracing::info!(sandbox_id = %spec.id, hostname = %spec.hostname, "sandbox set up");
                *state = Some(Ready {
                    info: info.clone(),
                    applied,
                    handle,
                });
                Ok(info)
            }
            Err(err) => {
                tracing::warn!(sandbox_id = %spec.id, error = %err, "sandbox setup failed; undoing");
                applied.undo(Some(&handle)).await;
                Err(err)
            }
        }
    }

    async fn apply(
        &self,
        spec: &SandboxSpec,
        resolved: &network::Resolved,
        handle: &rtnetlink::Handle,
        applied: &mut Applied,
    ) -> Result<proto::SandboxInfo, SandboxError> {
        let ipc_sysctls = spec
            .sysctls
            .iter()
            .filter(|s| s.scope == SysctlScope::Ipc)
            .cloned()
            .collect();
        let pod = namespaces::create(
            &spec.hostname,
            ipc_sysctls,
            spec.share_pid,
            self.engine.reaper(),
            &mut applied.namespaces,
        )
        .await?;
        files::write_all(spec, &mut applied.files)?;
        let net_sysctls: Vec<_> = spec
            .sysctls
            .iter()
            .filter(|s| s.scope == SysctlScope::Net)
            .collect();
        sysctl::apply(&net_sysctls, &mut applied.sysctls)?;
        network::apply(handle, spec, resolved, &mut applied.network).await?;
        virtiofs::mount_all(&spec.mounts, &mut applied.mounts)?;
        let interfaces = spec
            .interfaces
            .iter()
            .zip(&resolved.interfaces)
            .map(|(iface, link)| proto::InterfaceInfo {
                mac: iface.mac.to_string(),
                name: iface.name.clone().unwrap_or_else(|| link.name.clone()),
                index: link.index,
            })
            .collect();
        let [hostname_path, hosts_path, resolv_conf_path] =
            files::sandbox_paths().map(|p| p.display().to_string());
        let info = proto::SandboxInfo {
            sandbox_id: spec.id.clone(),
            hostname: spec.hostname.clone(),
            interfaces,
            namespaces: Some(proto::PodNamespaces {
                net: pod.net.display().to_string(),
                ipc: pod.ipc.display().to_string(),
                uts: pod.uts.display().to_string(),
                pid: pod
                    .pid
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            }),
            hosts_path,
            resolv_conf_path,
            hostname_path,
            mount_points: applied
                .mounts
                .points()
                .map(|p| p.display().to_string())
                .collect(),
        };
        // Last: only a complete sandbox makes containers join it.
        self.engine.set_pod_namespaces(Some(pod));
        Ok(info)
    }

    /// What `Setup` applied.
    pub async fn get(&self) -> Result<proto::SandboxInfo, SandboxError> {
        self.state
            .lock()
            .await
            .as_ref()
            .map(|ready| ready.info.clone())
            .ok_or_else(|| SandboxError::NotFound("the sandbox is not set up".into()))
    }

    /// Stops every container and undoes the setup (the agent is going down).
    pub async fn teardown(&self) {
        self.engine.delete_all().await;
        self.engine.set_pod_namespaces(None);
        if let Some(ready) = self.state.lock().await.take() {
            ready.applied.undo(Some(&ready.handle)).await;
            tracing::info!(sandbox_id = %ready.info.sandbox_id, "sandbox torn down");
        }
    }
}
