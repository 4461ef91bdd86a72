//! The signal role: the thread that takes SIGTERM and SIGINT with sigwait
//! (rt_sigtimedwait, also for the shutdown grace) and types ctrl-alt-del on
//! the i8042 (a lock and an eventfd write, both in the common rules), and
//! writes the SIGUSR1 post-mortem to the log.

use super::rules::RuleSet;
use super::{common, SeccompError};

/// The rules of the signal thread.
pub fn rules(kick_signal: libc::c_int) -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    r.allow(&[libc::SYS_rt_sigtimedwait]);
    // SIGUSR1's post-mortem kicks the vCPU threads out of KVM_RUN.
    r.allow_arg_in(libc::SYS_tgkill, 2, &[kick_signal as u64])?;
    Ok(r)
}
