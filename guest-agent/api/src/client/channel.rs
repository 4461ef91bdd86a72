//! Turns "a way to open a byte stream" into a tonic `Channel`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

use super::error::ClientError;

/// Placeholder authority: the connector decides where bytes go, not the URI.
const AGENT_URI: &str = "http://vessel-agent";

/// Bound on the response headers the guest may send (hyper's default is 16 MiB);
/// the guest is untrusted, and the agent's headers are a few hundred bytes.
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// Builds a channel that first uses the already-connected `first` stream, then
/// calls `reconnect` each time tonic needs a new connection.
///
/// Connecting once up front gives callers a typed error; routing reconnections
/// through `reconnect` keeps per-connection setup (the vsock handshake) intact.
pub(crate) async fn channel_over<S, F, Fut>(first: S, reconnect: F) -> Result<Channel, ClientError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, ClientError>> + Send + 'static,
{
    let first = Arc::new(Mutex::new(Some(first)));
    let reconnect = Arc::new(reconnect);
    let connector = tower::service_fn(move |_: Uri| {
        let pending = first.lock().unwrap_or_else(PoisonError::into_inner).take();
        let reconnect = Arc::clone(&reconnect);
        async move {
            let stream = match pending {
                Some(stream) => stream,
                None => reconnect().await?,
            };
            Ok::<_, ClientError>(TokioIo::new(stream))
        }
    });
    Ok(Endpoint::from_static(AGENT_URI)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .connect_with_connector(connector)
        .await?)
}
