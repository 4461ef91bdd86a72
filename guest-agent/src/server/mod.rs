//! The agent's gRPC server, on vsock (in the guest) or a Unix socket (tests).

mod agent;
mod containers;
mod health;
mod listen;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Server;

pub use agent::AgentService;
pub use containers::ContainersService;
pub use health::HealthService;
pub use listen::ServerError;

use crate::container::Engine;
use crate::proto::agent_server::AgentServer;
use crate::proto::containers_server::ContainersServer;
use crate::proto::health_server::HealthServer;
use crate::shutdown::ShutdownSignal;

/// How long in-flight calls may run after a shutdown starts before the server is dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// vsock port, any CID (the guest case).
    Vsock(u32),
    /// Unix socket path (the agent run as an ordinary host process).
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vsock(port) => write!(f, "vsock port {port}"),
            Self::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// All agent services, sharing one shutdown signal; `Containers` only with an engine.
pub fn router(shutdown: &ShutdownSignal, pid1: bool, engine: Option<Engine>) -> Router {
    Server::builder()
        .add_service(HealthServer::new(HealthService::new(shutdown.clone())))
        .add_service(AgentServer::new(AgentService::new(shutdown.clone(), pid1)))
        // Without an engine (in-process tests, which must not reap) the service answers Unimplemented.
        .add_optional_service(engine.map(|e| ContainersServer::new(ContainersService::new(e))))
}

/// Serves the agent API without containers; see [`serve_with`].
pub async fn serve(
    listen: &Listen,
    shutdown: ShutdownSignal,
    pid1: bool,
) -> Result<(), ServerError> {
    serve_with(listen, shutdown, pid1, None).await
}

/// Serves the agent API on `listen` until `shutdown` fires, then drains for at
/// most [`DRAIN_TIMEOUT`]; returns `Ok` after a shutdown.
pub async fn serve_with(
    listen: &Listen,
    shutdown: ShutdownSignal,
    pid1: bool,
    engine: Option<Engine>,
) -> Result<(), ServerError> {
    let router = router(&shutdown, pid1, engine);
    let served = async {
        match listen {
            Listen::Vsock(port) => listen::serve_vsock(router, *port, &shutdown).await,
            Listen::Unix(path) => listen::serve_unix(router, path, &shutdown).await,
        }
    };
    let drain_deadline = async {
        shutdown.triggered().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = served => result,
        () = drain_deadline => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "in-flight calls outlived the drain; dropping them");
            Ok(())
        }
    }
}
