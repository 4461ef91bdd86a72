//! The main thread's role once every vCPU runs: wait for the exit reason,
//! kick and join the vCPU threads, stop the device workers, flush the
//! console, remove the socket files it created, and exit.

use super::rules::RuleSet;
use super::{common, SeccompError};

/// The rules of the main thread after it started the vCPUs.
pub fn rules(kick_signal: libc::c_int) -> Result<RuleSet, SeccompError> {
    let mut r = common::rules()?;
    // Stopping: kick vCPU threads out of KVM_RUN.
    common::allow_tgkill_own(&mut r, kick_signal)?;
    // Removing the API and vsock sockets it bound, after checking they are
    // still its own (same device and inode). In a jail only the socket
    // directories are there to unlink in.
    r.allow(&[
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
    ]);
    Ok(r)
}
