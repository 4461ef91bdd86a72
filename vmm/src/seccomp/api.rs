//! The control API role: the accept thread and its per-client threads
//! (which inherit this filter), serving `info`, `pause`, `resume`,
//! `counters`, `shutdown` (a lock and an eventfd write, like the vCPUs'
//! device accesses) and `stop`.

use super::rules::RuleSet;
use super::{common, SeccompError};

/// The rules of the API threads.
pub fn rules(kick_signal: libc::c_int) -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    common::thread_creation(&mut r)?;
    r.allow(&[
        libc::SYS_accept4,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_read,
        libc::SYS_shutdown,
    ]);
    // The clients' write timeout.
    r.allow_arg_in(libc::SYS_setsockopt, 1, &[libc::SOL_SOCKET as u64])?;
    // `pause` kicks the vCPU threads out of KVM_RUN.
    common::allow_tgkill_own(&mut r, kick_signal)?;
    Ok(r)
}
