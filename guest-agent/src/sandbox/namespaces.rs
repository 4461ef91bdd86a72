//! The pod's namespaces: UTS and IPC created once and kept alive by nsfs bind
//! mounts under [`NS_DIR`], the guest's root network namespace (where the NICs
//! are), and, when the pod shares one, a pid namespace held by the pause process.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::error::SandboxError;
use super::pause::PAUSE_ARG;
use super::spec::Sysctl;
use crate::container::pidfd::PidFd;
use crate::container::PodNamespaces;
use crate::reaper::{ExitStatus, Reaper};

/// Where the pod's namespace files are bind-mounted.
pub const NS_DIR: &str = "/run/vessel/sandbox/ns";

/// How long teardown waits for the pause process to be reaped after SIGKILL.
const PAUSE_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause process holding a shared pid namespace.
#[derive(Debug)]
struct Pause {
    pid: Pid,
    pidfd: PidFd,
    exit: oneshot::Receiver<ExitStatus>,
}

/// The pod's namespaces and what keeps them alive.
#[derive(Debug, Default)]
pub struct PodNs {
    /// nsfs bind mounts made, newest last.
    mounts: Vec<PathBuf>,
    pause: Option<Pause>,
}

impl PodNs {
    /// Kills the pause process (and with it the shared pid namespace) and drops the namespaces.
    pub async fn undo(mut self) {
        if let Some(pause) = self.pause.take() {
            match pause.pidfd.signal(Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(errno) => {
                    tracing::warn!(%errno, pid = pause.pid.as_raw(), "cannot kill the pause process")
                }
            }
            if tokio::time::timeout(PAUSE_EXIT_TIMEOUT, pause.exit)
                .await
                .is_err()
            {
                tracing::warn!(pid = pause.pid.as_raw(), "pause process not reaped in time");
            }
        }
        unmount_all(std::mem::take(&mut self.mounts));
    }
}

fn unmount_all(mounts: Vec<PathBuf>) {
    for path in mounts.into_iter().rev() {
        if let Err(errno) = umount2(&path, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %path.display(), %errno, "cannot unmount namespace file");
        }
        let _ = fs::remove_file(&path);
    }
}

/// Bind-mounts the nsfs file `source` on `NS_DIR/name`, recording it in `mounts`.
fn bind_ns(source: &Path, name: &str, mounts: &mut Vec<PathBuf>) -> Result<PathBuf, SandboxError> {
    let target = Path::new(NS_DIR).join(name);
    fs::File::create(&target)
        .map_err(|e| SandboxError::internal(format!("create {}", target.display()), e))?;
    mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        let _ = fs::remove_file(&target);
        SandboxError::internal(
            format!("bind {} to {}", source.display(), target.display()),
            e,
        )
    })?;
    mounts.push(target.clone());
    Ok(target)
}

/// In a thread of its own (unshare changes the calling thread for good): new UTS
/// and IPC namespaces, the hostname and IPC sysctls set in them, and their files bound.
fn uts_and_ipc(
    hostname: &str,
    ipc_sysctls: &[Sysctl],
    mounts: &mut Vec<PathBuf>,
) -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| SandboxError::internal("unshare the pod's UTS and IPC namespaces", e))?;
    nix::unistd::sethostname(hostname).map_err(|e| SandboxError::internal("sethostname", e))?;
    for s in ipc_sysctls {
        super::sysctl::write(s)?;
    }
    bind_ns(Path::new("/proc/thread-self/ns/uts"), "uts", mounts)?;
    bind_ns(Path::new("/proc/thread-self/ns/ipc"), "ipc", mounts)?;
    Ok(())
}

/// Starts the pause process as PID 1 of a new pid namespace.
fn spawn_pause(reaper: &Reaper) -> Result<Pause, SandboxError> {
    let exe = CString::new(Path::new("/proc/self/exe").as_os_str().as_bytes())
        .map_err(|e| SandboxError::internal("pause path", e))?;
    let arg = CString::new(PAUSE_ARG).map_err(|e| SandboxError::internal("pause argument", e))?;
    // Built before the clone: the child of a multi-threaded process may not allocate.
    let argv = [exe.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let mut stack = vec![0u8; 64 * 1024];
    let supervised = reaper.supervise(|| {
        let child = Box::new(|| {
            // Safe: execve with NUL-terminated arrays of valid C strings; on failure
            // _exit, which is async-signal-safe.
            unsafe {
                libc::execve(argv[0], argv.as_ptr(), envp.as_ptr());
                libc::_exit(127)
            }
        });
        // Safe: the child runs only the closure above, which execs or exits at once.
        let pid = unsafe {
            nix::sched::clone(
                child,
                &mut stack,
                CloneFlags::CLONE_NEWPID,
                Some(libc::SIGCHLD),
            )
        }?;
        Ok::<_, nix::errno::Errno>(((), pid))
    });
    let supervised =
        supervised.map_err(|e| SandboxError::internal("start the pause process", e))?;
    let pidfd = PidFd::open(supervised.pid).map_err(|e| {
        let _ = nix::sys::signal::kill(supervised.pid, Signal::SIGKILL);
        SandboxError::internal("open a pidfd for the pause process", e)
    })?;
    tracing::info!(pid = supervised.pid.as_raw(), "pause process started");
    Ok(Pause {
        pid: supervised.pid,
        pidfd,
        exit: supervised.exit,
    })
}

/// Creates the pod's namespaces; on error `ns` holds what to undo.
pub async fn create(
    hostname: &str,
    ipc_sysctls: Vec<Sysctl>,
    share_pid: bool,
    reaper: &Reaper,
    ns: &mut PodNs,
) -> Result<PodNamespaces, SandboxError> {
    fs::create_dir_all(NS_DIR)
        .map_err(|e| SandboxError::internal(format!("create {NS_DIR}"), e))?;
    let net = bind_ns(Path::new("/proc/self/ns/net"), "net", &mut ns.mounts)?;
    let name = hostname.to_owned();
    let (mounts, result) = tokio::task::spawn_blocking(move || {
        let thread = std::thread::Builder::new()
            .name("pod-namespaces".into())
            .spawn(move || {
                let mut mounts = Vec::new();
                let result = uts_and_ipc(&name, &ipc_sysctls, &mut mounts);
                (mounts, result)
            });
        match thread.map(std::thread::JoinHandle::join) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => (
                Vec::new(),
                Err(SandboxError::Internal("namespace thread panicked".into())),
            ),
            Err(e) => (
                Vec::new(),
                Err(SandboxError::internal("spawn the namespace thread", e)),
            ),
        }
    })
    .await
    .map_err(|e| SandboxError::internal("namespace task", e))?;
    ns.mounts.extend(mounts);
    result?;
    let pid = if share_pid {
        let pause = spawn_pause(reaper)?;
        let source = PathBuf::from(format!("/proc/{}/ns/pid", pause.pid.as_raw()));
        ns.pause = Some(pause);
        Some(bind_ns(&source, "pid", &mut ns.mounts)?)
    } else {
        None
    };
    Ok(PodNamespaces {
        net,
        ipc: Path::new(NS_DIR).join("ipc"),
        uts: Path::new(NS_DIR).join("uts"),
        pid,
        hostname: hostname.to_owned(),
    })
}
