//! vesseld's side of the streaming server (`vessel-streaming`): CRI Exec,
//! Attach and PortForward sessions carried out through the pod's agent
//! (`Processes`, `Stdio`, `PortForward`), and the server's start from the
//! `[streaming]` config section.

mod attach;
mod exec;
mod pipe;
mod port_forward;
mod start;
mod stdin_mux;

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use tokio::io::DuplexStream;
use vessel_streaming::{AttachRequest, ExecRequest, ProcessIo, RuntimeError, StreamingRuntime};

use crate::daemon::runtime::Runtime;

pub use start::{server_config, start};

/// The streaming server's view of vesseld. It holds the runtime weakly: the
/// runtime owns the server, which owns this.
pub struct VesselStreaming {
    rt: Weak<Runtime>,
    stdins: stdin_mux::StdinMuxes,
}

impl VesselStreaming {
    /// Streams for `rt`.
    pub fn new(rt: &Arc<Runtime>) -> Self {
        Self {
            rt: Arc::downgrade(rt),
            stdins: stdin_mux::StdinMuxes::default(),
        }
    }

    fn runtime(&self) -> Result<Arc<Runtime>, RuntimeError> {
        self.rt
            .upgrade()
            .ok_or_else(|| RuntimeError::new("vesseld is shutting down"))
    }
}

/// Returns once the client's connection has ended.
async fn client_gone(mut disconnected: tokio::sync::watch::Receiver<bool>) {
    // A dropped sender means the session ended too.
    let _ = disconnected.wait_for(|gone| *gone).await.map(|_| ());
}

/// A CRI-style status as the client sees it.
fn runtime_error(status: tonic::Status) -> RuntimeError {
    RuntimeError::new(status.message().to_string())
}

#[async_trait]
impl StreamingRuntime for VesselStreaming {
    async fn exec(&self, req: ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
        let rt = self.runtime()?;
        exec::exec(&rt, req, io).await
    }

    async fn attach(&self, req: AttachRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
        let rt = self.runtime()?;
        attach::attach(&rt, &self.stdins, req, io).await
    }

    async fn port_forward(
        &self,
        pod_sandbox_id: &str,
        port: u16,
        stream: DuplexStream,
    ) -> Result<(), RuntimeError> {
        let rt = self.runtime()?;
        port_forward::port_forward(&rt, pod_sandbox_id, port, stream).await
    }
}
