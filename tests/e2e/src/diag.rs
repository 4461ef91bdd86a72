//! The host side of the agent's throughput probe (vessel-agent's `diag` module).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each write, as the benchmark is specified (64 KiB).
pub const CHUNK: usize = 64 << 10;

/// Sends `bytes` to the guest and waits for its count; returns the time taken.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(stream: S, bytes: u64) -> Duration {
    try_send(stream, bytes)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`send`], or how the transfer broke.
pub async fn try_send<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: u64,
) -> Result<Duration, String> {
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    let request = |e: std::io::Error| format!("diag request: {e}");
    stream.write_u8(b'W').await.map_err(request)?;
    stream.write_u64_le(bytes).await.map_err(request)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| format!("diag write after {} of {bytes} bytes: {e}", bytes - left))?;
        left -= n as u64;
    }
    let got = stream
        .read_u64_le()
        .await
        .map_err(|e| format!("diag count: {e}"))?;
    if got != bytes {
        return Err(format!("the guest received {got} bytes, not {bytes}"));
    }
    Ok(start.elapsed())
}

/// Asks the guest for `bytes` and reads them all; returns the time taken.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(stream: S, bytes: u64) -> Duration {
    try_receive(stream, bytes)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`receive`], or how the transfer broke.
pub async fn try_receive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: u64,
) -> Result<Duration, String> {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    let request = |e: std::io::Error| format!("diag request: {e}");
    stream.write_u8(b'R').await.map_err(request)?;
    stream.write_u64_le(bytes).await.map_err(request)?;
    let mut seen = 0u64;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("diag read after {seen} of {bytes} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        seen += n as u64;
    }
    if seen != bytes {
        return Err(format!("the stream ended after {seen} of {bytes} bytes"));
    }
    Ok(start.elapsed())
}

/// MB/s (10^6 bytes per second) for `bytes` in `took`.
pub fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}
