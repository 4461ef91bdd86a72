//! The agent's gRPC server, on vsock (in the guest) or a Unix socket (tests).

mod agent;
mod containers;
mod events;
mod health;
mod listen;
mod portforward;
mod process;
mod resources;
mod sandbox;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::Server;

pub use agent::AgentService;
pub use containers::ContainersService;
pub use events::EventsService;
pub use health::HealthService;
pub use listen::ServerError;
pub use portforward::PortForwardService;
pub use process::{ProcessesService, StdioService, MAX_INPUT_CHUNK};
pub use resources::ResourcesService;
pub use sandbox::SandboxService;

use crate::container::Engine;
use crate::proto::agent_server::AgentServer;
use crate::proto::containers_server::ContainersServer;
use crate::proto::events_server::EventsServer;
use crate::proto::health_server::HealthServer;
use crate::proto::port_forward_server::PortForwardServer;
use crate::proto::processes_server::ProcessesServer;
use crate::proto::resources_server::ResourcesServer;
use crate::proto::sandbox_server::SandboxServer;
use crate::proto::stats_server::StatsServer;
use crate::proto::stdio_server::StdioServer;
use crate::sandbox::Sandbox;
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

/// What the agent runs for the pod: containers and the sandbox they share.
#[derive(Clone, Debug)]
pub struct Workloads {
    /// The container engine.
    pub engine: Engine,
    /// The pod sandbox, whose namespaces the engine's containers join.
    pub sandbox: Sandbox,
}

impl Workloads {
    /// An engine and a sandbox wired together.
    pub fn new(engine: Engine) -> Self {
        let sandbox = Sandbox::new(engine.clone());
        Self { engine, sandbox }
    }
}

/// All agent services, sharing one shutdown signal; `Containers` and `Sandbox` only with workloads.
// `PortForward` needs no workloads: it connects in the agent's own network namespace.
pub fn router(shutdown: &ShutdownSignal, pid1: bool, workloads: Option<Workloads>) -> Router {
    // Without workloads (in-process tests, which must not reap) those services answer Unimplemented.
    let (containers, sandbox) = match &workloads {
        Some(w) => (
            Some(ContainersServer::new(ContainersService::new(
                w.engine.clone(),
            ))),
            Some(SandboxServer::new(SandboxService::new(w.sandbox.clone()))),
        ),
        None => (None, None),
    };
    // Resources, Stats and Events: the cgroup side of the same engine.
    let (resources, stats, events) = match &workloads {
        Some(w) => (
            Some(ResourcesServer::new(ResourcesService::new(
                w.engine.clone(),
            ))),
            Some(StatsServer::new(ResourcesService::new(w.engine.clone()))),
            Some(EventsServer::new(EventsService::new(
                w.engine.events().clone(),
                shutdown.clone(),
            ))),
        ),
        None => (None, None, None),
    };
    let processes = workloads
        .as_ref()
        .map(|w| ProcessesServer::new(ProcessesService::new(w.engine.clone())));
    let stdio = workloads.map(|w| StdioServer::new(StdioService::new(w.engine)));
    Server::builder()
        .add_service(HealthServer::new(HealthService::new(shutdown.clone())))
        .add_service(AgentServer::new(AgentService::new(shutdown.clone(), pid1)))
        .add_service(PortForwardServer::new(PortForwardService::new()))
        .add_optional_service(containers)
        .add_optional_service(sandbox)
        .add_optional_service(resources)
        .add_optional_service(stats)
        .add_optional_service(events)
        .add_optional_service(processes)
        .add_optional_service(stdio)
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
    workloads: Option<Workloads>,
) -> Result<(), ServerError> {
    let router = router(&shutdown, pid1, workloads);
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
