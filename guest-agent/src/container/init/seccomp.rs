//! Putting the spec's seccomp profile on the container process, as late as the
//! kernel allows: right before the exec when no_new_privs is set or the process
//! keeps CAP_SYS_ADMIN, else (as runc does) before the switch away from root,
//! while the init may still install filters without no_new_privs.

use oci_spec::runtime::{Capability, Process, Spec};

use super::SetupError;
use crate::container::seccomp::{compile, Profile};

/// The compiled profile of `spec`, if it has one that restricts anything.
pub fn load(spec: &Spec) -> Result<Option<Profile>, SetupError> {
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    // The agent checked the profile at `Create`; unknown names were logged there.
    let profile = compile(seccomp).map_err(|e| SetupError::invalid(e.to_string()))?;
    Ok((!profile.is_empty()).then_some(profile))
}

/// Whether the filter can wait until right before the exec.
pub fn can_install_late(process: &Process) -> bool {
    let keeps_sys_admin = process
        .capabilities()
        .as_ref()
        .and_then(|c| c.effective().as_ref())
        .is_some_and(|set| set.contains(&Capability::SysAdmin));
    process.no_new_privileges() == Some(true) || keeps_sys_admin
}

/// Installs `profile` on this (single-threaded) process.
pub fn install(profile: &Profile) -> Result<(), SetupError> {
    profile
        .install()
        .map_err(|e| SetupError::internal(format!("install the seccomp profile: {e}")))
}
