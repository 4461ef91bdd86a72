//! `Containers` service: the gRPC face of the container [`Engine`].

use tonic::{Request, Response, Status};

use crate::container::{ContainerState, CreateSpec, Engine, ExitInfo};
use crate::proto::containers_server::Containers;
use crate::proto::{
    ContainerInfo, ContainerStatus, CreateContainerRequest, CreateContainerResponse,
    DeleteContainerRequest, DeleteContainerResponse, ListContainersRequest, ListContainersResponse,
    SignalContainerRequest, SignalContainerResponse, StartContainerRequest, StartContainerResponse,
    WaitContainerRequest, WaitContainerResponse,
};

/// Serves `Containers` from an engine.
#[derive(Clone, Debug)]
pub struct ContainersService {
    engine: Engine,
}

impl ContainersService {
    /// Serves the containers of `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

/// How an exit is reported (`Wait`, `List`, the `Events` stream).
pub(crate) fn wait_response(exit: ExitInfo) -> WaitContainerResponse {
    WaitContainerResponse {
        exit_code: exit.exit_code,
        signal: u32::try_from(exit.signal).unwrap_or(0),
        started_at: exit.started_at,
        finished_at: exit.finished_at,
        oom_killed: exit.oom_killed,
    }
}

fn status(state: ContainerState) -> ContainerStatus {
    match state {
        ContainerState::Created => ContainerStatus::Created,
        ContainerState::Running => ContainerStatus::Running,
        ContainerState::Stopped => ContainerStatus::Stopped,
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn create(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let create = CreateSpec::from_request(request.get_ref()).inspect_err(|err| {
            tracing::warn!(container_id = %request.get_ref().container_id, error = %err, "create rejected");
        })?;
        let pid = self.engine.create(create).await?;
        Ok(Response::new(CreateContainerResponse { pid }))
    }

    async fn start(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        self.engine.start(&request.get_ref().container_id).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn signal(
        &self,
        request: Request<SignalContainerRequest>,
    ) -> Result<Response<SignalContainerResponse>, Status> {
        let req = request.get_ref();
        self.engine.signal(&req.container_id, req.signal)?;
        Ok(Response::new(SignalContainerResponse {}))
    }

    async fn wait(
        &self,
        request: Request<WaitContainerRequest>,
    ) -> Result<Response<WaitContainerResponse>, Status> {
        let exit = self.engine.wait(&request.get_ref().container_id).await?;
        Ok(Response::new(wait_response(exit)))
    }

    async fn delete(
        &self,
        request: Request<DeleteContainerRequest>,
    ) -> Result<Response<DeleteContainerResponse>, Status> {
        self.engine.delete(&request.get_ref().container_id).await?;
        Ok(Response::new(DeleteContainerResponse {}))
    }

    async fn list(
        &self,
        _: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self
            .engine
            .list()
            .into_iter()
            .map(|c| ContainerInfo {
                container_id: c.id,
                status: status(c.state).into(),
                pid: c.pid,
                exit: c.exit.map(wait_response),
            })
            .collect();
        Ok(Response::new(ListContainersResponse { containers }))
    }
}
