//! The library's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the client library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint string is not `unix:///path` or `/path`.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Connecting to the runtime's socket failed.
    #[error(
        "connect to {endpoint}: {reason} (is the runtime running, and may you open its socket?)"
    )]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The innermost cause (tonic's own errors only say "transport error").
        reason: String,
    },
    /// The runtime answered with a gRPC error status.
    #[error("{code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A call did not finish within its deadline.
    #[error("{call} timed out after {after:?}")]
    Timeout {
        /// The RPC or step that timed out.
        call: &'static str,
        /// The deadline it had.
        after: Duration,
    },
    /// Reading a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A config file is too large to be a CRI config.
    #[error("{path}: file is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The size limit.
        limit: u64,
    },
    /// A config file does not parse, or a field has a bad value.
    #[error("{path}: {field}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field path inside the file (`.` for the whole document).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No object matches an ID (prefix).
    #[error("no {kind} matches ID {id:?}")]
    NotFound {
        /// "pod", "container" or "image".
        kind: &'static str,
        /// The ID or prefix as given.
        id: String,
    },
    /// Several objects match an ID prefix.
    #[error("ID prefix {id:?} is ambiguous: it matches {count} {kind}s ({examples})")]
    Ambiguous {
        /// "pod" or "container".
        kind: &'static str,
        /// The prefix as given.
        id: String,
        /// How many matched.
        count: usize,
        /// The first few matches, comma separated.
        examples: String,
    },
    /// The object's state forbids the operation (a running container without `--force`).
    #[error("{0}")]
    Refused(String),
    /// A command-line argument is malformed.
    #[error("{0}")]
    Usage(String),
    /// A step of `run` failed, and removing the pod it had made failed too.
    #[error("{error} (removing pod {pod} again failed too: {rollback}; remove it with `vessel rmp -f {pod}`)")]
    RollbackFailed {
        /// The step's error.
        error: Box<ClientError>,
        /// The pod left behind.
        pod: String,
        /// Why removing it failed.
        rollback: Box<ClientError>,
    },
    /// A streaming session (exec -i/-t, attach, port-forward) failed.
    #[error("streaming: {0}")]
    Stream(#[from] vessel_streaming::client::ClientError),
    /// The runtime's reply lacks something every reply must carry.
    #[error("bad reply from the runtime: {0}")]
    BadReply(String),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Rpc {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}
