//! PortForward: one forwarded connection is a `PortForward.Forward` call to
//! the pod's agent, which connects to the port in the pod's network
//! namespace and splices the connection to the call.

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use vessel_agent_api::proto::port_forward_client::PortForwardClient;
use vessel_agent_api::proto::port_forward_request::Message as ForwardMessage;
use vessel_agent_api::proto::{PortForwardRequest, PortForwardTarget};
use vessel_streaming::RuntimeError;

use super::runtime_error;
use crate::daemon::runtime::Runtime;
use crate::pod::AGENT_CALL_TIMEOUT;

/// Largest piece of the client's bytes sent per message.
const PIECE: usize = 32 * 1024;

/// Connects `stream` to `port` on the pod's loopback until the connection's
/// EOF (or the client goes away).
pub async fn port_forward(
    rt: &Runtime,
    pod_sandbox_id: &str,
    port: u16,
    stream: DuplexStream,
) -> Result<(), RuntimeError> {
    let pod = rt.ready_pod(pod_sandbox_id).await.map_err(runtime_error)?;
    let (from_client, mut to_client) = tokio::io::split(stream);
    let target = ForwardMessage::Target(PortForwardTarget {
        port: port.into(),
        address: String::new(),
    });
    // The first message connects; the later ones carry the client's bytes,
    // read only as the call can send them.
    let requests = futures_util::stream::unfold(
        (from_client, Some(target)),
        |(mut reader, first)| async move {
            if let Some(first) = first {
                let message = PortForwardRequest {
                    message: Some(first),
                };
                return Some((message, (reader, None)));
            }
            let mut buf = vec![0u8; PIECE];
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    let message = PortForwardRequest {
                        message: Some(ForwardMessage::Data(buf)),
                    };
                    Some((message, (reader, None)))
                }
                // The client shut its side: ending the call shuts the
                // connection's write side in the pod.
                _ => None,
            }
        },
    );
    let mut client = PortForwardClient::new(pod.channel.clone());
    let connected = tokio::time::timeout(AGENT_CALL_TIMEOUT, client.forward(requests))
        .await
        .map_err(|_| RuntimeError::new(format!("connecting to port {port} timed out")))?
        .map_err(|s| {
            RuntimeError::new(format!(
                "cannot connect to port {port} in pod {}: {}",
                pod.id,
                s.message()
            ))
        })?;
    let mut replies = connected.into_inner();
    tracing::debug!(pod = %pod.id, port, "port forward connected");
    loop {
        match replies.message().await {
            Ok(Some(reply)) => {
                if to_client.write_all(&reply.data).await.is_err() {
                    // The client went away: dropping the call closes the connection.
                    return Ok(());
                }
            }
            Ok(None) => break,
            Err(s) => {
                return Err(RuntimeError::new(format!(
                    "port {port} in pod {}: {}",
                    pod.id,
                    s.message()
                )))
            }
        }
    }
    let _ = to_client.shutdown().await;
    Ok(())
}
