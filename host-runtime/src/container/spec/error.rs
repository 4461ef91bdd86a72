//! Why a CRI container config cannot become an OCI spec.

/// A CRI container config that cannot become an OCI spec. The CRI layer
/// maps [`SpecError::Invalid`] to `InvalidArgument` (the message names the
/// field, e.g. `mounts[2].propagation`) and the rest to `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A field of the request is missing, malformed or unsupported.
    #[error("{field}: {message}")]
    Invalid {
        /// The field, as a path into the CRI request (`linux.security_context.run_as_user`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A seccomp profile on the host could not be read (other than "not there").
    #[error("{field}: cannot read {path}: {source}")]
    ProfileRead {
        /// The field that named the profile.
        field: String,
        /// The profile's path on the host.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The OCI spec types refused a value (a bug of the builder, not of the request).
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

impl SpecError {
    /// An invalid field with a message.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field this error names, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            SpecError::Invalid { field, .. } | SpecError::ProfileRead { field, .. } => Some(field),
            SpecError::Oci(_) => None,
        }
    }
}

impl From<SpecError> for tonic::Status {
    fn from(err: SpecError) -> Self {
        match err {
            SpecError::Invalid { .. } => tonic::Status::invalid_argument(err.to_string()),
            // The profile is named by the request; a path that cannot be read is the caller's.
            SpecError::ProfileRead { .. } => tonic::Status::invalid_argument(err.to_string()),
            SpecError::Oci(_) => tonic::Status::internal(err.to_string()),
        }
    }
}
