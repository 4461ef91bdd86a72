//! The image store's typed errors.

use std::sync::Arc;

/// Everything that can go wrong in the image store. Cloneable so that a pull
/// shared by several callers can hand each of them the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// A reference that does not parse or normalize.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A digest that is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// Why it was refused.
        reason: String,
    },
    /// An argument other than a reference was refused (ids, paths, config).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field or argument name.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// No image by that name, id or digest.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The registry refused the credentials (401/403).
    #[error("registry {registry} refused the credentials for {reference}: {detail}")]
    Unauthorized {
        /// The host that answered.
        registry: String,
        /// The image reference.
        reference: String,
        /// What the registry said.
        detail: String,
    },
    /// The registry does not have the image or blob (404).
    #[error("registry {registry} has no {what} for {reference}: {detail}")]
    RegistryNotFound {
        /// The host that answered.
        registry: String,
        /// The image reference.
        reference: String,
        /// "manifest" or a blob digest.
        what: String,
        /// What the registry said.
        detail: String,
    },
    /// Any other registry failure: transport, 5xx, garbage answers.
    #[error("registry {registry} failed for {reference}: {detail}")]
    Registry {
        /// The host that answered.
        registry: String,
        /// The image reference.
        reference: String,
        /// What went wrong.
        detail: String,
    },
    /// Content whose digest or size is not what its descriptor claims.
    #[error("content {digest} of {reference} failed verification: {detail}")]
    Verification {
        /// The image reference.
        reference: String,
        /// The claimed digest.
        digest: String,
        /// What did not match.
        detail: String,
    },
    /// Content over a configured cap (manifest size, layer count, ...).
    #[error("{what} of {reference} is over the limit: {detail}")]
    TooLarge {
        /// The image reference.
        reference: String,
        /// What was too large.
        what: String,
        /// Sizes involved.
        detail: String,
    },
    /// A manifest, index or config that is not what an image needs.
    #[error("unsupported or malformed {what} for {reference}: {detail}")]
    BadManifest {
        /// The image reference.
        reference: String,
        /// "manifest", "index", "config", ...
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// No manifest in an index matches the wanted platform.
    #[error("no manifest for platform {platform} in {reference}")]
    NoMatchingPlatform {
        /// The image reference.
        reference: String,
        /// The wanted platform.
        platform: String,
    },
    /// A layer that cannot be unpacked (hostile, truncated, not a tar, over caps).
    #[error("layer {layer}: {detail}")]
    Unpack {
        /// The layer digest (or a test name).
        layer: String,
        /// What was wrong, naming the tar entry where there is one.
        detail: String,
    },
    /// A pull that made no progress for the configured time.
    #[error("pull of {reference} made no progress for {seconds}s and was cancelled")]
    NoProgress {
        /// The image reference.
        reference: String,
        /// The configured timeout.
        seconds: u64,
    },
    /// A filesystem error, with the path it concerns.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// The metadata database failed.
    #[error("image metadata database: {0}")]
    Database(String),
    /// A mount or unmount failed.
    #[error("mount {target}: {detail}")]
    Mount {
        /// The mount point.
        target: String,
        /// What failed.
        detail: String,
    },
    /// The registry configuration is wrong.
    #[error("registry configuration {path}: {detail}")]
    Config {
        /// The file or field.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

impl ImageError {
    /// An `Io` error for `op` on `path`.
    pub fn io(op: &'static str, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.as_ref().display().to_string(),
            source: Arc::new(source),
        }
    }
}

macro_rules! db_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ImageError {
            fn from(e: $t) -> Self {
                ImageError::Database(e.to_string())
            }
        }
    )*};
}
db_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The store's result type.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
