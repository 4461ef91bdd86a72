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
