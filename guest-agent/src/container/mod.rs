//! The container engine: OCI containers in their own namespaces, run by a
//! re-exec'd copy of the agent (the `init` stage) and supervised by the [`Reaper`].
//!
//! [`Reaper`]: crate::reaper::Reaper

mod engine;
mod error;
mod exec;
pub mod init;
mod oom_score;
pub(crate) mod pidfd;
mod pod;
pub mod seccomp;
mod spawn;
mod state;
pub mod stdio;
mod sync;
pub mod users;
mod validate;

pub use engine::{ContainerSummary, Engine};
pub use error::EngineError;
pub use exec::{ExecSpec, MAX_EXECS};
pub use init::INIT_ARG;
pub use oom_score::protect_agent;
pub use pod::PodNamespaces;
pub use state::{unix_nanos, ContainerState, ExitInfo};
pub use validate::{validate_id, CreateSpec};
