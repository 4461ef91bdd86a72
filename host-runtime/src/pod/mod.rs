//! A pod: its network namespace and tap, its virtiofsd, its VM and the
//! agent's sandbox in it, made step by step and undone newest first. This is
//! the sequence the CRI's RunPodSandbox / StopPodSandbox will drive.

mod adopt;
mod config;
pub mod container;
pub mod ids;
mod leftovers;
mod spec;
mod sweep;
mod teardown;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::{
    HostEntry, Interface, Route, SandboxInfo, SetupSandboxRequest, SharedMount, ShutdownRequest,
    VersionRequest,
};
use vessel_agent_api::MIN_AGENT_API_VERSION;

use crate::cgroup::{CgroupError, PodCgroup, CGROUP_ROOT};
use crate::net::{tap, NetError, Netns, TapCounters};
use crate::process::{ProcessError, ProcessRecord};
use crate::virtiofsd::{Virtiofsd, VirtiofsdError};
use crate::vm::{Isolation, VmError, VmExit, VmProcess};

pub use config::{
    recorded_cgroup_parent, validate_name, CriPod, PodConfig, PodConfigError, CGROUP_PARENT,
    CGROUP_PARENT_RECORD, GUEST_NIC, HOST_OVERHEAD_MIB, OWNER_RECORD, ROOTFS_GUEST_PATH,
    ROOTFS_TAG, SHARE_DIR, SHARE_SOURCE_DIR, TAP_NAME, VM_DIR,
};
pub use container::{ContainerExit, ContainerRun};
pub use leftovers::{leftovers, Leftover};
pub use spec::container_spec;
pub use sweep::{sweep, sweep_one, Swept};
pub use teardown::{unwind, Undone};

/// Deadline of one agent call (every call but `Containers.Wait`).
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the guest may take to shut down after `Agent.Shutdown`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long virtiofsd may take to exit after SIGTERM.
const VIRTIOFSD_GRACE: Duration = Duration::from_secs(5);

/// Running, stopping or checking a pod failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Every 64Ki slot of `[pod_ids]` is some running pod's.
    #[error("no free pod ids: every 65536-id slot of the {count} ids from {start} ([pod_ids]) is a running pod's")]
    NoFreeId {
        /// The first id of the block.
        start: u32,
        /// Its size.
        count: u32,
    },
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] PodConfigError),
    /// The pod's state directory is in use or cannot be made or removed.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The network namespace or the tap failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// virtiofsd failed.
    #[error(transparent)]
    Virtiofsd(#[from] VirtiofsdError),
    /// The VMM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The pod's cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A process record failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The share's nosuid,nodev bind mount failed.
    #[error("share mount {path}: {source}")]
    ShareMount {
        /// The mount point.
        path: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// An agent call failed.
    #[error("{call}: {} ({:?})", .status.message(), .status.code())]
    Agent {
        /// The call, e.g. "Sandbox.Setup".
        call: &'static str,
        /// The agent's status (its message is in ours, so it is not a `source`).
        status: tonic::Status,
    },
    /// An agent call did not answer in time.
    #[error("{call}: no answer within {waited:?}")]
    AgentTimeout {
        /// The call.
        call: &'static str,
        /// How long we waited.
        waited: Duration,
    },
    /// The container spec could not be built.
    #[error("container spec: {0}")]
    Spec(#[from] crate::container::spec::SpecError),
    /// The container spec could not be serialized.
    #[error("container spec to JSON: {0}")]
    SpecJson(#[source] serde_json::Error),
    /// Copying a container's output failed.
    #[error("container {stream}: {} ({:?})", .status.message(), .status.code())]
    Output {
        /// "stdout" or "stderr".
        stream: &'static str,
        /// The agent's status.
        status: tonic::Status,
    },
    /// The VMM did not exit cleanly after the guest shut down.
    #[error("vessel-vmm ended with {exit}; guest console in {console}")]
    VmExit {
        /// How it ended.
        exit: VmExit,
        /// The console log (kept: the state dir is removed only when empty of errors).
        console: PathBuf,
    },
    /// The agent speaks an API older than this host side can drive.
    #[error("the guest agent speaks API v{agent}, this vesseld needs at least v{needed} (rebuild the initramfs)")]
    AgentTooOld {
        /// The agent's API version.
        agent: u32,
        /// The oldest this vesseld drives.
        needed: u32,
    },
    /// The CNI chain failed.
    #[error(transparent)]
    Cni(#[from] crate::cni::CniError),
    /// The CNI result cannot attach the guest.
    #[error("the CNI result cannot attach the guest: {0}")]
    CniResult(String),
    /// A step was asked for out of order.
    #[error("the pod is not running (start it first)")]
    NotRunning,
    /// Stopping the pod failed in these steps (each was still attempted).
    #[error("stopping the pod failed: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

/// Which part of a pod's life a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Making the pod.
    Start,
    /// Running its container.
    Run,
    /// Undoing the pod (a stop, or the rollback after a failure).
    Stop,
}

/// One finished step, for progress reports.
#[derive(Debug)]
pub struct Step<'a> {
    /// The phase.
    pub phase: Phase,
    /// What was done.
    pub what: &'a str,
    /// How long it took.
    pub took: Duration,
    /// Why it failed, if it did.
    pub error: Option<&'a dyn std::error::Error>,
}

impl<'a> Step<'a> {
    /// A step that worked.
    pub fn done(phase: Phase, what: &'a str, took: Duration) -> Self {
        Self {
            phase,
            what,
            took,
            error: None,
        }
    }
}

/// Receives every finished step.
pub type Progress<'a> = &'a (dyn Fn(&Step<'_>) + Sync);

/// Something a pod made, undone in the reverse order of making.
#[derive(Debug)]
enum Made {
    StateDir(PathBuf),
    LogDir(PathBuf),
    Cgroup(PodCgroup),
    ShareMount(PathBuf),
    Netns(Netns),
    CniAttachment {
        cni: Box<crate::cni::Cni>,
        attach: Box<crate::cni::PodNetwork>,
    },
    Tap {
        netns: PathBuf,
        name: String,
    },
    Virtiofsd(Virtiofsd),
    Vm {
        vm: VmProcess,
        agent: Option<Channel>,
    },
}

/// A pod being made, run or stopped. Dropping it with things still made
/// kills its processes and deletes its namespace (best effort, without the
/// report [`Pod::stop`] gives).
#[derive(Debug)]
pub struct Pod {
    config: PodConfig,
    made: Vec<Made>,
    sandbox: Option<SandboxInfo>,
    pids: Vec<u32>,
    cni_result: Option<crate::cni::CniResult>,
}

impl Pod {
    /// A pod to be started; checks the configuration, makes nothing.
    pub fn new(config: PodConfig) -> Result<Self, PodError> {
        config.validate()?;
        Ok(Self {
            config,
            made: Vec::new(),
            sandbox: None,
            pids: Vec::new(),
            cni_result: None,
        })
    }

    /// What the CNI chain attached a CRI pod with.
    pub fn cni_result(&self) -> Option<&crate::cni::CniResult> {
        self.cni_result.as_ref()
    }

    /// What the agent's `Sandbox.Setup` answered, once the pod runs.
    pub fn sandbox_info(&self) -> Option<&SandboxInfo> {
        self.sandbox.as_ref()
    }

    /// The channel to the pod's agent, once it answered.
    pub fn agent_channel(&self) -> Option<Channel> {
        self.agent()
    }

    /// The pod's VMM process, once started.
    pub fn vm(&self) -> Option<&VmProcess> {
        self.made.iter().find_map(|m| match m {
            Made::Vm { vm, .. } => Some(vm),
            _ => None,
        })
    }

    /// The pod's host cgroup, once made.
    pub fn host_cgroup(&self) -> Option<&PodCgroup> {
        self.cgroup()
    }

    /// The configuration.
    pub fn config(&self) -> &PodConfig {
        &self.config
    }

    /// The pids of every process the pod started (VMM, virtiofsd).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Makes the pod: state dir, network namespace, tap, virtiofsd, VM, then
    /// the agent's sandbox setup, reporting each step. On failure what was
    /// made stays recorded; [`Pod::stop`] undoes it.
    pub async fn start(&mut self, progress: Progress<'_>) -> Result<(), PodError> {
        let step =
            |what, started: Instant, result| report(progress, Phase::Start, what, started, result);
        step(
            "making the state dir",
            Instant::now(),
            self.make_state_dir(),
        )?;
        step("making the pod cgroup", Instant::now(), self.make_cgroup())?;
        step(
            "mounting the share nosuid,nodev",
            Instant::now(),
            self.mount_share(),
        )?;
        step(
            "making the network namespace",
            Instant::now(),
            self.make_netns(),
        )?;
        let t = Instant::now();
        step(
            "attaching the pod network (CNI)",
            t,
            self.attach_cni().await,
        )?;
        step("making the tap", Instant::now(), self.make_tap())?;
        let t = Instant::now();
        step("starting virtiofsd", t, self.start_virtiofsd().await)?;
        step("starting vessel-vmm", Instant::now(), self.start_vm())?;
        let t = Instant::now();
        step("reaching the agent", t, self.connect_agent().await)?;
        let t = Instant::now();
        step("Sandbox.Setup", t, self.setup_sandbox().await)?;
        Ok(())
    }

    fn make_state_dir(&mut self) -> Result<String, PodError> {
        let dir = self.config.state_dir();
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| PodError::StateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // create_dir, not create_dir_all: an existing one is another pod's, or a leftover.
        std::fs::create_dir(&dir).map_err(|source| PodError::StateDir {
            path: dir.clone(),
            source,
        })?;
        self.made.push(Made::StateDir(dir.clone()));
        // Only vesseld (and later the pod's own VMM user) may look inside.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|source| PodError::StateDir {
                path: dir.clone(),
                source,
            })?;
        // Whose pod this is: a sweep leaves pods whose owner still runs alone.
        owner_record()?.save(&dir.join(OWNER_RECORD))?;
        // The VMM's own directory, owned by the pod's unprivileged id: the
        // jailed VMM removes its sockets there at exit, and can touch
        // nothing else of the pod's (records stay in the root-owned parent).
        // Poisoned only by a panic elsewhere; the slot scan is still sound.
        let _allocating = ids::ALLOCATING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids = ids::allocate(&self.config.run_dir.join("pods"), self.config.pod_ids)?;
        let id = ids.vmm();
        let vm_dir = self.config.vm_dir();
        let io = |source| PodError::StateDir {
            path: vm_dir.clone(),
            source,
        };
        std::fs::create_dir(&vm_dir).map_err(io)?;
        std::fs::set_permissions(&vm_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io)?;
        std::os::unix::fs::chown(&vm_dir, Some(id), Some(id)).map_err(io)?;
        self.config.ids = Some(ids);
        if self.config.cri.is_some() {
            let source = self.config.share_source();
            std::fs::create_dir(&source).map_err(|source_err| PodError::StateDir {
                path: source.clone(),
                source: source_err,
            })?;
        }
        // The logs go to disk: a guest flooding its console must not fill
        // the RAM-backed run dir (the files are capped, too).
        let logs = self.config.log_dir();
        let io = |source| PodError::StateDir {
            path: logs.clone(),
            source,
        };
        if let Some(parent) = logs.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::create_dir(&logs).map_err(io)?;
        self.made.push(Made::LogDir(logs.clone()));
        std::fs::set_permissions(&logs, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io)?;
        Ok(format!(
            "created state dir {} (0700), the VMM's {VM_DIR}/ owned by uid/gid {id}, guest ids from host id {}",
            dir.display(),
            ids.base()
        ))
    }

    fn make_cgroup(&mut self) -> Result<String, PodError> {
        let limit = (u64::from(self.config.memory_mib) + HOST_OVERHEAD_MIB) << 20;
        // Recorded first, so that a sweep finds the cgroup under a parent
        // vesseld's configuration no longer names.
        let record = self.config.state_dir().join(CGROUP_PARENT_RECORD);
        std::fs::write(
            &record,
            self.config.cgroup_parent.as_os_str().as_encoded_bytes(),
        )
        .map_err(|source| PodError::StateDir {
            path: record.clone(),
            source,
        })?;
        let cg = PodCgroup::create(
            std::path::Path::new(CGROUP_ROOT),
            &self.config.cgroup_parent,
            &self.config.name,
            limit,
        )?;
        let what = format!(
            "created cgroup {} ({:?}, memory limit {} MiB)",
            cg.dirs()
                .first()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            cg.version(),
            limit >> 20
        );
        self.made.push(Made::Cgroup(cg));
        Ok(what)
    }

    fn mount_share(&mut self) -> Result<String, PodError> {
        use nix::mount::{mount, MsFlags};
        let target = self.config.share_dir();
        std::fs::create_dir(&target).map_err(|source| PodError::StateDir {
            path: target.clone(),
            source,
        })?;
        let failed = |source| PodError::ShareMount {
            path: target.clone(),
            source,
        };
        let source = self.config.share_source();
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(failed)?;
        self.made.push(Made::ShareMount(target.clone()));
        // A bind mount takes its flags on a remount: what the guest writes
        // there is never a usable device or a set-uid program on the host.
        // A CRI pod's share is read-only to the guest: it holds only the
        // mount points vesseld makes, so the guest cannot swap one for a
        // symlink under vesseld's feet.
        let cri = self.config.cri.is_some();
        let mut flags =
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if cri {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(None::<&str>, &target, None::<&str>, flags, None::<&str>).map_err(failed)?;
        if cri {
            // Its own peer group: the container mounts made under it later
            // reach virtiofsd's namespace (a slave of it), and no other
            // mount of the host.
            for flag in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
                mount(None::<&str>, &target, None::<&str>, flag, None::<&str>).map_err(failed)?;
            }
        }
        Ok(format!(
            "bind-mounted {} on {} nosuid,nodev{}",
            source.display(),
            target.display(),
            if cri { ",ro,shared" } else { "" }
        ))
    }

    fn cgroup(&self) -> Option<&PodCgroup> {
        self.made.iter().find_map(|m| match m {
            Made::Cgroup(cg) => Some(cg),
            _ => None,
        })
    }

    fn make_netns(&mut self) -> Result<String, PodError> {
        let netns = Netns::create(&self.config.netns_name())?;
        let what = format!("created network namespace {}", netns.path().display());
        self.made.push(Made::Netns(netns));
        Ok(what)
    }

    async fn attach_cni(&mut self) -> Result<String, PodError> {
        let Some(cri) = &self.config.cri else {
            return Ok("no CNI: the pod's own subnet".to_string());
        };
        let (cni, attach) = (cri.cni.clone(), cri.attach.clone());
        let result = cni.add(&attach).await?;
        let network = cni.network().name.clone();
        self.made.push(Made::CniAttachment {
            cni: Box::new(cni),
            attach: Box::new(attach.clone()),
        });
        let Some((_, nic)) = result.sandbox_interface(&attach.ifname) else {
            return Err(PodError::CniResult(format!(
                "it names no interface {} in the sandbox",
                attach.ifname
            )));
        };
        let Some(mac) = nic.mac.clone().filter(|m| !m.is_empty()) else {
            return Err(PodError::CniResult(format!(
                "it gives no MAC for {}",
                attach.ifname
            )));
        };
        // The guest's NIC takes the CNI interface's MAC: the frames the
        // node sends to the pod's IP are addressed to it.
        self.config.addressing.guest_mac = mac;
        let ips: Vec<String> = result
            .sandbox_ips(&attach.ifname)
            .iter()
            .map(|ip| ip.address.to_string())
            .collect();
        let what = format!(
            "attached through CNI network {}: {} {}",
            network,
            attach.ifname,
            ips.join(", ")
        );
        self.cni_result = Some(result);
        Ok(what)
    }

    fn make_tap(&mut self) -> Result<String, PodError> {
        let netns = self.config.netns_path();
        if let Some(cri) = &self.config.cri {
            let ifname = cri.attach.ifname.clone();
            tap::create_unaddressed(&netns, TAP_NAME)?;
            self.made.push(Made::Tap {
                netns: netns.clone(),
                name: TAP_NAME.to_string(),
            });
            crate::net::tc::redirect_both_ways(&netns, &ifname, TAP_NAME)?;
            return Ok(format!(
                "created tap {TAP_NAME}, joined to {ifname} both ways with tc redirects"
            ));
        }
        let a = &self.config.addressing;
        tap::create(&netns, TAP_NAME, a.host_ip, a.prefix)?;
        let what = format!("created tap {TAP_NAME} {}/{} in it", a.host_ip, a.prefix);
        self.made.push(Made::Tap {
            netns,
            name: TAP_NAME.to_string(),
        });
        Ok(what)
    }

    async fn start_virtiofsd(&mut self) -> Result<String, PodError> {
        let fs = Virtiofsd::start_in(self.config.virtiofsd_config(), self.cgroup(), true)?;
        let what = format!(
            "started virtiofsd (pid {}) sharing {}",
            fs.pid().unwrap_or(0),
            self.config.rootfs.display()
        );
        self.pids.extend(fs.pid());
        self.made.push(Made::Virtiofsd(fs));
        Ok(what)
    }

    fn start_vm(&mut self) -> Result<String, PodError> {
        let isolation = Isolation {
            cgroup: self.cgroup().cloned(),
            namespaces: true,
            keep_on_drop: true,
        };
        let vm = VmProcess::spawn_isolated(self.config.vm_config(), isolation)?;
        let what = format!(
            "started vessel-vmm (pid {}): {} vCPU, {} MiB, NIC on {TAP_NAME}, virtio-fs {ROOTFS_TAG}",
            vm.pid().unwrap_or(0),
            self.config.cpus,
            self.config.memory_mib
        );
        self.pids.extend(vm.pid());
        self.made.push(Made::Vm { vm, agent: None });
        Ok(what)
    }

    async fn connect_agent(&mut self) -> Result<String, PodError> {
        let timeout = self.config.boot_timeout;
        let Some(Made::Vm { vm, agent }) = self.made.last_mut() else {
            return Err(PodError::NotRunning);
        };
        let channel = vm.connect_agent(timeout).await?;
        *agent = Some(channel.clone());
        let version = agent_call(
            "Agent.Version",
            AGENT_CALL_TIMEOUT,
            AgentClient::new(channel).version(VersionRequest {}),
        )
        .await?;
        check_api_version(version.api_version)?;
        Ok(format!(
            "agent {} (API v{}) answered over vsock (guest kernel {})",
            guest_text(&version.agent_version),
            version.api_version,
            guest_text(&version.kernel_release)
        ))
    }

    async fn setup_sandbox(&mut self) -> Result<String, PodError> {
        let channel = self.agent().ok_or(PodError::NotRunning)?;
        let reply = agent_call(
            "Sandbox.Setup",
            AGENT_CALL_TIMEOUT,
            SandboxClient::new(channel)
                .setup(setup_request(&self.config, self.cni_result.as_ref())),
        )
        .await?;
        let sandbox = reply.sandbox.unwrap_or_default();
        let a = &self.config.addressing;
        let what = format!(
            "set the sandbox up: hostname {}, {GUEST_NIC} {} via {}, {ROOTFS_TAG} on {}",
            guest_text(&sandbox.hostname),
            a.guest_cidr(),
            a.host_ip,
            guest_text(
                sandbox
                    .mount_points
                    .first()
                    .map(String::as_str)
                    .unwrap_or("?")
            )
        );
        self.sandbox = Some(sandbox);
        Ok(what)
    }

    /// Runs one container whose rootfs is the pod's share to its end,
    /// streaming its output; returns its exit.
    pub async fn run_container(
        &mut self,
        run: ContainerRun,
        progress: Progress<'_>,
    ) -> Result<ContainerExit, PodError> {
        let (Some(channel), Some(sandbox)) = (self.agent(), self.sandbox.as_ref()) else {
            return Err(PodError::NotRunning);
        };
        let rootfs = sandbox
            .mount_points
            .first()
            .cloned()
            .unwrap_or_else(|| ROOTFS_GUEST_PATH.to_string());
        container::run(channel, sandbox, &rootfs, run, progress).await
    }

    /// Copies the pod's logs (guest console, VMM, virtiofsd) to `dir`, so a
    /// failure can be looked into after [`Pod::stop`] removed the state dir.
    /// Returns the files copied.
    pub fn save_logs(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>, PodError> {
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| PodError::StateDir { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let vm = self.config.vm_config();
        let mut saved = Vec::new();
        for log in [
            vm.console_path(),
            vm.vmm_log_path(),
            self.config.virtiofsd_config().log,
        ] {
            let (Some(name), true) = (log.file_name(), log.exists()) else {
                continue;
            };
            let to = dir.join(name);
            std::fs::copy(&log, &to).map_err(io(&to))?;
            saved.push(to);
        }
        Ok(saved)
    }

    /// The tap's packet counters.
    pub fn tap_counters(&self) -> Result<TapCounters, PodError> {
        self.made
            .iter()
            .find_map(|m| match m {
                Made::Tap { netns, name } => Some(tap::counters(netns, name)),
                _ => None,
            })
            .ok_or(PodError::NotRunning)?
            .map_err(PodError::from)
    }

    /// Undoes everything made, newest first: the guest is shut down through
    /// its agent if it answered (else the VMM is killed), then virtiofsd is
    /// stopped, the tap and namespace deleted and the state dir removed.
    /// Every step runs even after a failure; the failures are returned together.
    pub async fn stop(&mut self, progress: Progress<'_>) -> Result<(), PodError> {
        self.sandbox = None;
        let made = std::mem::take(&mut self.made);
        let steps = unwind(made, undo, |step: &Undone<PodError>| {
            progress(&Step {
                phase: Phase::Stop,
                what: &step.what,
                took: step.took,
                error: step
                    .result
                    .as_ref()
                    .err()
                    .map(|e| e as &dyn std::error::Error),
            })
        })
        .await;
        let failed: Vec<String> = steps
            .into_iter()
            .filter_map(|s| s.result.err().map(|e| format!("{}: {e}", s.what)))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PodError::Teardown(failed))
        }
    }

    fn agent(&self) -> Option<Channel> {
        self.made.iter().find_map(|m| match m {
            Made::Vm { agent, .. } => agent.clone(),
            _ => None,
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if !self.made.is_empty() {
            tracing::warn!(pod = %self.config.name, "pod dropped while running; killing what is left");
        }
        // Newest first, like stop(): each part's own Drop kills or deletes it.
        while let Some(made) = self.made.pop() {
            drop(made);
        }
    }
}

/// Undoes one made thing; says what it did.
async fn undo(made: Made) -> (String, Result<(), PodError>) {
    match made {
        Made::Vm {
            vm,
            agent: Some(agent),
        } => (
            "shut the guest down (Agent.Shutdown) and reaped vessel-vmm".to_string(),
            shut_down(vm, agent).await,
        ),
        Made::Vm {
            mut vm,
            agent: None,
        } => (
            "killed vessel-vmm (its agent never answered)".to_string(),
            vm.kill().await.map(drop).map_err(PodError::from),
        ),
        Made::Virtiofsd(mut fs) => {
            let pid = fs.pid();
            let result = fs.stop(VIRTIOFSD_GRACE).await;
            let what = match (&result, pid) {
                (Ok(Some(status)), Some(pid)) => format!("virtiofsd (pid {pid}) ended: {status}"),
                _ => "stopped virtiofsd".to_string(),
            };
            (what, result.map(drop).map_err(PodError::from))
        }
        Made::CniAttachment { cni, attach } => (
            format!(
                "detached the pod network (CNI DEL of {})",
                attach.sandbox_id
            ),
            cni.del(&attach).await.map_err(PodError::from),
        ),
        Made::Tap { netns, name } => (
            format!("deleted tap {name}"),
            tap::delete(&netns, &name).map_err(PodError::from),
        ),
        Made::Netns(netns) => (
            format!("deleted network namespace {}", netns.name()),
            netns.delete().map_err(PodError::from),
        ),
        Made::ShareMount(path) => (
            format!("unmounted the share {}", path.display()),
            unmount_share(&path),
        ),
        Made::Cgroup(cg) => (
            "removed the pod cgroup".to_string(),
            cg.remove().await.map_err(PodError::from),
        ),
        Made::LogDir(dir) => (
            format!("removed log dir {}", dir.display()),
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(PodError::StateDir { path: dir, source }),
            },
        ),
        Made::StateDir(dir) => (
            format!("removed state dir {}", dir.display()),
            // A share still there (its unmount failed) is the user's rootfs
            // seen through a bind mount: never delete through it.
            match std::fs::symlink_metadata(dir.join(SHARE_DIR)) {
                Ok(_) => Err(PodError::StateDir {
                    path: dir.join(SHARE_DIR),
                    source: std::io::Error::new(
                        std::io::ErrorKind::DirectoryNotEmpty,
                        "the share is still there (not unmounted); state dir kept",
                    ),
                }),
                Err(_) => match std::fs::remove_dir_all(&dir) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(PodError::StateDir { path: dir, source }),
                },
            },
        ),
    }
}

/// The record of this vesseld process, as the owner of the pods it makes.
fn owner_record() -> Result<ProcessRecord, PodError> {
    let pid = std::process::id();
    let start = crate::process::start_time(pid).ok_or_else(|| PodError::StateDir {
        path: PathBuf::from(format!("/proc/{pid}/stat")),
        source: std::io::Error::from_raw_os_error(libc::ESRCH),
    })?;
    Ok(ProcessRecord::new("vesseld", pid, start, Vec::new()))
}

/// Detaches the share's bind mount and removes its mount point.
pub(crate) fn unmount_share(path: &std::path::Path) -> Result<(), PodError> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(source) => {
            return Err(PodError::ShareMount {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PodError::StateDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Asks the agent to shut the guest down and waits for the VMM to exit 0;
/// kills it if that does not happen.
async fn shut_down(mut vm: VmProcess, agent: Channel) -> Result<(), PodError> {
    // A VMM that is already gone (killed, crashed guest) is stopped.
    if let Ok(Some(exit)) = vm.try_exit() {
        tracing::warn!(exit = %exit, "vessel-vmm had already exited");
        return Ok(());
    }
    let asked = agent_call(
        "Agent.Shutdown",
        AGENT_CALL_TIMEOUT,
        AgentClient::new(agent).shutdown(ShutdownRequest {}),
    )
    .await;
    let result = match asked {
        Ok(_) => match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
            // Unknown: an adopted VMM (not our child) that exited once asked.
            Ok(VmExit::Code(0)) | Ok(VmExit::Unknown) => Ok(()),
            Ok(exit) => Err(PodError::VmExit {
                exit,
                console: vm.config().console_path(),
            }),
            Err(e) => Err(e.into()),
        },
        Err(e) => match vm.try_exit() {
            // It died while we asked: nothing is left to shut down.
            Ok(Some(exit)) => {
                tracing::warn!(exit = %exit, error = %e, "vessel-vmm exited before it could be shut down");
                Ok(())
            }
            _ => Err(e),
        },
    };
    if result.is_err() {
        vm.kill().await?;
    }
    result
}

/// The agent's sandbox setup for this pod: hostname, the NIC by MAC with the
/// pod's address and a default route through the tap, the rootfs share.
fn setup_request(c: &PodConfig, cni: Option<&crate::cni::CniResult>) -> SetupSandboxRequest {
    if let (Some(cri), Some(result)) = (&c.cri, cni) {
        return cri_setup_request(c, cri, result);
    }
    let a = &c.addressing;
    SetupSandboxRequest {
        sandbox_id: c.name.clone(),
        hostname: c.name.clone(),
        interfaces: vec![Interface {
            mac: a.guest_mac.clone(),
            name: GUEST_NIC.to_string(),
            addresses: vec![a.guest_cidr()],
            ..Interface::default()
        }],
        routes: vec![Route {
            destination: "default".into(),
            gateway: a.host_ip.to_string(),
            ..Route::default()
        }],
        hosts: vec![HostEntry {
            ip: a.guest_ip.to_string(),
            names: vec![c.name.clone()],
        }],
        mounts: vec![SharedMount {
            tag: ROOTFS_TAG.to_string(),
            mount_point: ROOTFS_GUEST_PATH.to_string(),
            read_only: false,
        }],
        ..SetupSandboxRequest::default()
    }
}

/// A CRI pod's sandbox setup: the NIC by the CNI interface's MAC with its
/// addresses and routes, the pod's hostname, DNS and sysctls, the share.
fn cri_setup_request(
    c: &PodConfig,
    cri: &CriPod,
    result: &crate::cni::CniResult,
) -> SetupSandboxRequest {
    let ips = result.sandbox_ips(&cri.attach.ifname);
    let routes = result
        .routes
        .iter()
        .map(|r| {
            // A route without a next hop goes through its family's gateway.
            let gateway = r.gw.or_else(|| {
                ips.iter()
                    .filter(|ip| ip.address.is_ipv4() == r.dst.is_ipv4())
                    .find_map(|ip| ip.gateway)
            });
            Route {
                destination: if r.dst.prefix() == 0 {
                    "default".to_string()
                } else {
                    r.dst.to_string()
                },
                gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
                ..Route::default()
            }
        })
        .collect();
    SetupSandboxRequest {
        sandbox_id: c.name.clone(),
        hostname: cri.hostname.clone(),
        dns: cri.dns.clone(),
        hosts: ips
            .first()
            .map(|ip| HostEntry {
                ip: ip.address.ip().to_string(),
                names: vec![cri.hostname.clone()],
            })
            .into_iter()
            .collect(),
        sysctls: cri.sysctls.clone(),
        interfaces: vec![Interface {
            mac: c.addressing.guest_mac.clone(),
            name: GUEST_NIC.to_string(),
            addresses: ips.iter().map(|ip| ip.address.to_string()).collect(),
            ..Interface::default()
        }],
        routes,
        mounts: vec![SharedMount {
            tag: ROOTFS_TAG.to_string(),
            mount_point: ROOTFS_GUEST_PATH.to_string(),
            read_only: false,
        }],
        share_pid_namespace: cri.share_pid_namespace,
        ..SetupSandboxRequest::default()
    }
}

/// Reports a finished step (its line and time, or its name and error) and
/// passes its result on.
fn report(
    progress: Progress<'_>,
    phase: Phase,
    step: &str,
    started: Instant,
    result: Result<String, PodError>,
) -> Result<(), PodError> {
    match result {
        Ok(what) => {
            progress(&Step::done(phase, &what, started.elapsed()));
            Ok(())
        }
        Err(e) => {
            progress(&Step {
                phase,
                what: step,
                took: started.elapsed(),
                error: Some(&e),
            });
            Err(e)
        }
    }
}

/// A string from the guest made safe to print: control characters (which
/// could drive a terminal) escaped, and cut at 256 bytes.
pub fn guest_text(s: &str) -> String {
    let mut out: String = s.chars().flat_map(char::escape_debug).collect();
    if out.len() > 256 {
        let mut cut = 256;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Refuses an agent whose API is older than [`MIN_AGENT_API_VERSION`]; newer
/// ones only add to the API, which this side ignores.
fn check_api_version(agent: u32) -> Result<(), PodError> {
    if agent < MIN_AGENT_API_VERSION {
        return Err(PodError::AgentTooOld {
            agent,
            needed: MIN_AGENT_API_VERSION,
        });
    }
    Ok(())
}

/// One agent call with a deadline; its reply, or a typed error naming it.
pub async fn agent_call<T>(
    call: &'static str,
    timeout: Duration,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, PodError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(PodError::Agent { call, status }),
        Err(_) => Err(PodError::AgentTimeout {
            call,
            waited: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::config::test_config;

    fn config() -> PodConfig {
        test_config(std::path::Path::new("/srv"), "demo")
    }

    #[test]
    fn setup_names_the_nic_by_mac_and_routes_through_the_tap() {
        let r = setup_request(&config(), None);
        assert_eq!(r.hostname, "demo");
        assert_eq!(r.interfaces[0].mac, "02:76:73:00:00:02");
        assert_eq!(r.interfaces[0].addresses, ["10.88.0.2/24"]);
        assert_eq!(r.routes[0].gateway, "10.88.0.1");
        assert_eq!(r.mounts[0].tag, ROOTFS_TAG);
        assert_eq!(r.mounts[0].mount_point, ROOTFS_GUEST_PATH);
    }

    #[test]
    fn guest_text_cannot_drive_a_terminal_and_is_bounded() {
        assert_eq!(guest_text("6.1.0"), "6.1.0");
        assert_eq!(guest_text("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        let long = guest_text(&"é".repeat(500));
        assert!(long.len() <= 256 + '…'.len_utf8() && long.ends_with('…'));
    }

    #[test]
    fn an_older_agent_api_is_refused_by_name() {
        check_api_version(MIN_AGENT_API_VERSION).unwrap();
        check_api_version(MIN_AGENT_API_VERSION + 1).unwrap();
        let err = check_api_version(MIN_AGENT_API_VERSION - 1).unwrap_err();
        assert!(matches!(err, PodError::AgentTooOld { .. }), "{err}");
        assert!(err.to_string().contains("rebuild the initramfs"), "{err}");
    }

    #[tokio::test]
    async fn a_pod_that_never_started_stops_cleanly_and_cannot_run() {
        let mut pod = Pod {
            config: config(),
            made: Vec::new(),
            sandbox: None,
            pids: Vec::new(),
            cni_result: None,
        };
        let run = ContainerRun {
            id: "c".into(),
            args: vec!["true".into()],
            stdout: Box::new(std::io::sink()),
            stderr: Box::new(std::io::sink()),
            deadline: None,
        };
        assert!(matches!(
            pod.run_container(run, &|_| {}).await,
            Err(PodError::NotRunning)
        ));
        pod.stop(&|_| panic!("nothing to undo")).await.unwrap();
    }

    #[tokio::test]
    async fn a_state_dir_whose_share_is_still_there_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pod");
        std::fs::create_dir_all(state.join(SHARE_DIR)).unwrap();
        std::fs::write(state.join(SHARE_DIR).join("user-file"), b"keep").unwrap();
        let (_, result) = undo(Made::StateDir(state.clone())).await;
        assert!(matches!(result, Err(PodError::StateDir { .. })));
        assert!(state.join(SHARE_DIR).join("user-file").exists());
    }

    #[tokio::test]
    async fn a_failed_start_is_rolled_back_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.run_dir = dir.path().join("run");
        let mut pod = Pod {
            config: c,
            made: Vec::new(),
            sandbox: None,
            pids: Vec::new(),
            cni_result: None,
        };
        // An existing state dir is refused before anything is made...
        std::fs::create_dir_all(pod.config.state_dir()).unwrap();
        let err = pod.start(&|_| {}).await.unwrap_err();
        assert!(matches!(err, PodError::StateDir { .. }), "{err}");
        pod.stop(&|_| panic!("nothing was made")).await.unwrap();
        // ... and left alone: it is not ours.
        assert!(pod.config.state_dir().exists());
    }
}
