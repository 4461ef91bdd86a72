//! The container's init stage: the agent re-execs itself (`/proc/self/exe
//! __vessel-container-init`) for each container, so namespace and mount setup
//! runs in a fresh single-threaded process instead of a fork of the
//! multi-threaded Tokio agent, where only async-signal-safe calls are allowed.
//!
//! That process joins or unshares the namespaces, then forks: the parent
//! reports the child's pid and exits (the child is reparented to the agent,
//! PID 1 or a subreaper), and the child, PID 1 of the new pid namespace, sets
//! up the rootfs and user, reports `Ready`, waits for the start byte and execs.

mod dev;
mod join;
mod mountfd;
mod namespaces;
mod process;
mod resolve;
mod rootfs;
mod seccomp;
mod terminal;

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

pub use process::to_caps_capability;

use super::sync::{FailureKind, SyncMessage};

/// Hidden first argument that turns the agent binary into a container init.
pub const INIT_ARG: &str = "__vessel-container-init";

/// Environment variable with the init's pipe fds: `config,sync,start`.
pub const FDS_ENV: &str = "_VESSEL_INIT_FDS";

/// What the agent hands the init stage on the config pipe.
#[derive(Debug, Deserialize, Serialize)]
pub struct InitConfig {
    /// The container's root filesystem.
    pub rootfs: PathBuf,
    /// The validated OCI spec.
    pub spec: Spec,
    /// Inherited fd of the console socket, when the process gets a terminal.
    #[serde(default)]
    pub console: Option<i32>,
    /// Inherited pidfd of a running container to exec in (its namespaces, cgroup
    /// and root) instead of creating a container; `rootfs` is then unused.
    #[serde(default)]
    pub join: Option<i32>,
}

/// A setup step that failed, with how the agent should report it.
#[derive(Debug)]
pub struct SetupError {
    kind: FailureKind,
    message: String,
}

impl SetupError {
    fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Internal,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::InvalidArgument,
            message: message.into(),
        }
    }

    fn report(self, sync: BorrowedFd<'_>) {
        SyncMessage::Failed {
            kind: self.kind,
            message: self.message,
        }
        .send(sync);
    }
}

/// Formats a failed syscall step for the host.
fn sys(step: impl std::fmt::Display, errno: nix::errno::Errno) -> SetupError {
    SetupError::internal(format!("{step}: {errno}"))
}

/// Entry point of the init stage; never returns.
pub fn main() -> ! {
    // Not dumpable until the exec (which resets it): no process of the container,
    // whose pid namespace and cgroup this one joins, may ptrace it or open its
    // /proc/<pid>/fd, mem or exe (runc's CVE-2016-9962 / CVE-2019-5736 class).
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("{INIT_ARG}: PR_SET_DUMPABLE: {errno}");
        std::process::exit(125);
    }
    let Some((config_fd, sync, start)) = take_fds() else {
        eprintln!("{INIT_ARG}: run by vessel-agent only ({FDS_ENV} missing or bad)");
        std::process::exit(125);
    };
    let config = match read_config(config_fd) {
        Ok(config) => config,
        Err(err) => {
            err.report(sync.as_fd());
            std::process::exit(125);
        }
    };
    let entered = match config.join {
        Some(pidfd) => join::enter(pidfd),
        None => namespaces::enter(&config.spec),
    };
    if let Err(err) = entered {
        err.report(sync.as_fd());
        std::process::exit(125);
    }
    // Safe: this process has one thread (it was just exec'd and started none).
    match unsafe { fork() } {
        Err(errno) => {
            sys("fork the container process", errno).report(sync.as_fd());
            std::process::exit(125);
        }
        Ok(ForkResult::Parent { child }) => {
            SyncMessage::Pid(child.as_raw()).send(sync.as_fd());
            std::process::exit(0);
        }
        Ok(ForkResult::Child) => container_main(&config, &sync, &start),
    }
}

/// PID 1 of the container: set up, report, wait for start, exec.
fn container_main(config: &InitConfig, sync: &OwnedFd, start: &OwnedFd) -> ! {
    let prepared = match setup(config) {
        Ok(prepared) => prepared,
        Err(err) => {
            err.report(sync.as_fd());
            std::process::exit(125);
        }
    };
    SyncMessage::Ready.send(sync.as_fd());
    let mut byte = [0u8; 1];
    // EOF (the agent dropped the container before starting it) means exit quietly.
    match nix::unistd::read(start.as_fd(), &mut byte) {
        Ok(1) => {}
        _ => std::process::exit(125),
    }
    let err = prepared.exec();
    err.report(sync.as_fd());
    std::process::exit(127);
}

/// Everything before the start byte; returns the exec ready to go.
fn setup(config: &InitConfig) -> Result<process::Prepared, SetupError> {
    let spec = &config.spec;
    // An exec finds hostname and root as the container set them.
    if config.join.is_none() {
        if let Some(hostname) = spec.hostname() {
            nix::unistd::sethostname(hostname).map_err(|e| sys("sethostname", e))?;
        }
        rootfs::setup(&config.rootfs, spec)?;
    }
    if let Some(socket) = config.console {
        terminal::setup(socket, spec)?;
    }
    process::prepare(spec)
}

/// Takes the three fds named in [`FDS_ENV`], marking them close-on-exec again
/// so the container's process inherits none of them.
fn take_fds() -> Option<(OwnedFd, OwnedFd, OwnedFd)> {
    let value = std::env::var(FDS_ENV).ok()?;
    let mut fds = value.split(',').map(|n| n.parse::<i32>().ok());
    let (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) =
        (fds.next(), fds.next(), fds.next(), fds.next())
    else {
        return None;
    };
    let mut owned = Vec::with_capacity(3);
    for fd in [a, b, c] {
        if fd < 3 || fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD).is_err() {
            return None;
        }
        // Safe: the agent passed these fds to this process alone, and they are open (checked above).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
        owned.push(fd);
    }
    std::env::remove_var(FDS_ENV);
    let mut it = owned.into_iter();
    Some((it.next()?, it.next()?, it.next()?))
}

fn read_config(fd: OwnedFd) -> Result<InitConfig, SetupError> {
    let mut json = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut json)
        .map_err(|e| SetupError::internal(format!("read the init config: {e}")))?;
    serde_json::from_slice(&json)
        .map_err(|e| SetupError::internal(format!("parse the init config: {e}")))
}
