//! One pod's life through the CRI, each RPC timed: RunPodSandbox,
//! CreateContainer, StartContainer, StopPodSandbox, RemovePodSandbox; and
//! the latency of ExecSync.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    CreateContainerRequest, ExecSyncRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use vessel_client::{call, request, ClientError, Cri};

use super::{pod_config, sleeper_config, LONG, QUICK};

/// The RPCs of a lifecycle, in order, as they are named in tables.
pub const STEPS: [&str; 5] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];

/// How long each RPC of one lifecycle took, in [`STEPS`] order.
#[derive(Debug, Clone, Copy)]
pub struct Steps(pub [Duration; 5]);

impl Steps {
    /// The whole lifecycle: the sum of its RPCs (the client's own work
    /// between them is left out).
    pub fn total(&self) -> Duration {
        self.0.iter().sum()
    }
}

/// An RPC of the lifecycle failed.
#[derive(Debug)]
pub struct StepError {
    /// Which (one of [`STEPS`], or `ExecSync`).
    pub step: &'static str,
    /// Why.
    pub error: ClientError,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

impl std::error::Error for StepError {}

fn failed(step: &'static str) -> impl FnOnce(ClientError) -> StepError {
    move |error| StepError { step, error }
}

/// A running pod: its sandbox and its one container.
#[derive(Debug, Clone)]
pub struct RunningPod {
    /// The sandbox id.
    pub pod_id: String,
    /// The `sleep` container's id.
    pub container_id: String,
}

/// Runs pod `name` with a started `sleep` container of `image`; returns it
/// and the time of each of the three RPCs. A failure leaves the sandbox to
/// [`remove_pod`] if it was made (the error's step says how far it got).
pub async fn start_pod(
    cri: &mut Cri,
    name: &str,
    image: &str,
    log_dir: &Path,
) -> Result<(RunningPod, [Duration; 3]), (Option<String>, StepError)> {
    let config = pod_config(name, log_dir);
    let t = Instant::now();
    let pod_id = call(
        "RunPodSandbox",
        Some(LONG),
        cri.runtime.run_pod_sandbox(request(
            RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(|e| (None, failed("RunPodSandbox")(e)))?
    .pod_sandbox_id;
    let run = t.elapsed();
    let t = Instant::now();
    let container_id = call(
        "CreateContainer",
        Some(LONG),
        cri.runtime.create_container(request(
            CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(sleeper_config(image)),
                sandbox_config: Some(config),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(|e| (Some(pod_id.clone()), failed("CreateContainer")(e)))?
    .container_id;
    let create = t.elapsed();
    let t = Instant::now();
    call(
        "StartContainer",
        Some(LONG),
        cri.runtime.start_container(request(
            StartContainerRequest {
                container_id: container_id.clone(),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(|e| (Some(pod_id.clone()), failed("StartContainer")(e)))?;
    let start = t.elapsed();
    Ok((
        RunningPod {
            pod_id,
            container_id,
        },
        [run, create, start],
    ))
}

/// Stops and removes sandbox `pod_id`; returns the time of each RPC.
pub async fn remove_pod(cri: &mut Cri, pod_id: &str) -> Result<[Duration; 2], StepError> {
    let t = Instant::now();
    call(
        "StopPodSandbox",
        Some(LONG),
        cri.runtime.stop_pod_sandbox(request(
            StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(failed("StopPodSandbox"))?;
    let stop = t.elapsed();
    let t = Instant::now();
    call(
        "RemovePodSandbox",
        Some(LONG),
        cri.runtime.remove_pod_sandbox(request(
            RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            },
            Some(LONG),
        )),
    )
    .await
    .map_err(failed("RemovePodSandbox"))?;
    Ok([stop, t.elapsed()])
}

/// One whole lifecycle of pod `name`, timed. After a failure it still tries
/// to stop and remove what was made, so the next round starts clean.
pub async fn lifecycle(
    cri: &mut Cri,
    name: &str,
    image: &str,
    log_dir: &Path,
) -> Result<Steps, StepError> {
    let (pod, [run, create, start]) = match start_pod(cri, name, image, log_dir).await {
        Ok(started) => started,
        Err((made, error)) => {
            if let Some(pod_id) = made {
                let _ = remove_pod(cri, &pod_id).await;
            }
            return Err(error);
        }
    };
    let [stop, remove] = remove_pod(cri, &pod.pod_id).await?;
    Ok(Steps([run, create, start, stop, remove]))
}

/// The latency of one `ExecSync` of `true` in `container_id`; an exit code
/// other than 0 is an error too.
pub async fn exec_true(cri: &mut Cri, container_id: &str) -> Result<Duration, StepError> {
    let t = Instant::now();
    let reply = call(
        "ExecSync",
        Some(QUICK),
        cri.runtime.exec_sync(request(
            ExecSyncRequest {
                container_id: container_id.into(),
                cmd: vec!["true".into()],
                timeout: QUICK.as_secs() as i64,
            },
            Some(QUICK),
        )),
    )
    .await
    .map_err(failed("ExecSync"))?;
    let took = t.elapsed();
    if reply.exit_code != 0 {
        return Err(StepError {
            step: "ExecSync",
            error: ClientError::BadReply(format!(
                "`true` exited with {}: {}",
                reply.exit_code,
                String::from_utf8_lossy(&reply.stderr)
            )),
        });
    }
    Ok(took)
}
