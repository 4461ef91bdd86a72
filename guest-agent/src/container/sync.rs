//! Messages the init stage sends the agent over the sync pipe, one JSON line each.
//!
//! Every line is far below `PIPE_BUF`, so writes from the two init processes
//! (the one that forks and the container's) never interleave.

use std::os::fd::BorrowedFd;

use serde::{Deserialize, Serialize};

/// How the agent should classify a setup failure.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum FailureKind {
    /// The spec asks for something impossible (e.g. a missing executable).
    InvalidArgument,
    /// Something the spec names does not exist.
    NotFound,
    /// The guest could not do it (mount or syscall failure).
    Internal,
}

/// One line from the init stage.
#[derive(Debug, Deserialize, Serialize)]
pub enum SyncMessage {
    /// Pid of the container's init, in the agent's pid namespace.
    Pid(i32),
    /// Setup is done; the process waits for the start byte.
    Ready,
    /// Setup (or exec, after start) failed.
    Failed {
        /// Classification for the gRPC status.
        kind: FailureKind,
        /// What failed, for the host.
        message: String,
    },
}

impl SyncMessage {
    /// Writes the message as one line in a single `write`.
    // Errors are ignored: the agent notices a missing message as an early EOF.
    pub fn send(&self, fd: BorrowedFd<'_>) {
        if let Ok(mut line) = serde_json::to_vec(self) {
            line.push(b'\n');
            let _ = nix::unistd::write(fd, &line);
        }
    }
}
