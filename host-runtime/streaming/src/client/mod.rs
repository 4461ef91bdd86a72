//! A client for the streaming server's URLs, speaking as client-go does: an
//! HTTP/1.1 upgrade to SPDY/3.1, then remotecommand (`v4.channel.k8s.io`:
//! stdin, stdout, stderr, error with the v4 status, resize) or portforward
//! (`portforward.k8s.io`: an error and a data stream per connection). The
//! `vessel` CLI's `exec -it`, `attach` and `port-forward` and the e2e tests
//! use it. Plain `http://` URLs only (vesseld's default loopback server).

mod connection;
mod exec;
mod port_forward;
mod upgrade;

use std::time::Duration;

pub use connection::{SpdyConnection, StreamReader, StreamWriter};
pub use exec::{attach, exec, parse_status, ExitStatus, SessionIo};
pub use port_forward::PortForwarder;
pub use upgrade::{upgrade, Upgraded};

/// How long the server may take to answer the upgrade or accept a stream.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest inflated header block accepted from the server.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Largest DATA frame written (client-go's spdystream writes 32 KiB at most too).
pub const WRITE_PIECE: usize = 32 * 1024;

/// Frames queued per stream before the connection's reader waits for the
/// stream's consumer (TCP back-pressure then holds the server back).
pub const STREAM_QUEUE: usize = 64;

/// Why a client session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not one this client can use.
    #[error("bad streaming URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The connection could not be made or broke.
    #[error("streaming connection: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused the upgrade (an unknown or used token gets 404).
    #[error("the streaming server refused the upgrade: HTTP {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The reply body (cut at 4 KiB).
        body: String,
    },
    /// The server broke the protocol.
    #[error("streaming protocol: {0}")]
    Protocol(String),
    /// The server did not answer in time.
    #[error("the streaming server did not answer within {0:?}")]
    Timeout(Duration),
    /// The session ended before the command's status arrived.
    #[error("the streaming session ended without a status")]
    NoStatus,
    /// The server reported a failure that is not an exit code.
    #[error("{0}")]
    Failure(String),
}
