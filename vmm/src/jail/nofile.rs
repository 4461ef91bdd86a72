//! Resource limits in the jail. RLIMIT_NOFILE: what is open at entry plus
//! what the devices and the control API may open at runtime, so a hostile
//! guest or client cannot make the VMM hold descriptors without bound.
//! RLIMIT_FSIZE: no file the VMM writes may grow past its largest disk or
//! log cap.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use super::JailError;
use crate::control::server::MAX_CLIENTS;
use crate::devices::virtio::vsock::MAX_CONNECTIONS;

/// Descriptors beyond connections and API clients: the vsock and API
/// listeners' clones, each device activation's epoll set, stop eventfd
/// and worker descriptors (twice over across a driver reset), and the
/// net and fs devices' eventfds.
const RUNTIME_SLACK: u64 = 128;

/// Descriptors opened after the jail: one per vsock connection (at most
/// `MAX_CONNECTIONS`), one per API client (at most `MAX_CLIENTS`) and slack.
pub(super) fn runtime_fds() -> u64 {
    (MAX_CONNECTIONS + MAX_CLIENTS) as u64 + RUNTIME_SLACK
}

/// The limit for `open_now` descriptors plus `runtime` more, never above
/// the current hard limit (raising it would need CAP_SYS_RESOURCE).
pub fn nofile_limit(open_now: u64, runtime: u64, hard_now: u64) -> u64 {
    open_now.saturating_add(runtime).min(hard_now)
}

/// Sets the limit; returns it.
pub(super) fn bound(open_now: u64, runtime: u64) -> Result<u64, JailError> {
    let (_, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| JailError::Step("getrlimit", e))?;
    let limit = nofile_limit(open_now, runtime, hard);
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)
        .map_err(|e| JailError::Step("setrlimit(RLIMIT_NOFILE)", e))?;
    Ok(limit)
}

/// Sets RLIMIT_FSIZE to `max` bytes (never above the current hard limit)
/// and ignores SIGXFSZ, so a write past it fails with EFBIG instead of
/// killing the VMM.
pub(super) fn bound_file_size(max: u64) -> Result<(), JailError> {
    let (_, hard) =
        getrlimit(Resource::RLIMIT_FSIZE).map_err(|e| JailError::Step("getrlimit", e))?;
    let limit = max.min(hard);
    setrlimit(Resource::RLIMIT_FSIZE, limit, limit)
        .map_err(|e| JailError::Step("setrlimit(RLIMIT_FSIZE)", e))?;
    // SAFETY: installs the SIG_IGN disposition; no handler code runs.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .map_err(|e| JailError::Step("ignoring SIGXFSZ", e))?;
    Ok(())
}
