//! The throughput probe: a byte sink and source on vsock and TCP port
//! [`DIAG_PORT`], so benchmarks can measure the VMM's vsock and net devices
//! without the gRPC layer in the way.
//!
//! Off unless the guest kernel command line has `vessel.diag=1`: a pod must
//! not expose an unauthenticated port. Protocol, one request per connection:
//! the client sends one op byte and a little-endian u64 byte count.
//! - `W`: the client writes that many bytes; the agent discards them and then
//!   answers with the u64 count it received.
//! - `R`: the agent writes that many bytes (zeros) and closes.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_vsock::{VsockAddr, VsockListener, VMADDR_CID_ANY};

/// vsock and TCP port of the probe (the API crate's, so hosts agree on it).
pub const DIAG_PORT: u32 = vessel_agent_api::DIAG_VSOCK_PORT;
/// The kernel command line word that turns the probe on.
pub const DIAG_CMDLINE_FLAG: &str = "vessel.diag=1";
/// The largest transfer one request may ask for (16 GiB).
const MAX_BYTES: u64 = 16 << 30;
/// Size of each read and write: the 64 KiB the benchmarks are specified with.
const CHUNK: usize = 64 << 10;

/// Whether the kernel command line asks for the probe.
pub fn enabled() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .is_ok_and(|line| line.split_whitespace().any(|w| w == DIAG_CMDLINE_FLAG))
}

/// Starts the vsock and TCP listeners; errors are logged, never fatal.
pub fn spawn() {
    tokio::spawn(async {
        match VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, DIAG_PORT)) {
            Ok(listener) => loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_logged(stream));
                    }
                    Err(error) => tracing::warn!(%error, "diag: vsock accept failed"),
                }
            },
            Err(error) => tracing::warn!(%error, "diag: cannot listen on vsock"),
        }
    });
    tokio::spawn(async {
        match TcpListener::bind(("0.0.0.0", DIAG_PORT as u16)).await {
            Ok(listener) => loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        // Small writes of the answer must not wait for Nagle.
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_logged(stream));
                    }
                    Err(error) => tracing::warn!(%error, "diag: tcp accept failed"),
                }
            },
            Err(error) => tracing::warn!(%error, "diag: cannot listen on tcp"),
        }
    });
    tracing::info!(port = DIAG_PORT, "diag: throughput probe listening");
}

async fn serve_logged<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    if let Err(error) = serve(stream).await {
        tracing::debug!(%error, "diag: request failed");
    }
}

/// Serves one request on `stream`.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<()> {
    let op = stream.read_u8().await?;
    let count = stream.read_u64_le().await?;
    if count > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("diag: {count} bytes is more than the {MAX_BYTES} allowed"),
        ));
    }
    let mut buf = vec![0u8; CHUNK];
    match op {
        b'W' => {
            let mut seen = 0u64;
            while seen < count {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
            }
            stream.write_u64_le(seen).await?;
        }
        b'R' => {
            let mut left = count;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                stream.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("diag: unknown op {other:#x}"),
            ))
        }
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sink_counts_what_it_gets() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server));
        client.write_u8(b'W').await.unwrap();
        client.write_u64_le(200_000).await.unwrap();
        client.write_all(&vec![7u8; 200_000]).await.unwrap();
        assert_eq!(client.read_u64_le().await.unwrap(), 200_000);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn source_writes_exactly_the_count() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server));
        client.write_u8(b'R').await.unwrap();
        client.write_u64_le(150_001).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 150_001);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(serve(server));
        client.write_u8(b'R').await.unwrap();
        client.write_u64_le(MAX_BYTES + 1).await.unwrap();
        assert!(task.await.unwrap().is_err());
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(serve(server));
        client.write_u8(b'X').await.unwrap();
        client.write_u64_le(1).await.unwrap();
        assert!(task.await.unwrap().is_err());
    }
}
