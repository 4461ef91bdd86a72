//! Errors of the container engine and their gRPC statuses.

use tonic::Status;

/// Why a container operation failed; each variant maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request field is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The id is taken.
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    /// The container is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A per-container limit is reached (e.g. too many execs).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The guest failed to do what was asked.
    #[error("{0}")]
    Internal(String),
}

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::InvalidArgument(m) => Status::invalid_argument(m),
            EngineError::NotFound(m) => Status::not_found(m),
            EngineError::AlreadyExists(_) => Status::already_exists(err.to_string()),
            EngineError::FailedPrecondition(m) => Status::failed_precondition(m),
            EngineError::ResourceExhausted(m) => Status::resource_exhausted(m),
            EngineError::Internal(m) => Status::internal(m),
        }
    }
}
