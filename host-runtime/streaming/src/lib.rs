//! The Kubernetes streaming server: exec, attach and port-forward over SPDY/3.1 and
//! WebSocket, for whatever implements [`StreamingRuntime`]. It knows nothing of vessel.

#![warn(missing_docs)]

pub mod client;
mod idle;
pub mod portforward;
pub mod remotecommand;
pub mod runtime;
pub mod spdy;
pub mod token;

pub use runtime::{
    AttachRequest, ExecRequest, PortForwardRequest, ProcessIo, RuntimeError, StreamingRuntime,
    TerminalSize,
};
pub mod server;
pub mod tls;
pub mod websocket;

pub use server::{ServerConfig, ServerError, StreamingServer, TlsFiles};
