//! The signal role: the thread that takes SIGTERM and SIGINT with sigwait
//! (rt_sigtimedwait, also for the shutdown grace) and types ctrl-alt-del on
//! the i8042 (a lock and an eventfd write, both in the common rules).

use super::rules::RuleSet;
use super::{common, SeccompError};

/// The rules of the signal thread.
pub fn rules() -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    r.allow(&[libc::SYS_rt_sigtimedwait]);
    Ok(r)
}
