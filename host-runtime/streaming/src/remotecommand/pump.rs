//! The transport-independent part of a remotecommand session: pipes between the client's
//! streams and the runtime's `ProcessIo`, and the ordered end (output tails, then status).

use std::future::Future;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};

use super::resize::ResizeDecoder;
use super::status::{text_status, v4_status, Outcome};
use crate::runtime::{ProcessIo, RuntimeError};

/// Size of each in-memory pipe between the runtime and the transport.
pub(crate) const PIPE_BYTES: usize = 64 * 1024;
/// Resize events queued for a runtime that is slow to apply them; more are dropped.
const RESIZE_QUEUE: usize = 16;

/// Bytes from the client on one channel.
#[async_trait]
pub(crate) trait Inbound: Send {
    /// The next chunk, `None` at the end.
    async fn read(&mut self) -> Option<Bytes>;
}

/// Bytes to the client on one channel.
#[async_trait]
pub(crate) trait Outbound: Send {
    /// Sends; an error means the client is gone or stalled.
    async fn write(&mut self, data: &[u8]) -> Result<(), ()>;
    /// Ends the channel (best effort).
    async fn close(&mut self);
}

/// The client's channels of one session.
#[derive(Default)]
pub(crate) struct Channels {
    pub stdin: Option<Box<dyn Inbound>>,
    pub stdout: Option<Box<dyn Outbound>>,
    pub stderr: Option<Box<dyn Outbound>>,
    pub resize: Option<Box<dyn Inbound>>,
    pub error: Option<Box<dyn Outbound>>,
}

async fn pump_in(mut from: Box<dyn Inbound>, mut to: DuplexStream) {
    while let Some(chunk) = from.read().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    // Dropping `to` gives the process EOF on stdin.
}

async fn pump_out(mut from: DuplexStream, mut to: Box<dyn Outbound>) -> Option<Box<dyn Outbound>> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return Some(to),
            Ok(n) => {
                if to.write(&buf[..n]).await.is_err() {
                    // Dropping `from` makes the runtime's writes fail: it is not blocked.
                    tracing::debug!("client stopped taking output; closing the process's pipe");
                    return None;
                }
            }
        }
    }
}

async fn pump_resize(mut from: Box<dyn Inbound>, to: mpsc::Sender<crate::runtime::TerminalSize>) {
    let mut decoder = ResizeDecoder::default();
    while let Some(chunk) = from.read().await {
        match decoder.push(&chunk) {
            Ok(sizes) => {
                for size in sizes {
                    if to.try_send(size).is_err() {
                        tracing::debug!(
                            ?size,
                            "dropping a terminal resize the runtime has not taken"
                        );
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "ignoring the rest of the resize stream");
                return;
            }
        }
    }
}

/// Runs the process with pipes to `channels`, then ends the session in the order clients
/// expect: all output flushed and stdout/stderr closed, then the status written to the
/// error channel and that closed.
pub(crate) async fn run_process<F, Fut>(
    channels: Channels,
    json_status: bool,
    disconnected: watch::Receiver<bool>,
    run: F,
) -> Outcome
where
    F: FnOnce(ProcessIo) -> Fut,
    Fut: Future<Output = Result<i32, RuntimeError>>,
{
    let Channels {
        stdin,
        stdout,
        stderr,
        resize,
        error,
    } = channels;
    let mut inputs = Vec::new();
    let stdin = stdin.map(|from| {
        let (process, ours) = tokio::io::duplex(PIPE_BYTES);
        inputs.push(tokio::spawn(pump_in(from, ours)));
        process
    });
    let resize = resize.map(|from| {
        let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
        inputs.push(tokio::spawn(pump_resize(from, tx)));
        rx
    });
    let mut outputs = Vec::new();
    let mut output = |to: Option<Box<dyn Outbound>>| {
        to.map(|to| {
            let (process, ours) = tokio::io::duplex(PIPE_BYTES);
            outputs.push(tokio::spawn(pump_out(ours, to)));
            process
        })
    };
    let stdout = output(stdout);
    let stderr = output(stderr);
    let io = ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        disconnected,
    };
    let outcome = match run(io).await {
        Ok(code) => Outcome::Exited(code),
        Err(error) => Outcome::Failed(error),
    };
    for input in inputs {
        input.abort();
    }
    // The runtime has dropped its ends: each pump ends after the tail of the output.
    for output in outputs {
        if let Ok(Some(mut to)) = output.await {
            to.close().await;
        }
    }
    if let Some(mut error) = error {
        let payload = if json_status {
            v4_status(&outcome)
        } else {
            text_status(&outcome)
        };
        if !payload.is_empty() {
            let _ = error.write(&payload).await;
        }
        error.close().await;
    }
    outcome
}
