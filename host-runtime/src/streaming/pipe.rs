//! Moving bytes between a session's in-memory pipes and a process's stdio
//! in the agent (`Stdio.Output`, `Stdio.Input`, `Stdio.Resize`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::stdio_client::StdioClient;
use vessel_agent_api::proto::{
    InputChunk, OutputRequest, ResizeRequest, StdioStream, TerminalSize as AgentSize,
};
use vessel_streaming::TerminalSize;

use crate::pod::{agent_call, AGENT_CALL_TIMEOUT};

/// Largest stdin piece sent to the agent per message (it takes up to 1 MiB).
const INPUT_PIECE: usize = 64 * 1024;

/// Which process: the container's own (`exec_id` empty) or an exec.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's agent.
    pub channel: Channel,
    /// The container.
    pub container_id: String,
    /// The exec, or empty for the container's process.
    pub exec_id: String,
}

/// Copies one output of the process to `to` until its EOF (or discards it
/// when the client did not ask for it, so the process never blocks on an
/// unread pipe). Stops early when `to` breaks (the client went away).
pub async fn pump_output(target: Target, stream: StdioStream, mut to: Option<DuplexStream>) {
    let request = OutputRequest {
        container_id: target.container_id.clone(),
        exec_id: target.exec_id.clone(),
        stream: stream.into(),
    };
    let mut chunks = match StdioClient::new(target.channel).output(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            tracing::debug!(container = %target.container_id, exec = %target.exec_id, error = %status.message(), "cannot read an output");
            return;
        }
    };
    // Each message is bounded by the channel's decoding limit (4 MiB).
    loop {
        match chunks.message().await {
            Ok(Some(chunk)) => {
                if let Some(out) = to.as_mut() {
                    if out.write_all(&chunk.data).await.is_err() {
                        tracing::debug!(container = %target.container_id, exec = %target.exec_id, "the client stopped taking output");
                        return;
                    }
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(container = %target.container_id, exec = %target.exec_id, error = %status.message(), "output stream broke");
                break;
            }
        }
    }
    if let Some(mut out) = to {
        let _ = out.shutdown().await;
    }
}

/// What to do with the process's stdin when the client's ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEof {
    /// Close it (the process reads EOF).
    Close,
    /// Leave it open for a later attach (a container without `stdin_once`).
    KeepOpen,
}

/// Feeds the client's stdin to the process until the client closes it.
pub async fn feed_stdin(target: Target, from: DuplexStream, at_eof: AtEof) {
    struct Feed {
        from: DuplexStream,
        first: Option<InputChunk>,
        done: bool,
    }
    let (container_id, exec_id) = (target.container_id.clone(), target.exec_id.clone());
    let feed = Feed {
        from,
        first: Some(InputChunk {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
            keep_open: at_eof == AtEof::KeepOpen,
            ..InputChunk::default()
        }),
        done: false,
    };
    // One message per read: the call pulls the next only as HTTP/2 flow
    // control lets it send, so nothing piles up here.
    let messages = futures_util::stream::unfold(feed, move |mut feed| async move {
        if feed.done {
            return None;
        }
        let mut message = feed.first.take().unwrap_or_default();
        let mut buf = vec![0u8; INPUT_PIECE];
        match feed.from.read(&mut buf).await {
            Ok(n) if n > 0 => {
                buf.truncate(n);
                message.data = buf;
            }
            // EOF, or the client's pipe broke: the last message.
            _ => {
                message.close = at_eof == AtEof::Close;
                feed.done = true;
            }
        }
        Some((message, feed))
    });
    if let Err(status) = StdioClient::new(target.channel).input(messages).await {
        tracing::debug!(container = %container_id, exec = %exec_id, error = %status.message(), "stdin call ended");
    }
}

/// Applies each terminal size the client sends.
pub async fn forward_resizes(target: Target, mut sizes: mpsc::Receiver<TerminalSize>) {
    while let Some(size) = sizes.recv().await {
        let resized = agent_call(
            "Stdio.Resize",
            AGENT_CALL_TIMEOUT,
            StdioClient::new(target.channel.clone()).resize(ResizeRequest {
                container_id: target.container_id.clone(),
                exec_id: target.exec_id.clone(),
                size: Some(AgentSize {
                    rows: size.height.into(),
                    cols: size.width.into(),
                }),
            }),
        )
        .await;
        if let Err(e) = resized {
            tracing::debug!(container = %target.container_id, exec = %target.exec_id, error = %e, "resize failed");
        }
    }
}

/// Waits for `tasks` to end, at most `limit`; aborts those still running.
pub async fn join_within(tasks: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
}
