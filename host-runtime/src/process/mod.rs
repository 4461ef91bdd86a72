//! The host processes of a pod (vessel-vmm, virtiofsd) as a daemon must
//! keep them: started in their own session and the pod's cgroup, watched
//! through a pidfd (no polling), stopped explicitly (SIGTERM, grace,
//! SIGKILL), never killed because a handle was dropped, and recorded in the
//! pod's state dir so that a restarted vesseld can adopt them again or
//! clean up those whose pod is gone.

mod record;
mod spawn;
mod sys;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

pub use record::{start_time, ProcessRecord};
pub use spawn::{Output, SpawnSpec};

/// Starting, watching or stopping a supervised process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process could not be started; `step` says where it failed.
    #[error("cannot start {role}: {step}: {source}")]
    Spawn {
        /// Which process.
        role: &'static str,
        /// The step of its start that failed.
        step: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Watching, signalling or reaping it failed.
    #[error("{role} (pid {pid}): cannot {what}: {source}")]
    Control {
        /// Which process.
        role: &'static str,
        /// Its pid.
        pid: u32,
        /// What we tried.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// It did not exit in time.
    #[error("{role} (pid {pid}) still running after {waited:?}")]
    StillRunning {
        /// Which process.
        role: &'static str,
        /// Its pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// Its record could not be written, read or removed.
    #[error("process record {path}: {source}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How a supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It is gone, but it was not our child (adopted after a restart), so
    /// its status went to its new parent.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => write!(f, "gone (status unknown: adopted, not our child)"),
        }
    }
}

/// A process started by [`SpawnSpec::spawn`] or adopted from its record.
#[derive(Debug)]
pub struct Supervised {
    role: &'static str,
    pid: u32,
    start_time: u64,
    pidfd: Option<OwnedFd>,
    /// Whether we are its parent (and so reap it and learn its status).
    child: bool,
    exit: Option<Exit>,
}

impl Supervised {
    fn started(role: &'static str, pid: i32, pidfd: OwnedFd) -> Result<Self, ProcessError> {
        let pid = u32::try_from(pid).map_err(|_| ProcessError::Control {
            role,
            pid: 0,
            what: "read its pid",
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        })?;
        // It cannot be reaped before we wait for it, so /proc/PID is its.
        let start_time = start_time(pid).unwrap_or(0);
        Ok(Self {
            role,
            pid,
            start_time,
            pidfd: Some(pidfd),
            child: true,
            exit: None,
        })
    }

    /// Takes over the process a record describes, if it still runs and is
    /// the same process (same start time); `Ok(None)` if it is gone.
    pub fn adopt(record: &ProcessRecord) -> Result<Option<Self>, ProcessError> {
        let Ok(raw) = i32::try_from(record.pid) else {
            return Ok(None);
        };
        let pidfd = match sys::pidfd_open(raw) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(source) => {
                return Err(ProcessError::Control {
                    role: record.role(),
                    pid: record.pid,
                    what: "open a pidfd",
                    source,
                })
            }
        };
        // Checked after the pidfd is open: from here the pid cannot be reused
        // under us, so a matching start time means the pidfd is that process.
        if start_time(record.pid) != Some(record.start_time) {
            return Ok(None);
        }
        Ok(Some(Self {
            role: record.role(),
            pid: record.pid,
            start_time: record.start_time,
            pidfd: Some(pidfd),
            child: false,
            exit: None,
        }))
    }

    /// Its pid (in vesseld's pid namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What it is.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// The record that lets a later vesseld find it again.
    pub fn record(&self, sockets: Vec<PathBuf>) -> ProcessRecord {
        ProcessRecord::new(self.role, self.pid, self.start_time, sockets)
    }

    fn control(&self, what: &'static str) -> impl Fn(std::io::Error) -> ProcessError + '_ {
        move |source| ProcessError::Control {
            role: self.role,
            pid: self.pid,
            what,
            source,
        }
    }

    /// How it ended, if it has (reaping it when it is our child).
    pub fn try_exit(&mut self) -> Result<Option<Exit>, ProcessError> {
        if let Some(exit) = self.exit {
            return Ok(Some(exit));
        }
        let Some(pidfd) = &self.pidfd else {
            return Ok(self.exit);
        };
        let exit = if self.child {
            match sys::waitid_pidfd(pidfd) {
                Ok(None) => None,
                Ok(Some(sys::WaitStatus::Exited(c))) => Some(Exit::Code(c)),
                Ok(Some(sys::WaitStatus::Signaled(s))) => Some(Exit::Signal(s)),
                Err(e) => return Err(self.control("reap it")(e)),
            }
        } else {
            // A pidfd polls readable once its process has exited.
            let mut pfd = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, no wait.
            let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
            if rc < 0 {
                return Err(self.control("poll its pidfd")(
                    std::io::Error::last_os_error(),
                ));
            }
            (rc > 0).then_some(Exit::Unknown)
        };
        if exit.is_some() {
            self.exit = exit;
            self.pidfd = None;
        }
        Ok(exit)
    }

    /// Waits up to `timeout` for it to exit, woken by its pidfd.
    pub async fn wait(&mut self, timeout: Duration) -> Result<Exit, ProcessError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(exit);
            }
            let Some(pidfd) = &self.pidfd else {
                return Ok(Exit::Unknown);
            };
            let fd = pidfd.try_clone().map_err(self.control("watch its pidfd"))?;
            // SAFETY: the AsyncFd owns its duplicate of the pidfd, so the
            // descriptor stays open (and is not reused) for its whole life.
            let watch =
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| self.control("watch its pidfd")(e.into()))?;
            match tokio::time::timeout_at(deadline, watch.readable()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.control("watch its pidfd")(e)),
                Err(_) => {
                    return self.try_exit()?.ok_or(ProcessError::StillRunning {
                        role: self.role,
                        pid: self.pid,
                        waited: timeout,
                    })
                }
            }
        }
    }

    /// Sends `signal`; a process that is already gone is not an error.
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let Some(pidfd) = &self.pidfd else {
            return Ok(());
        };
        match sys::pidfd_send_signal(pidfd, signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(self.control("signal it")(e)),
        }
    }

    /// Stops it in order: SIGTERM, up to `grace` for it to exit, then
    /// SIGKILL. Returns how it ended.
    pub async fn stop(&mut self, grace: Duration) -> Result<Exit, ProcessError> {
        if let Some(exit) = self.try_exit()? {
            return Ok(exit);
        }
        self.signal(libc::SIGTERM)?;
        match self.wait(grace).await {
            Err(ProcessError::StillRunning { .. }) => {
                tracing::warn!(
                    role = self.role,
                    pid = self.pid,
                    ?grace,
                    "ignored SIGTERM; killing it"
                );
                self.kill().await
            }
            other => other,
        }
    }

    /// SIGKILL, then waits for it to be gone.
    pub async fn kill(&mut self) -> Result<Exit, ProcessError> {
        self.signal(libc::SIGKILL)?;
        self.wait(KILL_WAIT).await
    }

    /// SIGKILL and a blocking reap, for `Drop` paths outside an async context.
    pub fn kill_blocking(&mut self) {
        if self.signal(libc::SIGKILL).is_err() {
            return;
        }
        let Some(pidfd) = &self.pidfd else {
            return;
        };
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; bounded wait.
        unsafe { libc::poll(&mut pfd, 1, KILL_WAIT.as_millis() as i32) };
        let _ = self.try_exit();
    }
}

/// How long a SIGKILLed process may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
