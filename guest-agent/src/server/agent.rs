//! `Agent` service: version facts and guest shutdown.

use nix::sys::utsname::uname;
use nix::unistd::{sysconf, SysconfVar};
use tonic::{Request, Response, Status};

use crate::proto::agent_server::Agent;
use crate::proto::{ShutdownRequest, ShutdownResponse, VersionRequest, VersionResponse};
use crate::shutdown::ShutdownSignal;
use crate::{AGENT_API_VERSION, AGENT_VERSION};

/// Serves `Agent.Version` and `Agent.Shutdown`.
#[derive(Clone, Debug)]
pub struct AgentService {
    shutdown: ShutdownSignal,
    pid1: bool,
}

impl AgentService {
    /// `Shutdown` fires `shutdown`; `pid1` is reported by `Version`.
    pub fn new(shutdown: ShutdownSignal, pid1: bool) -> Self {
        Self { shutdown, pid1 }
    }
}

/// CPUs online now (not `available_parallelism`, which follows this thread's affinity).
fn online_cpus() -> u32 {
    match sysconf(SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) => u32::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

/// The filesystem type of the mount this process sees at `/`: the last `/` entry
/// of mountinfo (later mounts stack on earlier ones).
/// The type of the agent's root mount, and whether that mount has a parent.
fn root_mount() -> Option<(String, bool)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    root_mount_in(&mountinfo)
}

fn root_mount_in(mountinfo: &str) -> Option<(String, bool)> {
    mountinfo.lines().rev().find_map(|line| {
        // Fields: id parent major:minor root mount-point options [optional...] - fstype source super-options
        let mut fields = line.split(' ');
        let id = fields.next()?;
        let parent = fields.next()?;
        let mount_point = fields.nth(2)?;
        let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
        // The absolute root of the mount tree is its own parent.
        (mount_point == "/").then(|| (fstype.to_owned(), id != parent))
    })
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn version(
        &self,
        _: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let uts = uname().map_err(|errno| Status::internal(format!("uname failed: {errno}")))?;
        let root = root_mount();
        Ok(Response::new(VersionResponse {
            agent_version: AGENT_VERSION.to_owned(),
            api_version: AGENT_API_VERSION,
            kernel_release: uts.release().to_string_lossy().into_owned(),
            pid1: self.pid1,
            online_cpus: online_cpus(),
            root_fs_type: root.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
            root_has_parent: root.is_some_and(|r| r.1),
        }))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        // The server drains in-flight calls before it returns, so this reply is
        // flushed before the caller of `serve` syncs and reboots.
        self.shutdown.trigger();
        Ok(Response::new(ShutdownResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_mount_is_the_top_root_mount() {
        let mountinfo = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                         20 1 0:2 / / rw,relatime - rootfs rootfs rw\n\
                         21 20 0:21 / /proc rw - proc proc rw\n";
        assert_eq!(root_mount_in(mountinfo), Some(("rootfs".into(), true)));
        assert_eq!(
            root_mount_in("1 1 0:2 / / rw - rootfs rootfs rw\n"),
            Some(("rootfs".into(), false))
        );
        assert_eq!(root_mount_in(""), None);
    }
}
