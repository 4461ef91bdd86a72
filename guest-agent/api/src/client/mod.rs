//! Host-side client of the agent API: channels over hybrid vsock or Unix sockets,
//! and waiting for a booting agent to become ready.

mod channel;
mod error;
mod hybrid_vsock;
mod ready;
pub mod stdio;

use std::path::Path;

use tokio::net::UnixStream;
use tokio_vsock::{VsockAddr, VsockStream};

pub use error::{ClientError, HandshakeError};
pub use hybrid_vsock::{
    connect_hybrid_vsock, handshake, HybridVsock, DEFAULT_HANDSHAKE_TIMEOUT, MAX_REPLY_LEN,
};
pub use ready::{
    wait_ready, wait_ready_unix, wait_ready_with, READY_BACKOFF_MAX, READY_BACKOFF_MIN,
};
/// The channel type every connect function returns.
pub use tonic::transport::Channel;

/// Opens a gRPC channel to an agent listening on the Unix socket at `path`.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, ClientError> {
    let path = path.as_ref().to_path_buf();
    let first = connect_uds(&path).await?;
    channel::channel_over(first, move || {
        let path = path.clone();
        async move { connect_uds(&path).await }
    })
    .await
}

async fn connect_uds(path: &Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// Opens a gRPC channel to guest `port` on the AF_VSOCK context `cid` (a VMM
/// with vhost-vsock, such as QEMU, rather than hybrid vsock).
pub async fn connect_vsock(cid: u32, port: u32) -> Result<Channel, ClientError> {
    let first = connect_vsock_stream(cid, port).await?;
    channel::channel_over(first, move || connect_vsock_stream(cid, port)).await
}

async fn connect_vsock_stream(cid: u32, port: u32) -> Result<VsockStream, ClientError> {
    VsockStream::connect(VsockAddr::new(cid, port))
        .await
        .map_err(|source| ClientError::Vsock { cid, port, source })
}
