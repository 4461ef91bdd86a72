//! Switching to the jail's unprivileged user: no supplementary groups,
//! then the gid (while CAP_SETGID is still there), then the uid. With a
//! non-root uid in all of real, effective and saved, the kernel empties the
//! permitted and effective capability sets as well.

use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::JailError;

/// Runs the whole process as `uid`:`gid` from here on (the main thread is
/// the only one; threads started later inherit the ids).
pub(super) fn switch(uid: u32, gid: u32) -> Result<(), JailError> {
    let fail = |step| {
        move |source| JailError::Ids {
            uid,
            gid,
            step,
            source,
        }
    };
    setgroups(&[]).map_err(fail("setgroups([])"))?;
    let g = Gid::from_raw(gid);
    setresgid(g, g, g).map_err(fail("setresgid"))?;
    let u = Uid::from_raw(uid);
    setresuid(u, u, u).map_err(fail("setresuid"))?;
    Ok(())
}
