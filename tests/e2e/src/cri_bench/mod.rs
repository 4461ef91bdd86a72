//! The CRI benchmark (tests/bench/cri.sh): vessel against containerd + runc,
//! both driven through the same client (`vessel-client`), in one test host.

pub mod lifecycle;
pub mod memory;
pub mod record;
pub mod streams;
pub mod tables;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig, LinuxPodSandboxConfig,
    PodSandboxConfig, PodSandboxMetadata, VersionRequest,
};
use vessel_client::{call, connect_with_timeout, request, ClientError, Cri};

/// Deadline of an RPC that does real work (boot a VM, start a container).
pub const LONG: Duration = Duration::from_secs(180);

/// Deadline of a quick RPC (status, exec of `true`).
pub const QUICK: Duration = Duration::from_secs(30);

/// The two runtimes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// vesseld: each pod a microVM.
    Vessel,
    /// containerd 1.6 with runc: each pod a pause container.
    Containerd,
}

impl Runtime {
    /// Both, in table order.
    pub const ALL: [Runtime; 2] = [Runtime::Vessel, Runtime::Containerd];

    /// Its name in raw lines and tables.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Vessel => "vessel",
            Runtime::Containerd => "containerd",
        }
    }

    /// The runtime named `name`.
    pub fn parse(name: &str) -> Option<Runtime> {
        Runtime::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The sandbox config of benchmark pod `name` (no limits: each runtime's
/// default size), logging under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "bench".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("bench".to_string(), "cri".to_string())]),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container of `image` running `sleep 3600`.
pub fn sleeper_config(image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// Connects to the CRI socket at `socket` once `Version` answers there
/// (containerd binds its socket a moment before its CRI plugin serves).
pub async fn connect_when_ready(socket: &Path, within: Duration) -> Result<Cri, ClientError> {
    let endpoint = format!("unix://{}", socket.display());
    let deadline = Instant::now() + within;
    loop {
        let last = match connect_with_timeout(&endpoint, Duration::from_secs(5)).await {
            Ok(mut cri) => {
                let version = call(
                    "Version",
                    Some(QUICK),
                    cri.runtime
                        .version(request(VersionRequest::default(), Some(QUICK))),
                )
                .await;
                match version {
                    Ok(_) => return Ok(cri),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
