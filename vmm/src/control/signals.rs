//! SIGTERM, SIGINT and SIGUSR1: blocked in every thread (the mask is
//! inherited, so [`block`] runs before any thread starts) and taken by one
//! watcher thread with `sigwait`. SIGUSR1 writes a post-mortem (vCPU
//! states, devices, console tail) to the VMM's log and changes nothing. No handler runs asynchronously, so nothing races the vCPU
//! kick signal (SIGRTMIN), which stays unblocked.
//!
//! A stop signal first asks the guest to shut down (ctrl-alt-del, as the
//! control API's `shutdown` does) and gives it a grace period
//! (`--shutdown-grace-ms`): a guest that resets in time ends the VM with exit
//! code 0. When the grace runs out, or a second stop signal arrives, or the
//! guest cannot be asked (its keyboard driver is not up yet), the watcher
//! records the signal in the exit latch: a hard stop, exit code 4.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ShutdownError, VmControl};
use crate::exit::{ExitLatch, ExitReason};

/// Default of `--shutdown-grace-ms`.
pub const DEFAULT_GRACE_MS: u64 = 5000;

/// The blocked stop signals, ready to be watched.
pub struct StopSignals {
    set: libc::sigset_t,
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

/// Blocks SIGTERM, SIGINT and SIGUSR1 in the calling thread (and every
/// thread it starts later).
pub fn block() -> io::Result<StopSignals> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only write to it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGUSR1);
    }
    // SAFETY: `set` is initialised; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(StopSignals { set })
}

/// After a stop signal: how long to wait for the guest before the hard stop
/// (`None`: stop now). Asks the guest through `ask` unless `grace` is zero.
fn grace_after_signal(
    sig: &str,
    grace: Duration,
    ask: impl FnOnce() -> Result<(), ShutdownError>,
) -> Option<Duration> {
    if grace.is_zero() {
        tracing::info!("{sig} received: stopping the VM (no shutdown grace)");
        return None;
    }
    match ask() {
        Ok(()) => {
            tracing::info!(
                grace_ms = grace.as_millis() as u64,
                "{sig} received: asked the guest to shut down; hard stop after the grace"
            );
            Some(grace)
        }
        Err(e) => {
            tracing::warn!(
                "{sig} received: cannot ask the guest to shut down ({e}); stopping the VM now"
            );
            None
        }
    }
}

impl StopSignals {
    /// Waits for a stop signal, at most `timeout` if given; `None` when the
    /// timeout passed without one.
    fn wait_for(&self, timeout: Option<Duration>) -> io::Result<Option<libc::c_int>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ts = deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                libc::timespec {
                    tv_sec: left.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                    tv_nsec: left.subsec_nanos().into(),
                }
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // SAFETY: `set` is an initialised sigset_t, `ts_ptr` null (wait
            // forever) or a valid timespec; no siginfo is wanted.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), ts_ptr) };
            if sig >= 0 {
                return Ok(Some(sig));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }

    /// Starts the watcher. The first stop signal asks the guest (through
    /// `control`) to shut down and waits up to `grace`; then, or at a second
    /// stop signal, it sets `exit` to [`ExitReason::Signal`]. Later signals
    /// are absorbed (the stop is under way).
    pub fn watch(
        self,
        exit: Arc<ExitLatch>,
        control: Arc<VmControl>,
        grace: Duration,
    ) -> io::Result<()> {
        crate::threads::builder("signals")
            .spawn(move || {
                // On failure the VM is already stopping.
                if crate::seccomp::enter(crate::seccomp::Role::Signals).is_err() {
                    return;
                }
                // The signal that started a graceful attempt, and its deadline.
                let mut pending: Option<(&'static str, Instant)> = None;
                loop {
                    let timeout =
                        pending.map(|(_, end)| end.saturating_duration_since(Instant::now()));
                    match self.wait_for(timeout) {
                        Err(e) => {
                            tracing::error!("waiting for stop signals failed: {e}");
                            return;
                        }
                        Ok(None) => {
                            if let Some((sig, _)) = pending.take() {
                                tracing::warn!(
                                    grace_ms = grace.as_millis() as u64,
                                    "the guest did not shut down within the grace: stopping the VM"
                                );
                                exit.set(ExitReason::Signal(sig));
                            }
                        }
                        Ok(Some(libc::SIGUSR1)) => {
                            // Blocks this thread for at most the dump's
                            // bounded waits (about a second).
                            control.log_postmortem("SIGUSR1");
                        }
                        Ok(Some(signo)) => {
                            let sig = name(signo);
                            if pending.take().is_some() {
                                tracing::info!("{sig} received again: stopping the VM now");
                                exit.set(ExitReason::Signal(sig));
                            } else if let Some(g) =
                                grace_after_signal(sig, grace, || control.request_shutdown())
                            {
                                pending = Some((sig, Instant::now() + g));
                            } else {
                                exit.set(ExitReason::Signal(sig));
                            }
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::legacy::i8042::I8042Error;

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGINT), "SIGINT");
        assert_eq!(name(libc::SIGUSR1), "SIGUSR1");
        assert_eq!(name(libc::SIGHUP), "a signal");
    }

    #[test]
    fn a_signal_asks_the_guest_then_waits_the_grace() {
        let mut asked = false;
        let grace = Duration::from_millis(1500);
        let got = grace_after_signal("SIGTERM", grace, || {
            asked = true;
            Ok(())
        });
        assert_eq!(got, Some(grace));
        assert!(asked);
    }

    #[test]
    fn zero_grace_or_a_deaf_guest_means_a_hard_stop_now() {
        let got = grace_after_signal("SIGTERM", Duration::ZERO, || {
            panic!("must not ask the guest with no grace")
        });
        assert_eq!(got, None);
        let got = grace_after_signal("SIGINT", Duration::from_millis(DEFAULT_GRACE_MS), || {
            Err(ShutdownError::Keyboard(
                I8042Error::KeyboardInterruptDisabled,
            ))
        });
        assert_eq!(got, None);
    }
}
