//! The contract between the streaming server and a container runtime.

use async_trait::async_trait;
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, watch};

/// A command to run in a container (CRI `ExecRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The container.
    pub container_id: String,
    /// argv.
    pub cmd: Vec<String>,
    /// Run on a terminal (stderr is then merged into stdout).
    pub tty: bool,
    /// Stream stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr (not with `tty`).
    pub stderr: bool,
}

/// An attach to a running container's stdio (CRI `AttachRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container.
    pub container_id: String,
    /// The container runs on a terminal.
    pub tty: bool,
    /// Stream stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr (not with `tty`).
    pub stderr: bool,
}

/// Port forwarding into a pod (CRI `PortForwardRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    /// The pod sandbox.
    pub pod_sandbox_id: String,
    /// Ports the client may use; empty allows any (as CRI says).
    pub ports: Vec<u16>,
}

/// A terminal size from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The process side of a session's streams.
///
/// Each present stream is one end of an in-memory pipe (64 KiB) whose other end the server
/// pumps to the client. stdin reads EOF when the client closes it; stdout and stderr
/// writes fail (broken pipe) when the client is gone or stopped reading, so a process is
/// never blocked forever by a client.
#[derive(Debug)]
pub struct ProcessIo {
    /// The client's stdin, if requested.
    pub stdin: Option<DuplexStream>,
    /// Where the process's stdout goes, if requested.
    pub stdout: Option<DuplexStream>,
    /// Where the process's stderr goes, if requested (never with a tty).
    pub stderr: Option<DuplexStream>,
    /// Terminal sizes, the first one as soon as the client sends it (tty only).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Becomes `true` when the client's connection ends (e.g. to end an attach whose
    /// client detached while the container is silent).
    pub disconnected: watch::Receiver<bool>,
}

/// A runtime's failure, reported to the client as a `Failure` status.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RuntimeError(pub String);

impl RuntimeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What the streaming server needs from a container runtime.
#[async_trait]
pub trait StreamingRuntime: Send + Sync + 'static {
    /// Runs `req.cmd` in the container with `io`; returns its exit code.
    async fn exec(&self, req: ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError>;
    /// Attaches `io` to the container's stdio until the container exits (its exit code)
    /// or the client goes away.
    async fn attach(&self, req: AttachRequest, io: ProcessIo) -> Result<i32, RuntimeError>;
    /// Connects `stream` to `port` inside the pod's network namespace until either side
    /// closes.
    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: DuplexStream,
    ) -> Result<(), RuntimeError>;
}
