//! Errors of sandbox setup and their gRPC statuses.

use tonic::Status;

/// Why a sandbox operation failed; each variant maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A request field is malformed or names something absent; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// There is no sandbox (before `Setup`).
    #[error("{0}")]
    NotFound(String),
    /// The sandbox is already set up, or being set up.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The guest failed to do what was asked.
    #[error("{0}")]
    Internal(String),
}

impl SandboxError {
    /// An `InvalidArgument` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// An `Internal` error: `what` failed because of `err`.
    pub fn internal(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{what}: {err}"))
    }
}

impl From<SandboxError> for Status {
    fn from(err: SandboxError) -> Self {
        match err {
            SandboxError::InvalidArgument(m) => Status::invalid_argument(m),
            SandboxError::NotFound(m) => Status::not_found(m),
            SandboxError::FailedPrecondition(m) => Status::failed_precondition(m),
            SandboxError::Internal(m) => Status::internal(m),
        }
    }
}
