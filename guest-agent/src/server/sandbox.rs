//! `Sandbox` service: the gRPC face of the pod [`Sandbox`].

use tonic::{Request, Response, Status};

use crate::proto::sandbox_server::Sandbox as SandboxApi;
use crate::proto::{
    GetSandboxRequest, GetSandboxResponse, SetupSandboxRequest, SetupSandboxResponse,
};
use crate::sandbox::Sandbox;

/// Serves `Sandbox` from the agent's sandbox.
#[derive(Clone, Debug)]
pub struct SandboxService {
    sandbox: Sandbox,
}

impl SandboxService {
    /// Serves `sandbox`.
    pub fn new(sandbox: Sandbox) -> Self {
        Self { sandbox }
    }
}

#[tonic::async_trait]
impl SandboxApi for SandboxService {
    async fn setup(
        &self,
        request: Request<SetupSandboxRequest>,
    ) -> Result<Response<SetupSandboxResponse>, Status> {
        let req = request.get_ref();
        let info = self.sandbox.setup(req).await.inspect_err(|err| {
            tracing::warn!(sandbox_id = %req.sandbox_id, error = %err, "setup rejected");
        })?;
        Ok(Response::new(SetupSandboxResponse {
            sandbox: Some(info),
        }))
    }

    async fn get(
        &self,
        _: Request<GetSandboxRequest>,
    ) -> Result<Response<GetSandboxResponse>, Status> {
        let info = self.sandbox.get().await?;
        Ok(Response::new(GetSandboxResponse {
            sandbox: Some(info),
        }))
    }
}
