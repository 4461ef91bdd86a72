//! Errors of the cgroup layer.

use crate::container::EngineError;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A resource value is malformed; the message names the spec field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The guest's cgroup hierarchy cannot do what was asked (a controller is missing).
    #[error("{0}")]
    Unavailable(String),
    /// A cgroupfs operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step (`write`, `mkdir`, ...).
        what: &'static str,
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl CgroupError {
    /// Prefixes the message of a request error with the request field it came from.
    pub fn in_field(self, field: &str) -> Self {
        match self {
            Self::InvalidArgument(m) => Self::InvalidArgument(format!("{field}{m}")),
            Self::Unavailable(m) => Self::Unavailable(format!("{field}{m}")),
            io @ Self::Io { .. } => io,
        }
    }

    /// An I/O failure on `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<CgroupError> for EngineError {
    fn from(err: CgroupError) -> Self {
        match err {
            CgroupError::InvalidArgument(m) => EngineError::InvalidArgument(m),
            CgroupError::Unavailable(m) => EngineError::FailedPrecondition(m),
            io @ CgroupError::Io { .. } => EngineError::Internal(io.to_string()),
        }
    }
}
