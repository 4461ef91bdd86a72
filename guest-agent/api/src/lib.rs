//! The contract between vesseld and vessel-agent: the agent API (protos and
//! the code generated from them), the host-side client, the vsock ports and
//! the API version.
//!
//! A crate of its own so that a change to the wire is a compile error on both
//! sides, and so that vesseld links the client without the container engine.
#![warn(missing_docs)]

pub mod client;
pub mod proto;

/// Version of the agent API this build speaks, reported by `Agent.Version`
/// (2 added `Containers`, 3 `Sandbox` and `VersionResponse.root_fs_type`,
/// 4 container cgroups: `Resources`, `Stats`, `Events`, `Wait.oom_killed`;
/// `Processes` (exec), `Stdio` and `CreateContainerRequest.streams`;
/// `PortForward`, `CreateContainerRequest.run_as` and seccomp profiles).
pub const AGENT_API_VERSION: u32 = 4;

/// Oldest agent API version this host side can drive; an agent reporting an
/// older one is refused at connect.
pub const MIN_AGENT_API_VERSION: u32 = 4;

/// vsock port the agent listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// vsock port of the agent's throughput probe for benchmarks (only with
/// `vessel.diag=1` on the guest command line).
pub const DIAG_VSOCK_PORT: u32 = 1025;
