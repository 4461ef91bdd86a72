//! Kubernetes portforward over SPDY and WebSocket.

pub mod spdy;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::remotecommand::pump::{Inbound, Outbound, PIPE_BYTES};
use crate::runtime::StreamingRuntime;

/// Whether a request may use `port` (an empty list allows any, as CRI says).
pub(crate) fn port_allowed(allowed: &[u16], port: u16) -> bool {
    allowed.is_empty() || allowed.contains(&port)
}

/// Forwards one connection: the client's data channel to `port` in the pod, and any
/// failure as text on the error channel. Ends when the runtime's side is done and the
/// reply has been sent; the data channel is closed before the error channel.
pub(crate) async fn forward(
    runtime: Arc<dyn StreamingRuntime>,
    pod_sandbox_id: String,
    port: u16,
    mut from_client: Box<dyn Inbound>,
    mut to_client: Box<dyn Outbound>,
    mut error: Box<dyn Outbound>,
) {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.read().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        to_client.close().await;
    };
    let forwarded = async {
        let result = runtime.port_forward(&pod_sandbox_id, port, theirs).await;
        if let Err(e) = &result {
            tracing::info!(pod_sandbox_id, port, error = %e, "port forward failed");
        }
        result
    };
    let (result, ()) = tokio::join!(forwarded, downstream);
    upstream.abort();
    if let Err(e) = result {
        let message = format!("error forwarding port {port} to pod {pod_sandbox_id}: {e}");
        let _ = error.write(message.as_bytes()).await;
    }
    error.close().await;
}
