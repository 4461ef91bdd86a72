//! Kubernetes remotecommand (exec and attach) over SPDY and WebSocket.

pub mod protocol;
pub mod resize;
pub mod spdy;
pub mod status;

pub(crate) mod pump;

pub use protocol::Protocol;
