//! `Health` service: SERVING until a shutdown starts.

use tonic::{Request, Response, Status};

use crate::proto::check_response::ServingStatus;
use crate::proto::health_server::Health;
use crate::proto::{CheckRequest, CheckResponse};
use crate::shutdown::ShutdownSignal;

/// Answers `Health.Check` for the agent.
#[derive(Clone, Debug)]
pub struct HealthService {
    shutdown: ShutdownSignal,
}

impl HealthService {
    /// Reports NOT_SERVING once `shutdown` fires.
    pub fn new(shutdown: ShutdownSignal) -> Self {
        Self { shutdown }
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let status = if self.shutdown.is_triggered() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        Ok(Response::new(CheckResponse {
            status: status.into(),
        }))
    }
}
