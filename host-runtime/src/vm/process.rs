//! A running `vessel-vmm` process and the way to its agent.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vessel_agent_api::client::{self, Channel};

use super::config::{VmConfig, VmConfigError};
use crate::cgroup::PodCgroup;
use crate::process::{Exit, Output, ProcessError, ProcessRecord, SpawnSpec, Supervised};

pub use vessel_agent_api::AGENT_VSOCK_PORT;

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
    #[error("vessel-vmm exited ({exit}) before the agent was ready: {last} (log: {log})")]
    ExitedEarly {
        /// How it exited.
        exit: VmExit,
        /// Its log's last line (escaped: the guest may have written it).
        last: String,
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
    /// Starting, watching or signalling the process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The pod cgroup's files could not be opened.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// It exited with this status code (0: guest reset; see vessel-vmm's exit codes).
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It is gone, status unknown (adopted after a restart: not our child).
    Unknown,
}

impl From<Exit> for VmExit {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Code(c) => VmExit::Code(c),
            Exit::Signal(s) => VmExit::Signal(s),
            Exit::Unknown => VmExit::Unknown,
        }
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Code(c) => write!(f, "exit status {c}"),
            VmExit::Signal(s) => write!(f, "killed by signal {s}"),
            VmExit::Unknown => write!(f, "gone (status unknown: not our child)"),
        }
    }
}

/// Where and how isolated a VMM runs, beyond its own configuration.
#[derive(Debug, Default)]
pub struct Isolation {
    /// The pod's cgroup, which the VMM joins before it runs.
    pub cgroup: Option<PodCgroup>,
    /// Own pid and IPC namespaces (the VMM is pid 1 of its pid namespace).
    pub namespaces: bool,
    /// Leave the VMM running when this handle is dropped (a daemon's pods
    /// outlive it); without it a dropped handle kills the VMM (tests, tools).
    pub keep_on_drop: bool,
}

/// Where a VM's VMM is recorded for a later vesseld: beside its state dir,
/// not in it, because the state dir is the (jailed, unprivileged) VMM's own
/// and a record there could be rewritten by a compromised VMM to point at
/// another process.
pub fn vmm_record_path(state_dir: &std::path::Path) -> PathBuf {
    let name = state_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    state_dir.with_file_name(format!("{name}.process.json"))
}

/// A `vessel-vmm` process started by [`VmProcess::spawn`] or adopted.
///
/// Dropping it kills the VMM unless it was started with
/// [`Isolation::keep_on_drop`] or [`VmProcess::detach`] was called: in tests
/// and tools a VM nobody tracks is a leak.
#[derive(Debug)]
pub struct VmProcess {
    // Boxed: a pod keeps a VmProcess in an enum with small variants.
    config: Box<VmConfig>,
    process: Option<Supervised>,
    started: Instant,
    keep_on_drop: bool,
}

impl VmProcess {
    /// Starts the VMM in its own session, so that it outlives its parent.
    pub fn spawn(config: VmConfig) -> Result<Self, VmError> {
        Self::spawn_isolated(config, Isolation::default())
    }

    /// Starts the VMM in its own session, placed as `isolation` says, and
    /// records it beside its state dir ([`vmm_record_path`]).
    pub fn spawn_isolated(config: VmConfig, isolation: Isolation) -> Result<Self, VmError> {
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
        let cgroup_procs = match &isolation.cgroup {
            Some(cg) => cg.procs_files()?,
            None => Vec::new(),
        };
        let namespaces = if isolation.namespaces {
            (libc::CLONE_NEWPID | libc::CLONE_NEWIPC) as u64
        } else {
            0
        };
        let started = Instant::now();
        let process = SpawnSpec {
            role: "vessel-vmm",
            program: config.vmm.clone(),
            args: config
                .write_launch_config()?
                .into_iter()
                .map(Into::into)
                .collect(),
            output: Output::File(log),
            fds: Vec::new(),
            namespaces,
            cgroup_procs,
        }
        .spawn()?;
        tracing::info!(pid = process.pid(), state_dir = %config.state_dir.display(), "started vessel-vmm");
        let this = Self {
            config: Box::new(config),
            process: Some(process),
            started,
            keep_on_drop: isolation.keep_on_drop,
        };
        this.save_record()?;
        Ok(this)
    }

    /// Takes over the VMM recorded in `config.state_dir`, if it still runs.
    pub fn adopt(config: VmConfig) -> Result<Option<Self>, VmError> {
        let path = vmm_record_path(&config.state_dir);
        let Some(record) = ProcessRecord::load(&path)? else {
            return Ok(None);
        };
        let Some(process) = Supervised::adopt(&record)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            config: Box::new(config),
            process: Some(process),
            started: Instant::now(),
            keep_on_drop: true,
        }))
    }

    fn save_record(&self) -> Result<(), VmError> {
        if let Some(p) = &self.process {
            p.record(vec![self.config.vsock_path()])
                .save(&vmm_record_path(&self.config.state_dir))?;
        }
        Ok(())
    }

    /// The VMM's process id, while it is tracked.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Supervised::pid)
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
                // Its log, or its stderr for what failed before the log opened.
                let log = self.config.vmm_log_path();
                let last = last_log_line(&log)
                    .or_else(|| last_log_line(&self.config.vmm_stderr_path()))
                    .unwrap_or_else(|| "it logged nothing".into());
                return Err(VmError::ExitedEarly {
                    exit,
                    last: last.escape_debug().to_string(),
                    log,
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

    /// Returns how the VMM exited, if it has (and forgets it then).
    pub fn try_exit(&mut self) -> Result<Option<VmExit>, VmError> {
        let Some(p) = self.process.as_mut() else {
            return Ok(None);
        };
        let exit = p.try_exit()?;
        if exit.is_some() {
            self.gone();
        }
        Ok(exit.map(VmExit::from))
    }

    /// The process is gone: forget it and its record.
    fn gone(&mut self) {
        self.process = None;
        let _ = ProcessRecord::remove(&vmm_record_path(&self.config.state_dir));
    }

    /// Waits up to `timeout` for the VMM to exit by itself (woken by its pidfd).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<VmExit, VmError> {
        let Some(p) = self.process.as_mut() else {
            return Err(VmError::Process(ProcessError::Control {
                role: "vessel-vmm",
                pid: 0,
                what: "wait for it (it is no longer tracked)",
                source: std::io::Error::from_raw_os_error(libc::ECHILD),
            }));
        };
        let pid = p.pid();
        match p.wait(timeout).await {
            Ok(exit) => {
                self.gone();
                Ok(exit.into())
            }
            Err(ProcessError::StillRunning { waited, .. }) => {
                Err(VmError::StillRunning { pid, waited })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the VM in order: SIGTERM makes the VMM ask the guest to shut
    /// down (ctrl-alt-del; the agent tears its containers down and resets
    /// the guest, exit status 0) and stop it hard itself after its grace
    /// (`--shutdown-grace-ms`, exit status 4). If the VMM is still there after
    /// `timeout` (which should exceed that grace), it is killed. Returns how
    /// it ended, or `None` if it was no longer tracked.
    pub async fn stop(&mut self, timeout: Duration) -> Result<Option<VmExit>, VmError> {
        let Some(p) = self.process.as_mut() else {
            return Ok(None);
        };
        let exit = p.stop(timeout).await?;
        self.gone();
        Ok(Some(exit.into()))
    }

    /// Kills the VMM (SIGKILL) and waits until it is gone.
    pub async fn kill(&mut self) -> Result<Option<VmExit>, VmError> {
        let Some(p) = self.process.as_mut() else {
            return Ok(None);
        };
        let exit = p.kill().await?;
        self.gone();
        Ok(Some(exit.into()))
    }

    /// Stops tracking the VMM without killing it (it keeps running on its own).
    pub fn detach(mut self) {
        self.process = None;
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        if self.keep_on_drop {
            return;
        }
        if let Some(mut p) = self.process.take() {
            p.kill_blocking();
            let _ = ProcessRecord::remove(&vmm_record_path(&self.config.state_dir));
        }
    }
}

/// The last non-empty line of the file at `path`, from its last 4 KiB at
/// most (the VMM writes its log; lines a guest triggers are rate-limited
/// but a log can still be long).
pub fn last_log_line(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4 << 10;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::with_capacity(TAIL as usize);
    file.take(TAIL).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.trim().chars().take(512).collect())
}

#[cfg(test)]
mod last_log_line_tests {
    use super::last_log_line;

    #[test]
    fn the_last_non_empty_line_of_a_long_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmm.log");
        let mut text = "x".repeat(10_000);
        text.push_str("\nguest crashed: vCPU 0: triple fault\n\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            last_log_line(&path).as_deref(),
            Some("guest crashed: vCPU 0: triple fault")
        );
        assert_eq!(last_log_line(&dir.path().join("none")), None);
    }
}
