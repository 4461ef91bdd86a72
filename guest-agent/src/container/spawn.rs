//! Starting a container's init stage from the agent and talking to it over its pipes.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::error::EngineError;
use super::init::{InitConfig, FDS_ENV, INIT_ARG};
use super::pidfd::PidFd;
use super::stdio::ChildStdio;
use super::sync::{FailureKind, SyncMessage};
use super::validate::CreateSpec;
use crate::logging::LOG_ENV;
use crate::reaper::{ExitStatus, Reaper};

/// How long the init stage may take to set a container up.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent's end of the sync pipe, read a line at a time.
pub type SyncReader = Lines<BufReader<pipe::Receiver>>;

/// A created container whose process waits for the start byte.
#[derive(Debug)]
pub struct Spawned {
    /// The container's init, in the agent's pid namespace.
    pub pid: Pid,
    /// Signals the container's init and nothing else.
    pub pidfd: PidFd,
    /// Its exit status, from the reaper.
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Writing one byte here starts the process; closing it makes the process exit.
    pub start: File,
    /// Reports an exec failure after the start byte; EOF means the exec happened.
    pub sync: SyncReader,
}

fn internal(what: &str, err: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("{what}: {err}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), EngineError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("create a pipe", e))
}

/// Kills a set-up process that will not be started, and waits (briefly) for its reap.
pub async fn abandon(spawned: Spawned) {
    // Closing the start pipe alone makes it exit; SIGKILL in case it is elsewhere.
    drop(spawned.start);
    let _ = spawned.pidfd.signal(Signal::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(5), spawned.exit).await;
}

/// Reads the next message; `None` at EOF.
pub async fn next_message(sync: &mut SyncReader) -> Result<Option<SyncMessage>, EngineError> {
    match sync.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| internal("bad message from the container init", e)),
        Ok(None) => Ok(None),
        Err(e) => Err(internal("read from the container init", e)),
    }
}

/// Turns a `Failed` report into the matching error.
pub fn failure(kind: FailureKind, message: String) -> EngineError {
    match kind {
        FailureKind::InvalidArgument => EngineError::InvalidArgument(message),
        FailureKind::NotFound => EngineError::NotFound(message),
        FailureKind::Internal => EngineError::Internal(message),
    }
}

/// Spawns the init stage for `create` and waits until the container is set up.
/// With `cgroup_procs` (a cgroup's `cgroup.procs` open for writing) the init
/// stage moves itself into that cgroup before it runs.
pub async fn spawn(
    reaper: &Reaper,
    create: &CreateSpec,
    stdio: ChildStdio,
    cgroup_procs: Option<OwnedFd>,
) -> Result<Spawned, EngineError> {
    let config = InitConfig {
        rootfs: create.rootfs.clone(),
        spec: create.spec.clone(),
        console: stdio.console.as_ref().map(AsRawFd::as_raw_fd),
        join: None,
    };
    spawn_init(reaper, &create.id, &config, stdio, cgroup_procs).await
}

/// Spawns the init stage with `config` (a container, or an exec when `join` is
/// set) and waits until the process is set up. The fds named in `config`
/// (`console`, `join`) are passed to the child.
// On failure nothing is left: the process is killed and reaped.
pub async fn spawn_init(
    reaper: &Reaper,
    label: &str,
    config: &InitConfig,
    stdio: ChildStdio,
    cgroup_procs: Option<OwnedFd>,
) -> Result<Spawned, EngineError> {
    let ChildStdio {
        stdin,
        stdout,
        stderr,
        console,
    } = stdio;
    let extra_fds = [config.console, config.join];
    let config = serde_json::to_vec(config).map_err(|e| internal("encode the init config", e))?;
    let (config_r, config_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let (start_r, start_w) = pipe()?;
    let mut child_fds = vec![
        config_r.as_raw_fd(),
        sync_w.as_raw_fd(),
        start_r.as_raw_fd(),
    ];
    child_fds.extend(extra_fds.into_iter().flatten());
    let mut command = Command::new("/proc/self/exe");
    command
        .arg(INIT_ARG)
        .env_clear()
        .env(
            FDS_ENV,
            format!("{},{},{}", child_fds[0], child_fds[1], child_fds[2]),
        )
        .current_dir("/")
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    if let Ok(level) = std::env::var(LOG_ENV) {
        command.env(LOG_ENV, level);
    }
    let procs_fd = cgroup_procs.as_ref().map(AsRawFd::as_raw_fd);
    // Safe: between fork and exec this only calls fcntl and write, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            for &fd in &child_fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // "0" moves the writing process; its descendants are born in the cgroup.
            if let Some(fd) = procs_fd {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let monitor = reaper
        .supervise(|| {
            let child = command.spawn()?;
            let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(((), Pid::from_raw(pid)))
        })
        .map_err(|e| internal("spawn the container init", e))?;
    tracing::debug!(process = %label, pid = monitor.pid.as_raw(), "init stage spawned");
    // Our copies of the child's ends must go, or EOF never comes.
    drop((config_r, sync_w, start_r, console, cgroup_procs));
    drop(command);
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        File::from(config_w).write_all(&config)
    })
    .await;
    if let Ok(Err(e)) = &written {
        // The init reports its side of this; keep reading for the real cause.
        tracing::debug!(process = %label, error = %e, "writing the init config failed");
    }
    let receiver =
        pipe::Receiver::from_owned_fd(sync_r).map_err(|e| internal("watch the sync pipe", e))?;
    let mut sync = BufReader::new(receiver).lines();
    let mut pid = None;
    let mut exit = None;
    let mut ready = false;
    let mut pidfd = None;
    let mut reaped = false;
    let outcome = tokio::time::timeout(SETUP_TIMEOUT, async {
        // The pid (from the forking process) and Ready (from the container) race.
        while !(ready && pid.is_some()) {
            match next_message(&mut sync).await? {
                Some(SyncMessage::Pid(raw)) if raw > 0 && pid.is_none() => {
                    let p = Pid::from_raw(raw);
                    // Adopted before it could exit: it blocks on the start pipe until we write.
                    exit = Some(reaper.adopt(p));
                    pid = Some(p);
                    match PidFd::open(p) {
                        Ok(fd) => pidfd = Some(fd),
                        // A process whose setup failed reports and exits without
                        // waiting for the start pipe, and may be reaped already:
                        // its report, next on the pipe, says why.
                        Err(nix::errno::Errno::ESRCH) => reaped = true,
                        Err(e) => return Err(internal("open a pidfd for the container", e)),
                    }
                }
                Some(SyncMessage::Ready) if !ready => ready = true,
                Some(SyncMessage::Failed { kind, message }) => {
                    return Err(failure(kind, format!("container setup failed: {message}")))
                }
                Some(other) => {
                    return Err(internal(
                        "unexpected message from the container init",
                        format!("{other:?}"),
                    ))
                }
                None => {
                    return Err(EngineError::Internal(
                        "container init exited during setup without a report".into(),
                    ))
                }
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| {
        Err(EngineError::Internal(format!(
            "container setup did not finish within {SETUP_TIMEOUT:?}"
        )))
    });
    match (outcome, pid, exit, pidfd) {
        (Ok(()), Some(pid), Some(exit), Some(pidfd)) => Ok(Spawned {
            pid,
            pidfd,
            exit,
            start: File::from(start_w),
            sync,
        }),
        (outcome, pid, exit, pidfd) => {
            // Closing the start pipe makes a waiting process exit; SIGKILL covers the rest.
            drop(start_w);
            match (pidfd, pid) {
                (Some(pidfd), _) => {
                    let _ = pidfd.signal(Signal::SIGKILL);
                }
                // Adopted but not yet reaped, so the pid is still the container's.
                (None, Some(pid)) if !reaped => {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                (None, _) => {}
            }
            if let Some(exit) = exit {
                let _ = tokio::time::timeout(Duration::from_secs(5), exit).await;
            }
            // The first init process exits right after its fork; kill it only while it
            // is provably unreaped (its status not yet delivered), so the pid is still its own.
            let mut monitor_exit = monitor.exit;
            if tokio::time::timeout(Duration::from_secs(1), &mut monitor_exit)
                .await
                .is_err()
            {
                let _ = kill(monitor.pid, Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), monitor_exit).await;
            }
            Err(outcome.err().unwrap_or_else(|| {
                EngineError::Internal(if reaped {
                    "container init exited right after reporting ready".into()
                } else {
                    "container init reported ready without a pid".into()
                })
            }))
        }
    }
}
