//! vessel-agent: PID 1 of a vessel pod VM, serving the agent API over vsock.
//!
//! The API it serves (protos, generated code, the host-side client, ports and
//! version) lives in the `vessel-agent-api` crate, which vesseld uses without
//! linking this one; [`proto`] and [`client`] are re-exported from it for the
//! agent's server code and its host-process tests.
#![warn(missing_docs)]

pub mod cgroup;
pub mod container;
pub mod diag;
pub mod events;
pub mod init;
pub mod logging;
pub mod portforward;
pub mod reaper;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod stats;

pub use vessel_agent_api::{client, proto, AGENT_API_VERSION, AGENT_VSOCK_PORT};

/// Version of this vessel-agent build.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
