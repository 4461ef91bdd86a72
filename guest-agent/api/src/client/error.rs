//! Errors of the agent client.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::check_response::ServingStatus;

/// Why the hybrid vsock handshake with the VMM failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Writing `CONNECT <port>` or reading the reply failed.
    #[error("hybrid vsock handshake I/O failed")]
    Io(#[from] io::Error),
    /// The VMM closed the socket before a full reply line; usually nothing listens on the guest port yet.
    #[error("VMM closed the socket after {received:?}, before a full reply line")]
    Closed {
        /// What arrived before the close (lossy UTF-8).
        received: String,
    },
    /// No full reply line arrived in time.
    #[error("no reply line within {timeout:?} (received {received:?})")]
    Timeout {
        /// The bound that passed.
        timeout: Duration,
        /// What arrived before the timeout (lossy UTF-8).
        received: String,
    },
    /// The reply went past the length limit without a newline.
    #[error("reply longer than {limit} bytes: {received:?}")]
    TooLong {
        /// The limit, newline included.
        limit: usize,
        /// The bytes read up to the limit (lossy UTF-8).
        received: String,
    },
    /// The reply line was not `OK <port>`.
    #[error("unexpected reply {line:?}, expected \"OK <port>\"")]
    Unexpected {
        /// The line without its newline (lossy UTF-8).
        line: String,
    },
}

/// Why connecting to or talking with the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The Unix socket (the agent's, or the VMM's vsock socket) could not be connected.
    #[error("cannot connect to {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The AF_VSOCK connection to the guest failed.
    #[error("cannot connect to vsock cid {cid} port {port}")]
    Vsock {
        /// The guest's context id.
        cid: u32,
        /// The guest port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The VMM refused or botched the hybrid vsock handshake.
    #[error("hybrid vsock handshake on {path} for guest port {port} failed")]
    Handshake {
        /// The VMM's vsock socket.
        path: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The cause.
        #[source]
        source: HandshakeError,
    },
    /// Setting up the HTTP/2 channel failed.
    #[error("gRPC transport failed")]
    Transport(#[from] tonic::transport::Error),
    /// The agent answered a call with an error status.
    #[error("agent call failed")]
    Rpc(#[source] Box<tonic::Status>),
    /// `Health.Check` answered, but not with SERVING.
    #[error("agent health is {0:?}, not SERVING")]
    NotServing(ServingStatus),
    /// An attempt was cut short by its deadline.
    #[error("timed out")]
    Timeout,
    /// The agent did not report SERVING before the deadline of `wait_ready`.
    #[error("agent at {target} not ready after {attempts} attempts in {waited:?}")]
    NotReady {
        /// What was polled, e.g. `vsock /run/vm.sock port 1024`.
        target: String,
        /// Attempts started, including one cut short by the deadline.
        attempts: u32,
        /// Time spent waiting.
        waited: Duration,
        /// The last attempt's own failure, or [`ClientError::Timeout`] if no attempt finished.
        #[source]
        last: Box<ClientError>,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Rpc(Box::new(status))
    }
}
