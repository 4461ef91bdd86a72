//! Giving the container process its terminal (see `container::stdio::console`).

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Spec;

use super::join::take_fd;
use super::SetupError;
use crate::container::stdio::console;

/// Allocates the pty inside the container and sends the master to the agent
/// over the inherited socket `raw`; the slave becomes fds 0–2, owned by the process's user.
pub(super) fn setup(raw: i32, spec: &Spec) -> Result<(), SetupError> {
    let socket = take_fd(raw, "console socket")?;
    let owner = spec.process().as_ref().map_or((0, 0), |p| {
        let user = p.user();
        (user.uid(), user.gid())
    });
    console::become_terminal_client(socket, (Uid::from_raw(owner.0), Gid::from_raw(owner.1)))
        .map_err(|e| SetupError::internal(format!("process.terminal: {e}")))
}
