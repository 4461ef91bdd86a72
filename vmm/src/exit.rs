//! Why the VM stopped, and the process exit code that tells the caller.
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0    | the guest reset itself (i8042 reset: `reboot`, or a graceful shutdown after ctrl-alt-del): a clean stop |
//! | 1    | VMM error: bad configuration, setup failure or runtime failure (e.g. a share's virtiofsd died) |
//! | 2    | the guest crashed: triple fault, KVM internal error, entry failure |
//! | 3    | stopped through the control API (`{"op":"stop"}`): a hard stop |
//! | 4    | SIGTERM or SIGINT and the guest did not shut down within the grace: console flushed, then a hard stop |

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Exit code: the guest asked for a reset (how a guest `reboot` ends the VM).
pub const EXIT_GUEST_RESET: u8 = 0;
/// Exit code: the VMM failed (configuration, setup or runtime).
pub const EXIT_VMM_ERROR: u8 = 1;
/// Exit code: the guest crashed (triple fault, internal error, failed entry).
pub const EXIT_GUEST_CRASH: u8 = 2;
/// Exit code: a control API client asked for a hard stop.
pub const EXIT_API_STOP: u8 = 3;
/// Exit code: SIGTERM or SIGINT stopped the VM hard (the guest, asked with
/// ctrl-alt-del, did not reset within the grace, could not be asked, or a
/// second signal came). A guest that complies exits with code 0 instead.
pub const EXIT_SIGNAL: u8 = 4;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest requested a reset through the i8042 (or a KVM reset event).
    GuestReset,
    /// The guest crashed; the text says how.
    GuestCrash(String),
    /// The VMM failed while the guest ran; the text says how.
    VmmError(String),
    /// A control API client sent `stop`.
    ApiStop,
    /// The host sent this signal (its name, e.g. `SIGTERM`) and the guest did
    /// not shut down in time.
    Signal(&'static str),
}

impl ExitReason {
    /// The process exit code for this reason.
    pub fn code(&self) -> u8 {
        match self {
            ExitReason::GuestReset => EXIT_GUEST_RESET,
            ExitReason::VmmError(_) => EXIT_VMM_ERROR,
            ExitReason::GuestCrash(_) => EXIT_GUEST_CRASH,
            ExitReason::ApiStop => EXIT_API_STOP,
            ExitReason::Signal(_) => EXIT_SIGNAL,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::GuestReset => write!(f, "guest reset"),
            ExitReason::GuestCrash(why) => write!(f, "guest crashed: {why}"),
            ExitReason::VmmError(why) => write!(f, "vmm error: {why}"),
            ExitReason::ApiStop => write!(f, "stopped through the control API"),
            ExitReason::Signal(name) => write!(f, "stopped by {name}"),
        }
    }
}

/// Records the first exit reason reported by any thread and wakes the waiter.
///
/// Later reports are ignored: the first one is the cause, the rest are
/// usually fallout from stopping.
#[derive(Default)]
pub struct ExitLatch {
    // Checked by vCPU threads on every loop turn, so kept apart from the lock.
    set: AtomicBool,
    reason: Mutex<Option<ExitReason>>,
    cond: Condvar,
}

impl ExitLatch {
    /// Creates an unset latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `reason` if none was recorded yet; returns whether it was the first.
    pub fn set(&self, reason: ExitReason) -> bool {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        self.set.store(true, Ordering::SeqCst);
        self.cond.notify_all();
        true
    }

    /// Whether an exit reason was recorded (the VM is stopping).
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Blocks until a reason is recorded and returns it.
    pub fn wait(&self) -> ExitReason {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(reason) = slot.as_ref() {
                return reason.clone();
            }
            slot = self.cond.wait(slot).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn codes_match_the_documented_table() {
        assert_eq!(ExitReason::GuestReset.code(), 0);
        assert_eq!(ExitReason::VmmError("x".into()).code(), 1);
        assert_eq!(ExitReason::GuestCrash("x".into()).code(), 2);
        assert_eq!(ExitReason::ApiStop.code(), 3);
        assert_eq!(ExitReason::Signal("SIGTERM").code(), 4);
    }

    #[test]
    fn first_reason_wins_and_wakes_the_waiter() {
        let latch = Arc::new(ExitLatch::new());
        assert!(!latch.is_set());
        let waiter = {
            let latch = latch.clone();
            std::thread::spawn(move || latch.wait())
        };
        assert!(latch.set(ExitReason::GuestReset));
        assert!(!latch.set(ExitReason::GuestCrash("late".into())));
        assert!(latch.is_set());
        assert_eq!(waiter.join().unwrap(), ExitReason::GuestReset);
    }
}
