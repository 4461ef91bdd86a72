//! Reaping children. As PID 1 the agent inherits every orphan in the guest, so
//! it must wait for all of them; children it supervises (containers, execs) get
//! their exit status handed to whoever registered them.
//!
//! Every child must be spawned through [`Reaper::supervise`] and awaited through
//! its receiver: `std::process::Child::wait` or `tokio::process` would race with
//! this reaper's `waitpid(-1)` and see `ECHILD`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

/// A child registered with the reaper.
#[derive(Debug)]
pub struct Supervised<T> {
    /// What the spawn closure returned besides the pid (e.g. the `Child`).
    pub child: T,
    /// The child's pid.
    pub pid: Pid,
    /// Receives the exit status once the child is reaped.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// Reaping failed to start.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the SIGCHLD handler")]
pub struct ReaperError(#[source] std::io::Error);

/// How many statuses of unregistered children are kept for a late [`Reaper::adopt`].
const UNCLAIMED_LIMIT: usize = 64;

#[derive(Debug, Default)]
struct Subscribers {
    waiting: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Orphans reaped before anyone adopted them, oldest first.
    unclaimed: VecDeque<(i32, ExitStatus)>,
}

/// Reaps all children on SIGCHLD and publishes the statuses of supervised ones.
#[derive(Clone, Debug, Default)]
pub struct Reaper {
    subscribers: Arc<Mutex<Subscribers>>,
}

impl Reaper {
    /// Starts the reaping task; needs a Tokio runtime.
    pub fn start() -> Result<Self, ReaperError> {
        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError)?;
        let reaper = Self::default();
        let task = reaper.clone();
        tokio::spawn(async move {
            // Children may have ended before the handler existed.
            task.reap_exited();
            while sigchld.recv().await.is_some() {
                task.reap_exited();
            }
        });
        Ok(reaper)
    }

    /// Runs `spawn` (which starts a child and returns its pid) and registers the child.
    ///
    /// The registry stays locked while `spawn` runs, so the child cannot be reaped
    /// before it is registered, however fast it exits.
    pub fn supervise<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<(T, Pid), E>,
    ) -> Result<Supervised<T>, E> {
        let mut subscribers = self.lock();
        let (child, pid) = spawn()?;
        let (tx, exit) = oneshot::channel();
        subscribers.waiting.insert(pid.as_raw(), tx);
        Ok(Supervised { child, pid, exit })
    }

    /// Registers a child gained by reparenting (a container's init); a status reaped just before is still delivered.
    pub fn adopt(&self, pid: Pid) -> oneshot::Receiver<ExitStatus> {
        let mut subscribers = self.lock();
        let (tx, rx) = oneshot::channel();
        let raw = pid.as_raw();
        // A live process owns the pid now, so any cached status is of an older process.
        let alive = nix::sys::signal::kill(pid, None) != Err(Errno::ESRCH);
        let cached = subscribers
            .unclaimed
            .iter()
            .rev()
            .find(|(p, _)| *p == raw)
            .map(|(_, status)| *status);
        subscribers.unclaimed.retain(|(p, _)| *p != raw);
        match cached {
            Some(status) if !alive => {
                let _ = tx.send(status);
            }
            _ => {
                subscribers.waiting.insert(raw, tx);
            }
        }
        rx
    }

    fn lock(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for every child that has ended; SIGCHLDs coalesce, so one signal may mean many.
    fn reap_exited(&self) {
        let mut subscribers = self.lock();
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Exited(code)),
                Ok(WaitStatus::Signaled(pid, signal, core_dumped)) => (
                    pid,
                    ExitStatus::Signaled {
                        signal: signal as i32,
                        core_dumped,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                // Stop/continue reports are not asked for (no WUNTRACED/WCONTINUED).
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    tracing::warn!(%errno, "waitpid failed");
                    return;
                }
            };
            match subscribers.waiting.remove(&pid.as_raw()) {
                // The receiver may be gone; the child is reaped either way.
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    tracing::debug!(pid = pid.as_raw(), ?status, "reaped orphan");
                    if subscribers.unclaimed.len() >= UNCLAIMED_LIMIT {
                        subscribers.unclaimed.pop_front();
                    }
                    subscribers.unclaimed.push_back((pid.as_raw(), status));
                }
            }
        }
    }
}
