//! What the agent keeps per container, and how its exit is recorded.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::unistd::Pid;
use oci_spec::runtime::Spec;
use tokio::sync::{oneshot, watch};

use super::exec::Execs;
use super::pidfd::PidFd;
use super::spawn::SyncReader;
use super::stdio::ProcessStdio;
use crate::cgroup::ContainerCgroup;
use crate::events::{EventBus, EventKind};
use crate::reaper::ExitStatus;

/// Lifecycle state of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Set up; the process waits for `Start`.
    Created,
    /// The process runs.
    Running,
    /// The process has exited.
    Stopped,
}

/// How a container's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// Shell-style code: the exit code, or 128 + signal.
    pub exit_code: i32,
    /// The killing signal, 0 if it exited.
    pub signal: i32,
    /// Unix nanoseconds of the start, 0 if never started.
    pub started_at: i64,
    /// Unix nanoseconds of the reap.
    pub finished_at: i64,
    /// Whether the OOM killer struck in the container's cgroup.
    pub oom_killed: bool,
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The start pipe and sync reader, consumed by `Start`.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) start: std::fs::File,
    pub(super) sync: SyncReader,
}

/// One container the agent runs.
#[derive(Debug)]
pub(super) struct Container {
    pub(super) id: String,
    pub(super) pid: Pid,
    pub(super) pidfd: PidFd,
    /// `Some` until `Start` takes it; the tokio mutex serialises `Start` calls.
    pub(super) pending: tokio::sync::Mutex<Option<Pending>>,
    pub(super) started_at: AtomicI64,
    pub(super) exit: watch::Receiver<Option<ExitInfo>>,
    /// Its cgroup, when the guest has a cgroup v2 hierarchy.
    pub(super) cgroup: Option<Arc<ContainerCgroup>>,
    /// The spec it was created with (an exec runs with it, its process replaced).
    pub(super) spec: Arc<Spec>,
    /// The process's streams; `None` when stdio goes to files.
    pub(super) stdio: Option<Arc<ProcessStdio>>,
    /// Its exec processes.
    pub(super) execs: Execs,
}

impl Container {
    pub(super) fn state(&self) -> ContainerState {
        if self.exit.borrow().is_some() {
            ContainerState::Stopped
        } else if self.started_at.load(Ordering::SeqCst) != 0 {
            ContainerState::Running
        } else {
            ContainerState::Created
        }
    }

    pub(super) async fn wait(&self) -> ExitInfo {
        wait_exit(&self.exit).await
    }
}

/// Records the container's exit once the reaper reports it, after killing
/// whatever is left in its cgroup; then publishes the exit event.
pub(super) fn watch_exit(
    container: Arc<Container>,
    exit: oneshot::Receiver<ExitStatus>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    events: EventBus,
) {
    tokio::spawn(async move {
        // The reaper dropping its sender would mean the agent is going down.
        let status = exit.await.unwrap_or(ExitStatus::Exited(255));
        let (exit_code, signal) = match status {
            ExitStatus::Exited(code) => (code, 0),
            ExitStatus::Signaled { signal, .. } => (128 + signal, signal),
        };
        let finished_at = unix_nanos();
        let oom_killed = match &container.cgroup {
            Some(cgroup) => cgroup.stop(&events).await,
            None => false,
        };
        let info = ExitInfo {
            exit_code,
            signal,
            started_at: container.started_at.load(Ordering::SeqCst),
            finished_at,
            oom_killed,
        };
        tracing::info!(container_id = %container.id, exit_code, signal, oom_killed, "container exited");
        exit_tx.send_replace(Some(info));
        events.publish(EventKind::Exit {
            container_id: container.id.clone(),
            exit: info,
        });
    });
}

/// Waits until `exit` holds the process's exit.
pub(super) async fn wait_exit(exit: &watch::Receiver<Option<ExitInfo>>) -> ExitInfo {
    let mut exit = exit.clone();
    loop {
        if let Some(info) = *exit.borrow_and_update() {
            return info;
        }
        // The sender lives in the exit task until it has sent; a closed channel
        // without a value cannot happen, but must not spin.
        if exit.changed().await.is_err() {
            return exit.borrow().unwrap_or(ExitInfo {
                exit_code: 255,
                signal: 0,
                started_at: 0,
                finished_at: unix_nanos(),
                oom_killed: false,
            });
        }
    }
}
