//! The container engine: OCI containers in their own namespaces, run by a
//! re-exec'd copy of the agent (the `init` stage) and supervised by the [`Reaper`].
//!
//! [`Reaper`]: crate::reaper::Reaper

mod engine;
mod error;
pub mod init;
pub(crate) mod pidfd;
mod pod;
pub mod seccomp;
mod spawn;
mod state;
mod sync;
pub mod users;
mod validate;

pub use engine::{ContainerSummary, Engine};
pub use error::EngineError;
pub use init::INIT_ARG;
pub use pod::PodNamespaces;
pub use state::{ContainerState, ExitInfo};
pub use validate::{validate_id, CreateSpec};
