//! `PortForward` service: the gRPC face of [`crate::portforward`].

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::portforward::{
    connect, first_target, splice, target_addr, ForwardError, RESPONSE_BUFFER, TARGET_TIMEOUT,
};
use crate::proto::port_forward_server::PortForward;
use crate::proto::{PortForwardRequest, PortForwardResponse};

/// Serves `PortForward` in the agent's network namespace.
#[derive(Clone, Debug, Default)]
pub struct PortForwardService;

impl PortForwardService {
    /// A service that connects in the agent's own network namespace (the pod's).
    pub fn new() -> Self {
        Self
    }
}

#[tonic::async_trait]
impl PortForward for PortForwardService {
    type ForwardStream = ReceiverStream<Result<PortForwardResponse, Status>>;

    async fn forward(
        &self,
        request: Request<Streaming<PortForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(TARGET_TIMEOUT, inbound.message()).await {
            Ok(first) => first?,
            Err(_) => {
                return Err(ForwardError::InvalidArgument(format!(
                    "no `target` message within {TARGET_TIMEOUT:?}"
                ))
                .into())
            }
        };
        let addr = target_addr(&first_target(first)?)?;
        let stream = connect(addr).await.inspect_err(|err| {
            tracing::info!(%addr, error = %err, "port forward refused");
        })?;
        tracing::debug!(%addr, "port forward open");
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        tokio::spawn(splice(stream, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
