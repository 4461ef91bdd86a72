//! vessel-agent: PID 1 of a vessel pod VM, serving the agent API over vsock.
//!
//! The host (vesseld, the e2e tests) uses this same crate as a client: [`proto`]
//! holds the generated API and [`client`] connects to an agent through the VMM's
//! hybrid vsock socket or, for tests, a plain Unix socket.
#![warn(missing_docs)]

pub mod cgroup;
pub mod client;
pub mod container;
pub mod diag;
pub mod events;
pub mod init;
pub mod logging;
pub mod portforward;
pub mod proto;
pub mod reaper;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod stats;

/// Version of the agent API this build speaks, reported by `Agent.Version`
/// (2 added `Containers`, 3 `Sandbox` and `VersionResponse.root_fs_type`,
/// 4 container cgroups: `Resources`, `Stats`, `Events`, `Wait.oom_killed`;
/// `Processes` (exec), `Stdio` and `CreateContainerRequest.streams`;
/// `PortForward`, `CreateContainerRequest.run_as` and seccomp profiles).
pub const AGENT_API_VERSION: u32 = 4;

/// vsock port the agent listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Version of this vessel-agent build.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
