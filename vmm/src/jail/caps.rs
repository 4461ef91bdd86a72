//! Capabilities: the check before entering, and dropping every one after.

use caps::{CapSet, Capability};

use super::JailError;

/// Whether the process may create a mount namespace and mount.
pub(super) fn has_sys_admin() -> Result<bool, JailError> {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN)
        .map_err(|e| JailError::Caps(e.to_string()))
}

/// Drops every capability from every set, then sets no_new_privs. The
/// bounding and ambient sets go first: changing them needs CAP_SETPCAP,
/// which is still effective then. The VMM needs none at runtime: /dev/kvm,
/// guest memory, disks, taps and sockets are open already, and the files it
/// touches later (its socket directories) belong to its own user.
pub(super) fn drop_all() -> Result<(), JailError> {
    let err = |e: caps::errors::CapsError| JailError::Caps(e.to_string());
    caps::clear(None, CapSet::Bounding).map_err(err)?;
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
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
