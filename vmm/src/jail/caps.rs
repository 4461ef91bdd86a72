//! Capabilities: the check before entering, and dropping every one after.

use caps::{CapSet, Capability};

use super::JailError;

/// Whether the process may create a mount namespace and mount.
pub(super) fn has_sys_admin() -> Result<bool, JailError> {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
        .map_err(|e| JailError::Caps(e.to_string()))
}

fn err(e: caps::errors::CapsError) -> JailError {
    JailError::Caps(e.to_string())
}

/// Empties the bounding, ambient and inheritable sets, so no later exec or
/// id change can bring a capability back. Changing the bounding set needs
/// CAP_SETPCAP: call this before switching ids.
pub(super) fn drop_bounding() -> Result<(), JailError> {
    caps::clear(None, CapSet::Bounding).map_err(err)?;
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)
}

/// Drops every capability left (the id switch to a non-root uid already
/// emptied them; uid 0 keeps them until here), then sets no_new_privs. The
/// VMM needs none at runtime: /dev/kvm, guest memory, disks, taps and
/// sockets are open already, and the files it touches later (its socket
/// directories) belong to its own user.
pub(super) fn drop_all() -> Result<(), JailError> {
    drop_bounding()?;
    caps::clear(None, CapSet::Effective).map_err(err)?;
    caps::clear(None, CapSet::Permitted).map_err(err)?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(JailError::Step(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            nix::Error::last(),
        ));
    }
    Ok(())
}
