//! `Resources` and `Stats` services: container cgroups through the [`Engine`].

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::LinuxResources;
use tonic::{Request, Response, Status};

use crate::cgroup::{CgroupError, ContainerCgroup};
use crate::container::{unix_nanos, validate_id, Engine, EngineError};
use crate::proto::resources_server::Resources;
use crate::proto::stats_server::Stats;
use crate::proto::{
    ContainerStats, GetStatsRequest, GetStatsResponse, ListProcessesRequest, ListProcessesResponse,
    ProcessInfo, UpdateResourcesRequest, UpdateResourcesResponse,
};

/// Largest accepted `resources_json`.
pub const MAX_RESOURCES_LEN: usize = 64 << 10;
/// Longest command line reported per process.
pub const MAX_COMMAND_LEN: u64 = 4 << 10;
/// Most container ids in one `Stats.Get`.
pub const MAX_STATS_IDS: usize = 1024;

/// Serves `Resources` and `Stats` from an engine.
#[derive(Clone, Debug)]
pub struct ResourcesService {
    engine: Engine,
}

impl ResourcesService {
    /// Serves the containers of `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// The container's cgroup, or why there is none.
    fn cgroup(&self, id: &str) -> Result<Arc<ContainerCgroup>, EngineError> {
        self.engine.cgroup_of(id)?.ok_or_else(|| {
            EngineError::FailedPrecondition(format!(
                "container {id:?} has no cgroup: this agent has no cgroup v2 hierarchy"
            ))
        })
    }
}

/// `/proc/<pid>/cmdline` with NULs as spaces, bounded; empty if unreadable.
fn command_line(pid: u32) -> String {
    let mut raw = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_COMMAND_LEN).read_to_end(&mut raw));
    if read.is_err() {
        return String::new();
    }
    let text: Vec<u8> = raw
        .into_iter()
        .map(|b| if b == 0 { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&text).trim_end().to_owned()
}

#[tonic::async_trait]
impl Resources for ResourcesService {
    async fn update(
        &self,
        request: Request<UpdateResourcesRequest>,
    ) -> Result<Response<UpdateResourcesResponse>, Status> {
        let req = request.get_ref();
        validate_id(&req.container_id)?;
        if req.resources_json.len() > MAX_RESOURCES_LEN {
            return Err(Status::invalid_argument(format!(
                "resources_json is longer than {MAX_RESOURCES_LEN} bytes"
            )));
        }
        let resources: LinuxResources = serde_json::from_str(&req.resources_json).map_err(|e| {
            Status::invalid_argument(format!(
                "resources_json is not a valid OCI linux.resources object: {e}"
            ))
        })?;
        let cgroup = self.cgroup(&req.container_id)?;
        if cgroup.is_removed() {
            return Err(EngineError::FailedPrecondition(format!(
                "container {:?} has stopped",
                req.container_id
            ))
            .into());
        }
        let Some(hierarchy) = self.engine.cgroups().await else {
            return Err(Status::failed_precondition("no cgroup v2 hierarchy"));
        };
        cgroup
            .update(&hierarchy, &resources)
            .map_err(|e| EngineError::from(e.in_field("resources_json: ")))?;
        tracing::info!(container_id = %req.container_id, "resources updated");
        Ok(Response::new(UpdateResourcesResponse {}))
    }

    async fn list_processes(
        &self,
        request: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        let cgroup = self.cgroup(&request.get_ref().container_id)?;
        let mut pids = cgroup.pids().map_err(EngineError::from)?;
        pids.sort_unstable();
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid,
                command: command_line(pid),
            })
            .collect();
        Ok(Response::new(ListProcessesResponse { processes }))
    }
}

fn stats_of(dir: &Path) -> Result<Option<crate::proto::CgroupStats>, EngineError> {
    crate::stats::cgroup_stats(dir).map_err(|e: CgroupError| EngineError::from(e))
}

#[tonic::async_trait]
impl Stats for ResourcesService {
    async fn get(
        &self,
        request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        let req = request.get_ref();
        if req.container_ids.len() > MAX_STATS_IDS {
            return Err(Status::invalid_argument(format!(
                "container_ids has more than {MAX_STATS_IDS} ids"
            )));
        }
        let mut ids: Vec<String> = if req.container_ids.is_empty() {
            self.engine.list().into_iter().map(|c| c.id).collect()
        } else {
            req.container_ids.clone()
        };
        ids.sort();
        ids.dedup();
        let timestamp = unix_nanos();
        let mut containers = Vec::with_capacity(ids.len());
        for id in ids {
            let cgroup = match self.engine.cgroup_of(&id)? {
                Some(c) if !c.is_removed() => stats_of(c.path())?,
                _ => None,
            };
            containers.push(ContainerStats {
                container_id: id,
                cgroup,
            });
        }
        let pod = match self.engine.cgroups().await {
            Some(h) => stats_of(h.pod())?,
            None => None,
        };
        let interfaces = crate::stats::interfaces(Path::new("/sys/class/net"));
        Ok(Response::new(GetStatsResponse {
            timestamp,
            pod,
            containers,
            interfaces,
        }))
    }
}
