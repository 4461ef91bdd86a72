//! A running `vessel-vmm` process and the way to its agent.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use vessel_agent::client::{self, Channel};

use super::config::{VmConfig, VmConfigError};

/// The vsock port the guest agent serves its API on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// How often to look at the VMM process while waiting for it to exit.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// Starting, reaching or stopping a VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration cannot start a VM.
    #[error(transparent)]
    Config(#[from] VmConfigError),
    /// The VM's state directory or log could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    StateDir {
        /// The path that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The VMM process could not be started.
    #[error("cannot start {vmm}: {source}")]
    Spawn {
        /// The VMM binary.
        vmm: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The VMM exited before its agent answered.
    #[error("vessel-vmm exited ({exit}) before the agent was ready; see {log}")]
    ExitedEarly {
        /// How it exited.
        exit: VmExit,
        /// Its log file.
        log: PathBuf,
    },
    /// The agent did not answer before the deadline.
    #[error("agent not ready after {waited:?}: {source}")]
    AgentNotReady {
        /// How long we waited.
        waited: Duration,
        /// The last failure seen.
        source: client::ClientError,
    },
    /// The VMM did not exit before the deadline.
    #[error("vessel-vmm (pid {pid}) still running after {waited:?}")]
    StillRunning {
        /// Its pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// Waiting for the VMM process failed.
    #[error("cannot wait for vessel-vmm: {0}")]
    Wait(#[source] std::io::Error),
}

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// It exited with this status code (0: guest reset; see vessel-vmm's exit codes).
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl From<ExitStatus> for VmExit {
    fn from(status: ExitStatus) -> Self {
        match status.code() {
            Some(code) => VmExit::Code(code),
            None => VmExit::Signal(status.signal().unwrap_or(0)),
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Code(c) => write!(f, "exit status {c}"),
            VmExit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A `vessel-vmm` process started by [`VmProcess::spawn`].
///
/// Dropping it kills the VMM unless [`VmProcess::detach`] was called: a VM
/// nobody tracks is a leak.
#[derive(Debug)]
pub struct VmProcess {
    // Boxed: a pod keeps a VmProcess in an enum with small variants.
    config: Box<VmConfig>,
    child: Option<Child>,
    started: Instant,
}

impl VmProcess {
    /// Starts the VMM in its own session, so that it outlives its parent.
    pub fn spawn(config: VmConfig) -> Result<Self, VmError> {
        config.validate()?;
        std::fs::create_dir_all(&config.state_dir).map_err(|source| VmError::StateDir {
            path: config.state_dir.clone(),
            source,
        })?;
        let log_path = config.vmm_stderr_path();
        let log = File::create(&log_path).map_err(|source| VmError::StateDir {
            path: log_path.clone(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| VmError::StateDir {
            path: log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(&config.vmm);
        cmd.args(config.write_launch_config()?)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|source| VmError::Spawn {
            vmm: config.vmm.clone(),
            source,
        })?;
        tracing::info!(pid = child.id(), state_dir = %config.state_dir.display(), "started vessel-vmm");
        Ok(Self {
            config: Box::new(config),
            child: Some(child),
            started,
        })
    }

    /// The VMM's process id, while it is tracked.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The configuration the VM was started with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// When the VMM process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits until the guest agent answers a health check, or `timeout` passes,
    /// and returns a channel to it. Fails early if the VMM exits meanwhile.
    pub async fn connect_agent(&mut self, timeout: Duration) -> Result<Channel, VmError> {
        let deadline = Instant::now() + timeout;
        let vsock = self.config.vsock_path();
        let mut last_err = None;
        while Instant::now() < deadline {
            if let Some(exit) = self.try_exit()? {
                return Err(VmError::ExitedEarly {
                    exit,
                    log: self.config.vmm_log_path(),
                });
            }
            // Short attempts, so that a VMM that dies is noticed promptly.
            let attempt = (Instant::now() + Duration::from_millis(500)).min(deadline);
            match client::wait_ready(&vsock, AGENT_VSOCK_PORT, attempt).await {
                Ok(channel) => return Ok(channel),
                Err(e) => last_err = Some(e),
            }
        }
        Err(VmError::AgentNotReady {
            waited: timeout,
            source: last_err.unwrap_or(client::ClientError::Timeout),
        })
    }

    /// Returns how the VMM exited, if it has.
    pub fn try_exit(&mut self) -> Result<Option<VmExit>, VmError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        match child.try_wait().map_err(VmError::Wait)? {
            Some(status) => {
                self.child = None;
                Ok(Some(status.into()))
            }
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the VMM to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<VmExit, VmError> {
        let deadline = Instant::now() + timeout;
        let pid = self.pid().unwrap_or(0);
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                return Err(VmError::StillRunning {
                    pid,
                    waited: timeout,
                });
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// Stops the VM in order: SIGTERM makes the VMM ask the guest to shut
    /// down (ctrl-alt-del; the agent tears its containers down and resets
    /// the guest, exit status 0) and stop it hard itself after its grace
    /// (`--shutdown-grace-ms`, exit status 4). If the VMM is still there after
    /// `timeout` (which should exceed that grace), it is killed. Returns how
    /// it ended, or `None` if it was no longer tracked.
    pub async fn stop(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError> {
        let Some(pid) = self.pid() else {
            return Ok(None);
        };
        if let Some(exit) = self.try_exit()? {
            return Ok(Some(exit));
        }
        // The child is not reaped yet (try_exit just saw it running), so the
        // pid is still ours.
        let pid = i32::try_from(pid)
            .map_err(|_| VmError::Wait(std::io::Error::from_raw_os_error(libc::ESRCH)))?;
        if let Err(errno) = kill(Pid::from_raw(pid), Signal::SIGTERM) {
            tracing::warn!(%errno, "cannot send SIGTERM to vessel-vmm");
        }
        match self.wait_exit(timeout).await {
            Ok(exit) => Ok(Some(exit)),
            Err(VmError::StillRunning { .. }) => {
                tracing::warn!(?timeout, "vessel-vmm ignored SIGTERM; killing it");
                self.kill()
            }
            Err(e) => Err(e),
        }
    }

    /// Kills the VMM (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<Option<VmExit>, VmError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // An error here means it already exited; wait() below reaps it either way.
        let _ = child.kill();
        let status = child.wait().map_err(VmError::Wait)?;
        Ok(Some(status.into()))
    }

    /// Stops tracking the VMM without killing it (it keeps running on its own).
    pub fn detach(mut self) {
        self.child = None;
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            tracing::warn!(error = %e, "cannot kill vessel-vmm");
        }
    }
}
