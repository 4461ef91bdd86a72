//! SIGTERM and SIGINT: blocked in every thread (the mask is inherited, so
//! [`block`] runs before any thread starts) and taken by one watcher thread
//! with `sigwait`, which records the stop in the exit latch. No handler runs
//! asynchronously, so nothing races the vCPU kick signal (SIGRTMIN), which
//! stays unblocked.

use std::io;
use std::sync::Arc;

use crate::exit::{ExitLatch, ExitReason};

/// The blocked stop signals, ready to be watched.
pub struct StopSignals {
    set: libc::sigset_t,
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread (and every thread it
/// starts later).
pub fn block() -> io::Result<StopSignals> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only write to it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(StopSignals { set })
}

impl StopSignals {
    /// Starts the watcher: the first stop signal sets `exit` to
    /// [`ExitReason::Signal`]; later ones are absorbed (the stop is under way).
    pub fn watch(self, exit: Arc<ExitLatch>) -> io::Result<()> {
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                // On failure the VM is already stopping.
                if crate::seccomp::enter(crate::seccomp::Role::Signals).is_err() {
                    return;
                }
                loop {
                    let mut sig: libc::c_int = 0;
                    // SAFETY: `set` is an initialised sigset_t, `sig` a valid out pointer.
                    let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
                    if rc != 0 {
                        tracing::error!("sigwait failed: {}", io::Error::from_raw_os_error(rc));
                        return;
                    }
                    tracing::info!("{} received: stopping the VM", name(sig));
                    exit.set(ExitReason::Signal(name(sig)));
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGINT), "SIGINT");
        assert_eq!(name(libc::SIGHUP), "a signal");
    }
}
