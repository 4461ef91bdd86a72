//! portforward (`portforward.k8s.io`) as client-go's SPDY port forwarder runs
//! it: one connection per URL, and per forwarded connection an error stream
//! and a data stream with the same `port` and `requestID` headers.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::SpdyConnection;
use super::upgrade::upgrade;
use super::ClientError;
use crate::portforward::spdy::PROTOCOL;

/// Largest error message read from a forward's error stream.
const MAX_ERROR: usize = 64 * 1024;

/// A port-forward session to one pod.
pub struct PortForwarder {
    conn: SpdyConnection,
    next_request: AtomicU64,
}

impl PortForwarder {
    /// Opens the session registered at `url` (from CRI `PortForward`).
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let upgraded = upgrade(url, &[PROTOCOL]).await?;
        if upgraded.protocol.as_deref() != Some(PROTOCOL) {
            return Err(ClientError::Protocol(format!(
                "the server chose {:?}, not {PROTOCOL}",
                upgraded.protocol
            )));
        }
        Ok(Self {
            conn: SpdyConnection::new(upgraded.tcp)?,
            next_request: AtomicU64::new(0),
        })
    }

    /// Waits until the server ends the session.
    pub async fn closed(&self) {
        self.conn.closed().await
    }

    /// Forwards one connection: `io` is spliced to `port` in the pod until
    /// both sides are done. Several may run at once on one session.
    pub async fn forward<T>(&self, port: u16, io: T) -> Result<(), ClientError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let request = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let port = port.to_string();
        let (_, mut error) = self
            .conn
            .open(&[
                ("streamType", "error"),
                ("port", &port),
                ("requestID", &request),
            ])
            .await?;
        let (writer, mut reader) = self
            .conn
            .open(&[
                ("streamType", "data"),
                ("port", &port),
                ("requestID", &request),
            ])
            .await?;
        let (from, to) = tokio::io::split(io);
        let upload = writer.copy_from(from);
        let download = async {
            let mut to = to;
            let copied = reader.copy_to(&mut to).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
            copied
        };
        // As client-go: done when the pod's side is (the local side may
        // still be open); a failed upload ends the forward at once.
        let mut upload = std::pin::pin!(upload);
        let mut remote =
            std::pin::pin!(async { tokio::join!(download, error.read_to_end(MAX_ERROR)) });
        let mut uploading = true;
        let (down, failure) = loop {
            tokio::select! {
                up = &mut upload, if uploading => {
                    uploading = false;
                    up?;
                }
                done = &mut remote => break done,
            }
        };
        let failure = failure?;
        if !failure.is_empty() {
            return Err(ClientError::Failure(
                String::from_utf8_lossy(&failure).into_owned(),
            ));
        }
        down?;
        Ok(())
    }
}
