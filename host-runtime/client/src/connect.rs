//! Connecting to a CRI runtime over its Unix socket.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use vessel_image_api::v1::image_archive_client::ImageArchiveClient;

use crate::error::ClientError;

/// The default endpoint of vesseld.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/vessel/vessel.sock";

/// How long `connect` waits for the socket by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest reply the client accepts: ExecSync may carry 16 MiB of stdout
/// plus 16 MiB of stderr (the kubelet's per-stream cap), with room for framing.
pub const MAX_DECODE_MESSAGE_SIZE: usize = 40 * 1024 * 1024;

/// Placeholder authority: the connector decides where bytes go, not the URI.
const PLACEHOLDER_URI: &str = "http://vessel.sock";

/// The two CRI services of one runtime, over one connection.
#[derive(Clone, Debug)]
pub struct Cri {
    /// The CRI RuntimeService (pods, containers, exec, stats, status).
    pub runtime: RuntimeServiceClient<Channel>,
    /// The CRI ImageService (pull, list, status, remove).
    pub image: ImageServiceClient<Channel>,
    /// vesseld's own image archive service (import, export).
    pub archive: ImageArchiveClient<Channel>,
}

/// Turns `unix:///path` or a bare `/path` into the socket path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ClientError> {
    let bad = |reason| ClientError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if endpoint.starts_with('/') {
        endpoint
    } else if endpoint.contains("://") {
        return Err(bad("only unix:// endpoints are supported"));
    } else {
        return Err(bad("expected unix:///path or an absolute /path"));
    };
    if !path.starts_with('/') {
        return Err(bad("the socket path must be absolute (unix:///path)"));
    }
    Ok(PathBuf::from(path))
}

/// Connects to the runtime at `endpoint`, waiting at most [`DEFAULT_CONNECT_TIMEOUT`].
pub async fn connect(endpoint: &str) -> Result<Cri, ClientError> {
    connect_with_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT).await
}

/// Connects to the runtime at `endpoint`, waiting at most `timeout` for the socket.
pub async fn connect_with_timeout(endpoint: &str, timeout: Duration) -> Result<Cri, ClientError> {
    let path = socket_path(endpoint)?;
    // tonic reconnects through the same connector if the connection drops.
    let connector = tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    });
    let endpoint_config = Endpoint::from_static(PLACEHOLDER_URI).connect_timeout(timeout);
    let channel = endpoint_config.connect_with_connector(connector);
    let channel = match tokio::time::timeout(timeout, channel).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(error)) => {
            return Err(ClientError::Connect {
                endpoint: endpoint.to_string(),
                reason: innermost(&error),
            })
        }
        Err(_) => {
            return Err(ClientError::Timeout {
                call: "connect",
                after: timeout,
            })
        }
    };
    Ok(Cri {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_DECODE_MESSAGE_SIZE),
        image: ImageServiceClient::new(channel.clone())
            .max_decoding_message_size(MAX_DECODE_MESSAGE_SIZE),
        archive: ImageArchiveClient::new(channel),
    })
}

/// The message of the deepest error in a chain.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Runs one RPC with an optional deadline, turning a gRPC status into [`ClientError::Rpc`].
///
/// The deadline is enforced here (not only sent as `grpc-timeout`) so that a
/// stuck server cannot hang the client.
pub async fn call<T, F>(
    name: &'static str,
    deadline: Option<Duration>,
    rpc: F,
) -> Result<T, ClientError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let reply = match deadline {
        Some(after) => tokio::time::timeout(after, rpc)
            .await
            .map_err(|_| ClientError::Timeout { call: name, after })?,
        None => rpc.await,
    };
    Ok(reply?.into_inner())
}

/// Builds a request that also tells the server its deadline.
pub fn request<T>(message: T, deadline: Option<Duration>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(after) = deadline {
        request.set_timeout(after);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            socket_path("unix:///run/vessel/vessel.sock").unwrap(),
            PathBuf::from("/run/vessel/vessel.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        for bad in [
            "tcp://127.0.0.1:1",
            "unix://relative.sock",
            "relative.sock",
            "",
        ] {
            let err = socket_path(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
