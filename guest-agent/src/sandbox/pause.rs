//! The pod's pid-namespace holder: PID 1 of the pod's shared pid namespace,
//! a re-exec of the agent (`__vessel-pod-pause`) that only reaps orphans.
//!
//! A pid namespace dies with its init, so sharing one needs a process that
//! outlives every container, as the pause container does in other runtimes.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// Hidden first argument that turns the agent binary into the pod's pid holder.
pub const PAUSE_ARG: &str = "__vessel-pod-pause";

/// Entry point of the holder; never returns.
pub fn main() -> ! {
    if nix::unistd::getpid().as_raw() != 1 {
        eprintln!("{PAUSE_ARG}: run by vessel-agent only, as PID 1 of a pid namespace");
        std::process::exit(125);
    }
    // It sits in the pod's pid namespace, which containers share, while its
    // mount namespace is the agent's: not ptrace-able, and holding no
    // capability, so it is worth nothing to a container that reaches it.
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("{PAUSE_ARG}: PR_SET_DUMPABLE: {errno}");
        std::process::exit(125);
    }
    if let Err(err) = drop_capabilities() {
        eprintln!("{PAUSE_ARG}: cannot drop capabilities: {err}");
        std::process::exit(125);
    }
    let mut set = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(sig);
    }
    // Blocked signals are queued even for a namespace init, so sigwait sees them.
    if let Err(errno) = set.thread_block() {
        eprintln!("{PAUSE_ARG}: cannot block signals: {errno}");
        std::process::exit(125);
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

/// Empties the bounding, ambient, inheritable, effective and permitted sets.
fn drop_capabilities() -> Result<(), caps::errors::CapsError> {
    for cap in caps::runtime::thread_all_supported() {
        caps::drop(None, caps::CapSet::Bounding, cap)?;
    }
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set)?;
    }
    Ok(())
}

/// Waits for every exited child; SIGCHLDs coalesce.
fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
