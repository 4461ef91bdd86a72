//! CRI `RuntimeService`: the gRPC face of the sandbox and container
//! managers (`sandbox::manager`, `container::manager`). Every RPC is logged
//! with the pod and container ids as fields.

pub(crate) mod convert;
mod stats;
mod status;
mod streaming;

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use vessel_agent_api::proto::resources_client::ResourcesClient;
use vessel_agent_api::proto::UpdateResourcesRequest;

use crate::daemon::runtime::Runtime;
use crate::pod::{agent_call, AGENT_CALL_TIMEOUT};
use crate::sandbox::manager::invalid;
use crate::store::{ContainerFilter, SandboxFilter};

/// The CRI runtime service.
#[derive(Clone)]
pub struct RuntimeServiceImpl {
    rt: Arc<Runtime>,
    cpu: Arc<stats::CpuSamples>,
}

impl RuntimeServiceImpl {
    /// Serves `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        RuntimeServiceImpl {
            rt,
            cpu: Arc::default(),
        }
    }
}

impl RuntimeServiceImpl {
    /// One sandbox's stats; `agent` is its guest's (see [`stats::agent_stats`]).
    async fn sandbox_stats(
        &self,
        s: &crate::store::SandboxRecord,
        agent: Option<vessel_agent_api::proto::GetStatsResponse>,
    ) -> Result<PodSandboxStats, Status> {
        let containers = self.rt.store.list_containers(&ContainerFilter {
            sandbox_id: s.id.clone(),
            state: Some(crate::store::ContainerState::Running),
            ..ContainerFilter::default()
        })?;
        let host = stats::host_usage(&self.rt, &s.id).await;
        let writable = futures_util::future::join_all(
            containers
                .iter()
                .map(|c| stats::writable_layer(&self.rt, &c.id)),
        )
        .await;
        Ok(stats::sandbox_stats(
            &self.cpu,
            s,
            &containers,
            writable,
            agent.as_ref(),
            host,
        ))
    }
}

impl RuntimeServiceImpl {
    /// `UpdateContainerResources`: through the pod's agent, then on record.
    async fn update_resources(&self, r: UpdateContainerResourcesRequest) -> Result<(), Status> {
        let c = self.rt.store.find_container(&r.container_id)?;
        let linux = r.linux.ok_or_else(|| invalid("linux", "is missing"))?;
        let oci = crate::container::spec::linux_resources(&linux, "linux")?;
        let json = serde_json::to_string(&oci)
            .map_err(|e| Status::internal(format!("resources to JSON: {e}")))?;
        let pod = self.rt.pod(&c.sandbox_id).ok_or_else(|| {
            Status::failed_precondition("the container's pod sandbox is not running")
        })?;
        let channel = pod
            .lock()
            .await
            .agent_channel()
            .ok_or_else(|| Status::failed_precondition("the pod has no agent"))?;
        agent_call(
            "Resources.Update",
            AGENT_CALL_TIMEOUT,
            ResourcesClient::new(channel).update(UpdateResourcesRequest {
                container_id: c.id.clone(),
                resources_json: json,
            }),
        )
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        self.rt
            .store
            .update_container(&c.id, |rec| rec.resources = Some(linux))?;
        tracing::info!(rpc = "UpdateContainerResources", pod = %c.sandbox_id, container = %c.id, "resources updated");
        Ok(())
    }

    /// `PodSandboxStatus`, with its containers' statuses and a timestamp
    /// (what the kubelet's evented PLEG reads).
    fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse, Status> {
        let s = self.rt.store.find_sandbox(id)?;
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert("info".to_string(), status::sandbox_info(&self.rt, &s));
        }
        Ok(PodSandboxStatusResponse {
            status: Some(convert::pod_sandbox_status(&s)),
            info,
            containers_statuses: self.container_statuses(&s.id)?,
            timestamp: crate::daemon::runtime::now_nanos(),
        })
    }

    /// The statuses of a pod's containers.
    fn container_statuses(&self, pod: &str) -> Result<Vec<ContainerStatus>, Status> {
        let filter = ContainerFilter {
            sandbox_id: pod.to_string(),
            ..ContainerFilter::default()
        };
        let containers = self.rt.store.list_containers(&filter)?;
        Ok(containers.iter().map(convert::container_status).collect())
    }

    /// `ContainerStatus`; `verbose` adds the pod, image, stop signal and process.
    fn container_status(&self, id: &str, verbose: bool) -> Result<ContainerStatusResponse, Status> {
        let c = self.rt.store.find_container(id)?;
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({
                    "sandboxID": c.sandbox_id,
                    "imageID": c.image_id,
                    "stopSignal": c.stop_signal,
                    "process": serde_json::from_str::<serde_json::Value>(&c.process_json).unwrap_or_default(),
                })
                .to_string(),
            );
        }
        Ok(ContainerStatusResponse {
            status: Some(convert::container_status(&c)),
            info,
        })
    }
}

fn unimplemented(what: &str, why: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet: {why}"))
}

/// What an RPC is about: its log lines' `pod` or `container` field.
#[derive(Clone, Copy)]
enum About<'a> {
    /// The node (Version, Status, lists, runtime config).
    Node,
    /// A pod sandbox, by the id or prefix asked for.
    Pod(&'a str),
    /// A container, by the id or prefix asked for.
    Container(&'a str),
}

/// Logs an RPC's outcome: done at debug level (the kubelet polls the
/// status and list RPCs every few seconds), failed as a warning with its
/// code (the kubelet shows only the message).
fn logged<T>(rpc: &'static str, about: About<'_>, r: Result<T, Status>) -> Result<T, Status> {
    let (pod, container) = match about {
        About::Node => ("", ""),
        About::Pod(id) => (id, ""),
        About::Container(id) => ("", id),
    };
    match &r {
        Ok(_) => tracing::debug!(rpc, pod, container, "CRI call done"),
        Err(s) => {
            tracing::warn!(rpc, pod, container, code = ?s.code(), error = %s.message(), "CRI call failed")
        }
    }
    r
}

#[tonic::async_trait]
impl RuntimeService for RuntimeServiceImpl {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        logged("Version", About::Node, Ok(Response::new(status::version())))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let r = request.into_inner();
        let config = r.config.ok_or_else(|| invalid("config", "is missing"))?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        tracing::info!(rpc = "RunPodSandbox", name = %name, handler = %r.runtime_handler);
        let id = logged(
            "RunPodSandbox",
            About::Pod(&name),
            self.rt.run_sandbox(config, &r.runtime_handler).await,
        )?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        tracing::info!(rpc = "StopPodSandbox", pod = %id);
        logged(
            "StopPodSandbox",
            About::Pod(&id),
            self.rt.stop_sandbox(&id).await,
        )?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        tracing::info!(rpc = "RemovePodSandbox", pod = %id);
        logged(
            "RemovePodSandbox",
            About::Pod(&id),
            self.rt.remove_sandbox(&id).await,
        )?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let r = request.into_inner();
        let response = self.pod_sandbox_status(&r.pod_sandbox_id, r.verbose);
        logged("PodSandboxStatus", About::Pod(&r.pod_sandbox_id), response).map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let filter = SandboxFilter::from_cri(request.into_inner().filter.as_ref());
        let items = self.rt.store.list_sandboxes(&filter).map_err(Status::from);
        let items = items.map(|s| s.iter().map(convert::pod_sandbox).collect());
        logged("ListPodSandbox", About::Node, items)
            .map(|items| Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let r = request.into_inner();
        let config = r.config.ok_or_else(|| invalid("config", "is missing"))?;
        tracing::info!(rpc = "CreateContainer", pod = %r.pod_sandbox_id);
        let id = logged(
            "CreateContainer",
            About::Pod(&r.pod_sandbox_id),
            self.rt
                .create_container(
                    &r.pod_sandbox_id,
                    config,
                    r.sandbox_config.unwrap_or_default(),
                )
                .await,
        )?;
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        tracing::info!(rpc = "StartContainer", container = %id);
        logged(
            "StartContainer",
            About::Container(&id),
            self.rt.start_container(&id).await,
        )?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let r = request.into_inner();
        tracing::info!(rpc = "StopContainer", container = %r.container_id, timeout = r.timeout);
        logged(
            "StopContainer",
            About::Container(&r.container_id),
            self.rt.stop_container(&r.container_id, r.timeout).await,
        )?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        tracing::info!(rpc = "RemoveContainer", container = %id);
        logged(
            "RemoveContainer",
            About::Container(&id),
            self.rt.remove_container(&id).await,
        )?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let filter = ContainerFilter::from_cri(request.into_inner().filter.as_ref());
        let containers = self.rt.store.list_containers(&filter).map_err(Status::from);
        let containers = containers.map(|c| c.iter().map(convert::container).collect());
        logged("ListContainers", About::Node, containers)
            .map(|containers| Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let r = request.into_inner();
        let response = self.container_status(&r.container_id, r.verbose);
        logged(
            "ContainerStatus",
            About::Container(&r.container_id),
            response,
        )
        .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let r = request.into_inner();
        let id = r.container_id.clone();
        let done = self.update_resources(r).await;
        logged("UpdateContainerResources", About::Container(&id), done)?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        logged(
            "ReopenContainerLog",
            About::Container(&id),
            self.rt.reopen_log(&id),
        )?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }
    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(rpc = "ExecSync", container = %r.container_id, timeout = r.timeout);
        let (stdout, stderr, exit_code) = logged(
            "ExecSync",
            About::Container(&r.container_id),
            self.rt.exec_sync(&r.container_id, r.cmd, r.timeout).await,
        )?;
        Ok(Response::new(ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(rpc = "Exec", container = %r.container_id, tty = r.tty, stdin = r.stdin);
        let id = r.container_id.clone();
        let url = logged("Exec", About::Container(&id), self.streaming_exec(r))?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(rpc = "Attach", container = %r.container_id, tty = r.tty, stdin = r.stdin);
        let id = r.container_id.clone();
        let url = logged("Attach", About::Container(&id), self.streaming_attach(r))?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(rpc = "PortForward", pod = %r.pod_sandbox_id, ports = ?r.port);
        let id = r.pod_sandbox_id.clone();
        let url = logged(
            "PortForward",
            About::Pod(&id),
            self.streaming_port_forward(r),
        )?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let stats = async {
            let c = self.rt.store.find_container(&id)?;
            let agent = stats::agent_stats(&self.rt, &c.sandbox_id, AGENT_CALL_TIMEOUT).await?;
            Ok(stats::container_stats(
                &self.cpu,
                &c,
                agent.as_ref(),
                stats::writable_layer(&self.rt, &c.id).await,
            ))
        }
        .await;
        logged("ContainerStats", About::Container(&id), stats)
            .map(|s| Response::new(ContainerStatsResponse { stats: Some(s) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let f = request.into_inner().filter.unwrap_or_default();
        let filter = ContainerFilter {
            id: f.id,
            sandbox_id: f.pod_sandbox_id,
            // Stats are of running containers, as containerd lists them.
            state: Some(crate::store::ContainerState::Running),
            labels: f.label_selector.into_iter().collect(),
        };
        let containers = logged(
            "ListContainerStats",
            About::Node,
            self.rt.store.list_containers(&filter).map_err(Status::from),
        )?;
        // Every pod's agent at once, each bounded: a guest that does not
        // answer costs the list LIST_AGENT_TIMEOUT, whatever the number of pods.
        let mut pods: Vec<&str> = containers.iter().map(|c| c.sandbox_id.as_str()).collect();
        pods.sort_unstable();
        pods.dedup();
        let agents = futures_util::future::join_all(
            pods.iter()
                .map(|id| stats::agent_stats_for_list(&self.rt, id)),
        )
        .await;
        let by_pod: std::collections::HashMap<&str, _> = pods.into_iter().zip(agents).collect();
        let writable = futures_util::future::join_all(
            containers
                .iter()
                .map(|c| stats::writable_layer(&self.rt, &c.id)),
        )
        .await;
        let stats = containers
            .iter()
            .zip(writable)
            .map(|(c, w)| {
                let agent = by_pod.get(c.sandbox_id.as_str()).and_then(Option::as_ref);
                stats::container_stats(&self.cpu, c, agent, w)
            })
            .collect();
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let stats = async {
            let s = self.rt.store.find_sandbox(&id)?;
            let agent = stats::agent_stats(&self.rt, &s.id, AGENT_CALL_TIMEOUT)
                .await
                .unwrap_or(None);
            self.sandbox_stats(&s, agent).await
        }
        .await;
        logged("PodSandboxStats", About::Pod(&id), stats)
            .map(|s| Response::new(PodSandboxStatsResponse { stats: Some(s) }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let f = request.into_inner().filter.unwrap_or_default();
        let filter = SandboxFilter {
            id: f.id,
            state: Some(crate::store::SandboxState::Ready),
            labels: f.label_selector.into_iter().collect(),
        };
        let sandboxes = logged(
            "ListPodSandboxStats",
            About::Node,
            self.rt.store.list_sandboxes(&filter).map_err(Status::from),
        )?;
        // Concurrent and bounded per pod, as in ListContainerStats.
        let stats = futures_util::future::join_all(sandboxes.iter().map(|s| async move {
            let agent = stats::agent_stats_for_list(&self.rt, &s.id).await;
            self.sandbox_stats(s, agent).await
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        logged(
            "UpdateRuntimeConfig",
            About::Node,
            self.rt.set_pod_cidr(&cidr),
        )?;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let status = status::status(&self.rt, request.into_inner().verbose);
        logged("Status", About::Node, Ok(Response::new(status)))
    }

    async fn checkpoint_container(
        &self,
        request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        logged(
            "CheckpointContainer",
            About::Container(&id),
            Err(unimplemented(
                "CheckpointContainer",
                "vessel does not checkpoint containers",
            )),
        )
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(
        &self,
        _request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let events = BroadcastStream::new(self.rt.events.subscribe()).filter_map(|e| match e {
            Ok(event) => Some(Ok(event)),
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "a GetContainerEvents reader fell behind");
                None
            }
        });
        tracing::info!(
            rpc = "GetContainerEvents",
            "a client follows the container events"
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        let none = ListMetricDescriptorsResponse::default();
        logged(
            "ListMetricDescriptors",
            About::Node,
            Ok(Response::new(none)),
        )
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let none = ListPodSandboxMetricsResponse::default();
        logged(
            "ListPodSandboxMetrics",
            About::Node,
            Ok(Response::new(none)),
        )
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        let config = status::runtime_config();
        logged("RuntimeConfig", About::Node, Ok(Response::new(config)))
    }
}
