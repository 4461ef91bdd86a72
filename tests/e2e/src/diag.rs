//! The host side of the agent's throughput probe (vessel-agent's `diag` module).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each write, as the benchmark is specified (64 KiB).
pub const CHUNK: usize = 64 << 10;

/// Sends `bytes` to the guest and waits for its count; returns the time taken.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: u64) -> Duration {
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    stream.write_u8(b'W').await.expect("diag request");
    stream.write_u64_le(bytes).await.expect("diag request");
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        stream.write_all(&buf[..n]).await.expect("diag write");
        left -= n as u64;
    }
    let got = stream.read_u64_le().await.expect("diag count");
    assert_eq!(got, bytes, "the guest received a different byte count");
    start.elapsed()
}

/// Asks the guest for `bytes` and reads them all; returns the time taken.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: u64) -> Duration {
    let mut buf = vec![0u8; CHUNK];
    let start = Instant::now();
    stream.write_u8(b'R').await.expect("diag request");
    stream.write_u64_le(bytes).await.expect("diag request");
    let mut seen = 0u64;
    loop {
        let n = stream.read(&mut buf).await.expect("diag read");
        if n == 0 {
            break;
        }
        seen += n as u64;
    }
    assert_eq!(seen, bytes, "the guest sent a different byte count");
    start.elapsed()
}

/// MB/s (10^6 bytes per second) for `bytes` in `took`.
pub fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}
