//! Hybrid vsock (Firecracker-style): the VMM exposes the guest's vsock as a Unix
//! socket; a host client connects, writes `CONNECT <port>\n` and reads `OK <hostport>\n`,
//! after which the stream is a plain byte pipe to the guest port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::transport::Channel;

use super::error::{ClientError, HandshakeError};

/// Longest reply line accepted from the VMM, newline included; `OK 4294967295\n` is 14.
pub const MAX_REPLY_LEN: usize = 32;

/// Default bound on one handshake (the write and the reply line).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Performs the handshake on a connected stream and returns the host-side port from `OK <port>`.
///
/// Reads the reply a byte at a time so nothing after the newline is consumed:
/// those bytes already belong to the guest's stream (an HTTP/2 server speaks first).
pub async fn handshake<S>(
    stream: &mut S,
    port: u32,
    timeout: Duration,
) -> Result<u32, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut received = Vec::with_capacity(MAX_REPLY_LEN);
    match tokio::time::timeout(timeout, exchange(stream, port, &mut received)).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout {
            timeout,
            received: lossy(&received),
        }),
    }
}

async fn exchange<S>(
    stream: &mut S,
    port: u32,
    received: &mut Vec<u8>,
) -> Result<u32, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    stream.flush().await?;
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(HandshakeError::Closed {
                received: lossy(received),
            });
        }
        if byte[0] == b'\n' {
            return parse_reply(received);
        }
        received.push(byte[0]);
        if received.len() >= MAX_REPLY_LEN {
            return Err(HandshakeError::TooLong {
                limit: MAX_REPLY_LEN,
                received: lossy(received),
            });
        }
    }
}

/// Parses `OK <port>` (newline already stripped); only ASCII digits are accepted.
fn parse_reply(line: &[u8]) -> Result<u32, HandshakeError> {
    line.strip_prefix(b"OK ")
        .filter(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| HandshakeError::Unexpected { line: lossy(line) })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How to reach a guest vsock port through a VMM's hybrid vsock Unix socket.
#[derive(Clone, Debug)]
pub struct HybridVsock {
    uds_path: PathBuf,
    port: u32,
    handshake_timeout: Duration,
}

impl HybridVsock {
    /// Targets guest `port` behind the VMM socket at `uds_path`.
    pub fn new(uds_path: impl Into<PathBuf>, port: u32) -> Self {
        Self {
            uds_path: uds_path.into(),
            port,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Replaces the bound on each handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The VMM's socket path.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The guest port.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Connects and handshakes, returning the stream to the guest port.
    pub async fn connect_stream(&self) -> Result<UnixStream, ClientError> {
        let mut stream = UnixStream::connect(&self.uds_path)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.uds_path.clone(),
                source,
            })?;
        let host_port = handshake(&mut stream, self.port, self.handshake_timeout)
            .await
            .map_err(|source| ClientError::Handshake {
                path: self.uds_path.clone(),
                port: self.port,
                source,
            })?;
        tracing::trace!(path = %self.uds_path.display(), port = self.port, host_port, "hybrid vsock connected");
        Ok(stream)
    }

    /// Opens a gRPC channel whose every (re)connection performs the handshake.
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let first = self.connect_stream().await?;
        let this = self.clone();
        super::channel::channel_over(first, move || {
            let this = this.clone();
            async move { this.connect_stream().await }
        })
        .await
    }
}

/// Opens a gRPC channel to guest `port` through the VMM socket at `uds_path`.
pub async fn connect_hybrid_vsock(
    uds_path: impl AsRef<Path>,
    port: u32,
) -> Result<Channel, ClientError> {
    HybridVsock::new(uds_path.as_ref(), port).connect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_ok_and_a_u32() {
        assert_eq!(parse_reply(b"OK 0").ok(), Some(0));
        assert_eq!(parse_reply(b"OK 4294967295").ok(), Some(u32::MAX));
        for bad in [
            &b"OK 4294967296"[..],
            b"OK +1",
            b"OK",
            b"OK  1",
            b"KO 1",
            b"OK 1\r",
            b"\xffOK 1",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(HandshakeError::Unexpected { .. })),
                "{bad:?}"
            );
        }
    }
}
