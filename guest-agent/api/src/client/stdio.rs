//! Host-side helpers for the `Stdio` service: read a process's output to its
//! end, feed its stdin. They work over any channel (Unix socket or vsock).

use tonic::transport::Channel;
use tonic::Status;

use crate::proto::stdio_client::StdioClient;
use crate::proto::{InputChunk, OutputRequest, StdioStream};

/// Largest stdin message [`write_stdin`] sends (the agent takes up to 1 MiB).
pub const INPUT_CHUNK: usize = 256 * 1024;

/// Streams one output of a process (`exec_id` empty: the container's) to its
/// EOF, handing every chunk to `sink`; returns the number of bytes.
pub async fn read_output(
    channel: Channel,
    container_id: &str,
    exec_id: &str,
    stream: StdioStream,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64, Status> {
    let request = OutputRequest {
        container_id: container_id.to_owned(),
        exec_id: exec_id.to_owned(),
        stream: stream.into(),
    };
    let mut chunks = StdioClient::new(channel)
        .output(request)
        .await?
        .into_inner();
    let mut total = 0u64;
    while let Some(chunk) = chunks.message().await? {
        total += chunk.data.len() as u64;
        sink(&chunk.data);
    }
    Ok(total)
}

/// Reads one output to its EOF into memory; more than `limit` bytes is an error
/// (the process is the guest's, so its output is untrusted).
pub async fn collect_output(
    channel: Channel,
    container_id: &str,
    exec_id: &str,
    stream: StdioStream,
    limit: usize,
) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let mut over = false;
    read_output(channel, container_id, exec_id, stream, |data| {
        if out.len() + data.len() > limit {
            over = true;
        } else {
            out.extend_from_slice(data);
        }
    })
    .await?;
    if over {
        return Err(Status::out_of_range(format!(
            "output is longer than {limit} bytes"
        )));
    }
    Ok(out)
}

/// Writes `data` to a process's stdin and, if `close`, closes it; returns the bytes written.
pub async fn write_stdin(
    channel: Channel,
    container_id: &str,
    exec_id: &str,
    data: &[u8],
    close: bool,
) -> Result<u64, Status> {
    let mut messages: Vec<InputChunk> = data
        .chunks(INPUT_CHUNK)
        .map(|piece| InputChunk {
            data: piece.to_vec(),
            ..Default::default()
        })
        .collect();
    if messages.is_empty() {
        messages.push(InputChunk::default());
    }
    if let Some(first) = messages.first_mut() {
        first.container_id = container_id.to_owned();
        first.exec_id = exec_id.to_owned();
        first.keep_open = !close;
    }
    if let Some(last) = messages.last_mut() {
        last.close = close;
    }
    let reply = StdioClient::new(channel)
        .input(futures_util::stream::iter(messages))
        .await?;
    Ok(reply.into_inner().written)
}
