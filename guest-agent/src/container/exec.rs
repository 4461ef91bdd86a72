//! Exec: extra processes in a running container, each with its own stdio and exit.
//!
//! An exec goes through the same init stage as a container (re-exec of the
//! agent, sync and start pipes), but joins the container's cgroup and
//! namespaces through its pidfd instead of creating them, then applies the
//! exec's own `process` (user, capabilities, rlimits, no_new_privs, cwd).
//! An exec is SIGKILLed when its container's process exits (with a shared pod
//! pid namespace the kernel would not do it).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use oci_spec::runtime::{Process, Spec};
use tokio::sync::{oneshot, watch};

use super::engine::{Engine, START_TIMEOUT};
use super::error::EngineError;
use super::init::InitConfig;
use super::oom_score;
use super::pidfd::PidFd;
use super::spawn::{self, failure, next_message, SyncReader};
use super::state::{unix_nanos, wait_exit, ContainerState, ExitInfo};
use super::stdio::{self, ProcessStdio, StreamSpec};
use super::sync::SyncMessage;
use super::validate::{check_process, optional_file, validate_id, MAX_SPEC_LEN};
use crate::proto::ExecProcessRequest;
use crate::reaper::ExitStatus;

/// Most execs a container keeps (running, or exited and not yet deleted).
pub const MAX_EXECS: usize = 256;

/// A validated `Exec` request.
#[derive(Debug)]
pub struct ExecSpec {
    /// The container to run in.
    pub container_id: String,
    /// The exec's id.
    pub exec_id: String,
    /// The exec's OCI process.
    pub process: Process,
    /// Where stdout goes (files mode).
    pub stdout: Option<PathBuf>,
    /// Where stderr goes (files mode).
    pub stderr: Option<PathBuf>,
    /// Streamed stdio instead of the files.
    pub streams: Option<StreamSpec>,
}

/// Validation shares the container's checks; their messages name
/// `oci_spec_json.process` / `container_id`, so they are renamed for the exec's fields.
fn renamed(err: EngineError, from: &str, to: &str) -> EngineError {
    match err {
        EngineError::InvalidArgument(m) => EngineError::InvalidArgument(m.replace(from, to)),
        other => other,
    }
}

impl ExecSpec {
    /// Validates every field of `req`.
    pub fn from_request(req: &ExecProcessRequest) -> Result<Self, EngineError> {
        validate_id(&req.container_id)?;
        validate_id(&req.exec_id).map_err(|e| renamed(e, "container_id", "exec_id"))?;
        let invalid = |m: String| EngineError::InvalidArgument(m);
        if req.process_json.len() > MAX_SPEC_LEN {
            return Err(invalid(format!(
                "process_json is longer than {MAX_SPEC_LEN} bytes"
            )));
        }
        let process: Process = serde_json::from_str(&req.process_json)
            .map_err(|e| invalid(format!("process_json is not a valid OCI process: {e}")))?;
        let mut spec = Spec::default();
        spec.set_process(Some(process.clone()));
        check_process(&spec).map_err(|e| renamed(e, "oci_spec_json.process", "process_json"))?;
        let stdout = optional_file("stdout_path", &req.stdout_path)?;
        let stderr = optional_file("stderr_path", &req.stderr_path)?;
        let streams = StreamSpec::from_request(
            req.streams.as_ref(),
            process.terminal() == Some(true),
            stdout.is_some() || stderr.is_some(),
            "process_json",
        )?;
        Ok(Self {
            container_id: req.container_id.clone(),
            exec_id: req.exec_id.clone(),
            process,
            stdout,
            stderr,
            streams,
        })
    }
}

/// One exec process.
#[derive(Debug)]
pub(super) struct ExecProcess {
    pidfd: PidFd,
    stdio: Option<Arc<ProcessStdio>>,
    exit: watch::Receiver<Option<ExitInfo>>,
}

#[derive(Debug)]
enum Slot {
    /// Reserved while `Exec` runs.
    Starting,
    Ready(Arc<ExecProcess>),
}

/// The execs of one container.
#[derive(Debug, Default)]
pub(super) struct Execs(Mutex<HashMap<String, Slot>>);

impl Execs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, container_id: &str, exec_id: &str) -> Result<Arc<ExecProcess>, EngineError> {
        match self.lock().get(exec_id) {
            Some(Slot::Ready(e)) => Ok(Arc::clone(e)),
            Some(Slot::Starting) => Err(EngineError::FailedPrecondition(format!(
                "exec {exec_id:?} of container {container_id:?} is still starting"
            ))),
            None => Err(EngineError::NotFound(format!(
                "exec {exec_id:?} not found in container {container_id:?}"
            ))),
        }
    }
}

/// Frees a reserved exec id unless the exec was recorded.
struct Reservation<'a> {
    execs: &'a Execs,
    id: Option<String>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut execs = self.execs.lock();
            if matches!(execs.get(&id), Some(Slot::Starting)) {
                execs.remove(&id);
            }
        }
    }
}

/// Writes the start byte and waits for the exec to be confirmed (EOF on the sync pipe).
async fn run(
    mut start: std::fs::File,
    mut sync: SyncReader,
    label: &str,
) -> Result<(), EngineError> {
    use std::io::Write;
    start
        .write_all(&[1])
        .map_err(|e| EngineError::Internal(format!("{label} cannot be started: {e}")))?;
    match tokio::time::timeout(START_TIMEOUT, next_message(&mut sync)).await {
        Ok(Ok(None)) => Ok(()),
        Ok(Ok(Some(SyncMessage::Failed { kind, message }))) => {
            Err(failure(kind, format!("{label} failed to start: {message}")))
        }
        Ok(Ok(Some(other))) => Err(EngineError::Internal(format!(
            "unexpected message from {label}: {other:?}"
        ))),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(EngineError::Internal(format!(
            "{label} did not confirm its exec within {START_TIMEOUT:?}"
        ))),
    }
}

fn parse_signal(signal: u32) -> Result<Signal, EngineError> {
    i32::try_from(signal)
        .ok()
        .and_then(|n| Signal::try_from(n).ok())
        .ok_or_else(|| {
            EngineError::InvalidArgument(format!("signal {signal} is not a valid signal"))
        })
}

impl Engine {
    /// Runs an exec in a running container; returns its pid once it has exec'd.
    pub async fn exec(&self, req: ExecSpec) -> Result<u32, EngineError> {
        let container = self.get(&req.container_id)?;
        if container.state() != ContainerState::Running {
            return Err(EngineError::FailedPrecondition(format!(
                "container {:?} is not running",
                req.container_id
            )));
        }
        let label = format!("exec {:?} of {:?}", req.exec_id, req.container_id);
        let reservation = {
            let mut execs = container.execs.lock();
            if execs.contains_key(&req.exec_id) {
                return Err(EngineError::AlreadyExists(format!(
                    "{}/{}",
                    req.container_id, req.exec_id
                )));
            }
            if execs.len() >= MAX_EXECS {
                return Err(EngineError::ResourceExhausted(format!(
                    "container {:?} has {MAX_EXECS} execs; delete exited ones first",
                    req.container_id
                )));
            }
            execs.insert(req.exec_id.clone(), Slot::Starting);
            Reservation {
                execs: &container.execs,
                id: Some(req.exec_id.clone()),
            }
        };
        let (child, parent) = stdio::prepare(
            req.stdout.as_deref(),
            req.stderr.as_deref(),
            req.streams.as_ref(),
        )?;
        let mut spec = (*container.spec).clone();
        spec.set_process(Some(req.process));
        // The exec's own score, else the container's (as if forked from it).
        let oom_score_adj = match oom_score::from_spec(&spec, "process_json")? {
            Some(adj) => adj,
            None => oom_score::from_spec(&container.spec, "oci_spec_json.process")?
                .unwrap_or(oom_score::DEFAULT),
        };
        let config = InitConfig {
            rootfs: PathBuf::from("/"),
            spec,
            console: child.console.as_ref().map(AsRawFd::as_raw_fd),
            join: Some(container.pidfd.as_raw_fd()),
        };
        // `container` (and so its pidfd) lives until the child has inherited it.
        let spawned = match spawn::spawn_init(self.reaper(), &label, &config, child, None).await {
            Ok(spawned) => spawned,
            // The container exited meanwhile: setns found no process to join.
            Err(_) if container.state() == ContainerState::Stopped => {
                return Err(EngineError::FailedPrecondition(format!(
                    "container {:?} is not running",
                    req.container_id
                )))
            }
            Err(err) => return Err(err),
        };
        if let Err(err) = oom_score::apply(spawned.pid, oom_score_adj) {
            spawn::abandon(spawned).await;
            return Err(err);
        }
        let stdio = match parent.connect() {
            Ok(stdio) => stdio,
            Err(err) => {
                spawn::abandon(spawned).await;
                return Err(err);
            }
        };
        let spawn::Spawned {
            pid,
            pidfd,
            exit,
            start,
            sync,
        } = spawned;
        let (exit_tx, exit_rx) = watch::channel(None);
        let started_at = unix_nanos();
        let process = Arc::new(ExecProcess {
            pidfd,
            stdio,
            exit: exit_rx,
        });
        // Watch before starting: a failed exec must still be reaped and recorded.
        watch_exec(
            Arc::clone(&process),
            container.exit.clone(),
            exit,
            exit_tx,
            started_at,
            label.clone(),
        );
        if let Err(err) = run(start, sync, &label).await {
            tracing::warn!(process = %label, error = %err, "exec failed");
            let _ = process.pidfd.signal(Signal::SIGKILL);
            return Err(err);
        }
        let mut reservation = reservation;
        reservation.id = None;
        container
            .execs
            .lock()
            .insert(req.exec_id.clone(), Slot::Ready(process));
        let pid = u32::try_from(pid.as_raw()).unwrap_or(0);
        tracing::info!(container_id = %req.container_id, exec_id = %req.exec_id, pid, "exec started");
        Ok(pid)
    }

    fn exec_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<Arc<ExecProcess>, EngineError> {
        let container = self.get(container_id)?;
        let process = container.execs.get(container_id, exec_id)?;
        Ok(process)
    }

    /// The streams of a container's process (`exec_id` empty) or of an exec.
    pub fn process_stdio(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<Arc<ProcessStdio>, EngineError> {
        let stdio = if exec_id.is_empty() {
            self.get(container_id)?.stdio.clone()
        } else {
            self.exec_process(container_id, exec_id)?.stdio.clone()
        };
        stdio.ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "process {container_id:?}/{exec_id:?} has files for stdio, not streams"
            ))
        })
    }

    /// Waits for an exec's exit (or the container's, with `exec_id` empty).
    pub async fn wait_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<ExitInfo, EngineError> {
        if exec_id.is_empty() {
            return self.wait(container_id).await;
        }
        let process = self.exec_process(container_id, exec_id)?;
        Ok(wait_exit(&process.exit).await)
    }

    /// Signals a running exec (or the container's process, with `exec_id` empty).
    pub fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), EngineError> {
        if exec_id.is_empty() {
            return self.signal(container_id, signal);
        }
        let sig = parse_signal(signal)?;
        let process = self.exec_process(container_id, exec_id)?;
        if process.exit.borrow().is_some() {
            return Err(EngineError::FailedPrecondition(format!(
                "exec {exec_id:?} of container {container_id:?} has exited"
            )));
        }
        match process.pidfd.signal(sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(EngineError::Internal(format!(
                "signal exec {exec_id:?}: {errno}"
            ))),
        }
    }

    /// Kills an exec if it runs, waits for its reap, and forgets it.
    pub async fn delete_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<(), EngineError> {
        if exec_id.is_empty() {
            return Err(EngineError::InvalidArgument(
                "exec_id is empty (a container is removed with Containers.Delete)".into(),
            ));
        }
        let container = self.get(container_id)?;
        let process = container.execs.get(container_id, exec_id)?;
        if process.exit.borrow().is_none() {
            match process.pidfd.signal(Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(EngineError::Internal(format!(
                        "kill exec {exec_id:?}: {errno}"
                    )))
                }
            }
        }
        if tokio::time::timeout(super::engine::DELETE_TIMEOUT, wait_exit(&process.exit))
            .await
            .is_err()
        {
            return Err(EngineError::Internal(format!(
                "exec {exec_id:?} did not exit within {:?} of SIGKILL",
                super::engine::DELETE_TIMEOUT
            )));
        }
        let mut execs = container.execs.lock();
        if let Some(Slot::Ready(p)) = execs.get(exec_id) {
            if Arc::ptr_eq(p, &process) {
                execs.remove(exec_id);
            }
        }
        tracing::info!(container_id, exec_id, "exec deleted");
        Ok(())
    }
}

/// Records the exec's exit; SIGKILLs it when the container's process exits first.
fn watch_exec(
    process: Arc<ExecProcess>,
    mut container_exit: watch::Receiver<Option<ExitInfo>>,
    mut exit: oneshot::Receiver<ExitStatus>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    started_at: i64,
    label: String,
) {
    tokio::spawn(async move {
        let container_stopped = async {
            // An error (the container's record gone) also means it is not running.
            let _ = container_exit.wait_for(Option::is_some).await;
        };
        let status = tokio::select! {
            status = &mut exit => status,
            _ = container_stopped => {
                let _ = process.pidfd.signal(Signal::SIGKILL);
                exit.await
            }
        };
        // The reaper dropping its sender would mean the agent is going down.
        let status = status.unwrap_or(ExitStatus::Exited(255));
        let (exit_code, signal) = match status {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled { signal, .. } => (128 + signal, signal),
        };
        tracing::info!(process = %label, exit_code, signal, "exec exited");
        exit_tx.send_replace(Some(ExitInfo {
            exit_code,
            signal,
            started_at,
            finished_at: unix_nanos(),
            // An exec shares its container's cgroup; the container's Wait reports OOM kills.
            oom_killed: false,
        }));
    });
}
