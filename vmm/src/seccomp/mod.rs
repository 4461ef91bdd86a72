//! Per-thread seccomp filters (seccompiler): one allow-list per thread role,
//! compiled to BPF at startup and installed by each thread itself before it
//! runs guest code or serves requests. A syscall outside the list kills the
//! whole process (SIGSYS), so a violation is fatal and visible; `--seccomp=log`
//! logs it to the kernel log instead.
//!
//! Filters are inherited by threads a filtered thread starts and stack on
//! top of each other, so device workers are not started by the vCPU thread
//! that activates the device (they would inherit the vCPU filter) but by a
//! launcher thread of their own ([`spawn_worker`]).

mod api;
mod common;
mod device;
mod launcher;
mod main_thread;
mod rules;
mod signals;
#[cfg(test)]
mod tests;
mod vcpu;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

use crate::exit::{ExitLatch, ExitReason};
pub use launcher::spawn_worker;
pub use rules::RuleSet;

/// What a filter does with a syscall outside the role's list (`--seccomp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Kill the process (SIGSYS): the default.
    Kill,
    /// Allow it, but log it to the kernel log (audit): for finding what a
    /// role is missing.
    Log,
    /// Install no filters (debugging only).
    Off,
}

/// The kind of thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A vCPU thread (KVM_RUN and the device exits it handles).
    Vcpu,
    /// A virtio device worker thread (block, net, rng, fs).
    Device,
    /// The vsock device's worker thread (Unix sockets too).
    Vsock,
    /// The balloon's worker thread (punches holes in guest RAM's memfd too).
    Balloon,
    /// The thread that starts device workers.
    Launcher,
    /// The control API threads.
    Api,
    /// The SIGTERM/SIGINT/SIGUSR1 thread.
    Signals,
    /// The main thread once the vCPUs run.
    Main,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Vcpu,
        Role::Device,
        Role::Vsock,
        Role::Balloon,
        Role::Launcher,
        Role::Api,
        Role::Signals,
        Role::Main,
    ];

    /// The role's allow-list.
    pub fn rules(self) -> Result<RuleSet, SeccompError> {
        let kick = crate::vcpu::kick::kick_signal();
        match self {
            Role::Vcpu => vcpu::rules(),
            Role::Device => device::rules(),
            Role::Vsock => device::vsock_rules(),
            Role::Balloon => device::balloon_rules(),
            Role::Launcher => device::launcher_rules(),
            Role::Api => api::rules(kick),
            Role::Signals => signals::rules(kick),
            Role::Main => main_thread::rules(kick),
        }
    }
}

/// Error building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A rule could not be built.
    #[error("invalid seccomp rule: {0}")]
    Rule(#[source] seccompiler::BackendError),
    /// A role's filter did not compile to BPF.
    #[error("cannot compile the {0:?} seccomp filter: {1}")]
    Compile(Role, #[source] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("cannot install the {0:?} seccomp filter: {1}")]
    Install(Role, #[source] seccompiler::Error),
    /// The launcher thread could not be started.
    #[error("cannot start the device launcher thread: {0}")]
    Launcher(#[source] std::io::Error),
}

/// A role's compiled programs: the errno filters (installed first, so the
/// later installs are still allowed), then the allow-list.
struct Programs {
    errno: BpfProgram,
    enosys: BpfProgram,
    allow: BpfProgram,
}

static LOG_FDS: OnceLock<Vec<std::os::fd::RawFd>> = OnceLock::new();

/// Names the descriptors of the capped console and log files, which every
/// role may pread, pwrite and ftruncate (see `logging::CappedFile`). Call
/// once, before compiling the filters.
pub fn set_log_fds(fds: &[std::os::fd::RawFd]) {
    if LOG_FDS.set(fds.to_vec()).is_err() {
        tracing::warn!("seccomp: the log descriptors were already set");
    }
}

fn log_fds() -> &'static [std::os::fd::RawFd] {
    LOG_FDS.get().map_or(&[], Vec::as_slice)
}

/// Every role's filter, compiled.
pub struct Filters {
    programs: HashMap<Role, Programs>,
}

fn arch() -> TargetArch {
    // The VMM only builds for x86_64 (KVM x86 setup throughout).
    TargetArch::x86_64
}

/// Compiles `role`'s filter with `mismatch` as the action for unlisted syscalls.
pub fn compile(role: Role, mismatch: SeccompAction) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        role.rules()?.into_map(),
        mismatch,
        SeccompAction::Allow,
        arch(),
    )
    .map_err(|e| SeccompError::Compile(role, e))?;
    filter
        .try_into()
        .map_err(|e| SeccompError::Compile(role, e))
}

fn compile_errno(role: Role) -> Result<BpfProgram, SeccompError> {
    compile_errno_with(role, common::errno_rules(), libc::EACCES)
}

fn compile_enosys(role: Role) -> Result<BpfProgram, SeccompError> {
    compile_errno_with(role, common::enosys_rules(), libc::ENOSYS)
}

fn compile_errno_with(
    role: Role,
    rules: RuleSet,
    errno: libc::c_int,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules.into_map(),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch(),
    )
    .map_err(|e| SeccompError::Compile(role, e))?;
    filter
        .try_into()
        .map_err(|e| SeccompError::Compile(role, e))
}

/// Installs `role`'s programs on the calling thread.
fn install(role: Role, p: &Programs) -> Result<(), SeccompError> {
    seccompiler::apply_filter(&p.errno).map_err(|e| SeccompError::Install(role, e))?;
    seccompiler::apply_filter(&p.enosys).map_err(|e| SeccompError::Install(role, e))?;
    seccompiler::apply_filter(&p.allow).map_err(|e| SeccompError::Install(role, e))
}

impl Filters {
    /// Compiles every role's filter for `mode`; None for `Mode::Off`.
    pub fn compile(mode: Mode) -> Result<Option<Filters>, SeccompError> {
        let mismatch = match mode {
            Mode::Kill => SeccompAction::KillProcess,
            Mode::Log => SeccompAction::Log,
            Mode::Off => return Ok(None),
        };
        let mut programs = HashMap::new();
        for role in Role::ALL {
            let p = Programs {
                errno: compile_errno(role)?,
                enosys: compile_enosys(role)?,
                allow: compile(role, mismatch.clone())?,
            };
            programs.insert(role, p);
        }
        Ok(Some(Filters { programs }))
    }

    /// Makes the filters the ones [`enter`] installs, and starts the device
    /// launcher. A thread that cannot install its filter records a VMM error
    /// in `exit` instead of running unconfined. Call once, before the VMM
    /// starts its threads.
    pub fn activate(self, exit: Arc<ExitLatch>) -> Result<(), SeccompError> {
        if ACTIVE
            .set(Active {
                filters: self,
                exit,
            })
            .is_err()
        {
            tracing::warn!("seccomp filters were already active");
            return Ok(());
        }
        launcher::start().map_err(SeccompError::Launcher)
    }
}

struct Active {
    filters: Filters,
    exit: Arc<ExitLatch>,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

/// Whether filters are active (not `--seccomp=off`, not a unit test).
pub fn active() -> bool {
    ACTIVE.get().is_some()
}

/// Installs `role`'s filter on the calling thread, if filters are active.
/// On failure the VM is stopped with a VMM error and the caller must return
/// without doing its work.
pub fn enter(role: Role) -> Result<(), SeccompError> {
    let Some(active) = ACTIVE.get() else {
        return Ok(());
    };
    let Some(programs) = active.filters.programs.get(&role) else {
        return Ok(());
    };
    if let Err(e) = install(role, programs) {
        tracing::error!("{e}");
        active.exit.set(ExitReason::VmmError(e.to_string()));
        return Err(e);
    }
    tracing::debug!(?role, "seccomp filter installed");
    Ok(())
}

/// Installs `role`'s filter on the calling thread with `mismatch` as the
/// action, whether or not filters are active (for tests).
pub fn install_now(role: Role, mismatch: SeccompAction) -> Result<(), SeccompError> {
    let programs = Programs {
        errno: compile_errno(role)?,
        enosys: compile_enosys(role)?,
        allow: compile(role, mismatch)?,
    };
    install(role, &programs)
}
