//! Polling a booting agent until `Health.Check` says SERVING.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;

use super::error::ClientError;
use super::hybrid_vsock::HybridVsock;
use crate::proto::check_response::ServingStatus;
use crate::proto::health_client::HealthClient;
use crate::proto::CheckRequest;

/// First pause between attempts; short because VM boot time is measured.
pub const READY_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// Longest pause between attempts.
pub const READY_BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Waits until the agent behind the VMM's hybrid vsock socket reports SERVING,
/// returning the channel that saw it; gives up at `deadline` (a `std` or Tokio
/// `Instant`) with [`ClientError::NotReady`].
pub async fn wait_ready(
    uds_path: impl AsRef<Path>,
    port: u32,
    deadline: impl Into<Instant>,
) -> Result<Channel, ClientError> {
    let vsock = HybridVsock::new(uds_path.as_ref(), port);
    let target = format!("vsock {} port {port}", vsock.uds_path().display());
    wait_ready_with(target, deadline, || vsock.connect()).await
}

/// Like [`wait_ready`], for an agent listening on a plain Unix socket.
pub async fn wait_ready_unix(
    path: impl AsRef<Path>,
    deadline: impl Into<Instant>,
) -> Result<Channel, ClientError> {
    let path = path.as_ref();
    let target = format!("unix {}", path.display());
    wait_ready_with(target, deadline, || super::connect_unix(path)).await
}

/// Retries `connect` + `Health.Check` with a short backoff until SERVING or `deadline`.
///
/// Each attempt is cut at the deadline, so this returns by then even if the peer hangs.
pub async fn wait_ready_with<F, Fut>(
    target: String,
    deadline: impl Into<Instant>,
    mut connect: F,
) -> Result<Channel, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Channel, ClientError>>,
{
    let deadline = deadline.into();
    let start = Instant::now();
    let mut backoff = READY_BACKOFF_MIN;
    let mut attempts = 0u32;
    let mut last = ClientError::Timeout;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, attempt(connect())).await {
            Ok(Ok(channel)) => {
                tracing::debug!(%target, attempts, waited = ?start.elapsed(), "agent ready");
                return Ok(channel);
            }
            Ok(Err(err)) => last = err,
            // The deadline cut this attempt short; `last` keeps the previous failure.
            Err(_) => {}
        }
        let next = (Instant::now() + backoff).min(deadline);
        tokio::time::sleep_until(next).await;
        if next >= deadline {
            return Err(ClientError::NotReady {
                target,
                attempts,
                waited: start.elapsed(),
                last: Box::new(last),
            });
        }
        backoff = (backoff * 2).min(READY_BACKOFF_MAX);
    }
}

async fn attempt<Fut>(connect: Fut) -> Result<Channel, ClientError>
where
    Fut: Future<Output = Result<Channel, ClientError>>,
{
    let channel = connect.await?;
    let reply = HealthClient::new(channel.clone())
        .check(CheckRequest {})
        .await?
        .into_inner();
    match reply.status() {
        ServingStatus::Serving => Ok(channel),
        other => Err(ClientError::NotServing(other)),
    }
}
