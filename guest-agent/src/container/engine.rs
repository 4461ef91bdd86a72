//! Container state in the agent and the lifecycle operations on it.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::error::EngineError;
use super::oom_score;
use super::pod::PodNamespaces;
use super::spawn::{self, failure, next_message};
use super::state::{unix_nanos, watch_exit, Container, ContainerState, ExitInfo, Pending};
use super::stdio;
use super::sync::SyncMessage;
use super::validate::{validate_id, CreateSpec};
use crate::cgroup::{self, ContainerCgroup, Hierarchy, LazyHierarchy};
use crate::events::EventBus;
use crate::reaper::Reaper;

/// How long `Delete` waits for a killed container to be reaped.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Start` waits for the exec to be confirmed.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Slot {
    /// The id is reserved while `Create` runs.
    Creating,
    Ready(Arc<Container>),
}

/// Holds an id in `Creating` state; frees it when dropped unless kept.
struct Reservation<'a> {
    engine: &'a Engine,
    id: Option<String>,
}

impl Reservation<'_> {
    /// The caller replaces the slot with the created container.
    fn keep(mut self) {
        self.id = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut containers = self.engine.lock();
            if matches!(containers.get(&id), Some(Slot::Creating)) {
                containers.remove(&id);
            }
        }
    }
}

/// What `List` reports of one container.
#[derive(Clone, Debug)]
pub struct ContainerSummary {
    /// Id.
    pub id: String,
    /// State.
    pub state: ContainerState,
    /// Pid in the agent's namespace.
    pub pid: u32,
    /// Exit, once stopped.
    pub exit: Option<ExitInfo>,
}

/// All containers of the agent.
#[derive(Clone, Debug)]
pub struct Engine {
    reaper: Reaper,
    containers: Arc<Mutex<HashMap<String, Slot>>>,
    /// The pod's namespaces once the sandbox is set up.
    pod: Arc<RwLock<Option<PodNamespaces>>>,
    /// The pod's cgroup v2 hierarchy, set up in the background; none by default.
    cgroups: Arc<LazyHierarchy>,
    /// Exit and OOM events of the containers.
    events: EventBus,
}

impl Engine {
    /// An engine whose containers are reaped by `reaper`.
    pub fn new(reaper: Reaper) -> Self {
        Self {
            reaper,
            containers: Arc::default(),
            pod: Arc::default(),
            cgroups: Arc::default(),
            events: EventBus::default(),
        }
    }

    /// Gives containers cgroups under the cgroup2 mount `root`, set up by
    /// the first call of [`Engine::cgroups`].
    pub fn with_cgroup_root(mut self, root: PathBuf) -> Self {
        self.cgroups = Arc::new(LazyHierarchy::under(root));
        self
    }

    /// The cgroup hierarchy, if containers get cgroups (waits for its setup).
    pub async fn cgroups(&self) -> Option<Arc<Hierarchy>> {
        self.cgroups.get().await
    }

    /// The bus the containers' exit and OOM events go to.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The cgroup of container `id` (`None` without a hierarchy); NOT_FOUND for an unknown id.
    pub fn cgroup_of(&self, id: &str) -> Result<Option<Arc<ContainerCgroup>>, EngineError> {
        Ok(self.get(id)?.cgroup.clone())
    }

    /// The reaper the engine's children are registered with.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// Makes later containers join the pod's namespaces (`None`: stop doing so).
    pub fn set_pod_namespaces(&self, pod: Option<PodNamespaces>) {
        *self.pod.write().unwrap_or_else(PoisonError::into_inner) = pod;
    }

    fn pod_namespaces(&self) -> Option<PodNamespaces> {
        self.pod
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn get(&self, id: &str) -> Result<Arc<Container>, EngineError> {
        validate_id(id)?;
        match self.lock().get(id) {
            Some(Slot::Ready(c)) => Ok(Arc::clone(c)),
            Some(Slot::Creating) => Err(EngineError::FailedPrecondition(format!(
                "container {id:?} is still being created"
            ))),
            None => Err(EngineError::NotFound(format!("container {id:?} not found"))),
        }
    }

    fn reserve(&self, id: &str) -> Result<Reservation<'_>, EngineError> {
        let mut containers = self.lock();
        if containers.contains_key(id) {
            return Err(EngineError::AlreadyExists(id.to_owned()));
        }
        containers.insert(id.to_owned(), Slot::Creating);
        Ok(Reservation {
            engine: self,
            id: Some(id.to_owned()),
        })
    }

    /// Creates a container whose process waits for [`Engine::start`]; returns its pid.
    pub async fn create(&self, mut create: CreateSpec) -> Result<u32, EngineError> {
        let id = create.id.clone();
        if let Some(pod) = self.pod_namespaces() {
            pod.apply_to(&mut create.spec)?;
        }
        let reservation = self.reserve(&id)?;
        let oom_score_adj = oom_score::from_spec(&create.spec, "oci_spec_json.process")?
            .unwrap_or(oom_score::DEFAULT);
        // Dropped unkept (any failure below), the cgroup is emptied and removed.
        let cgroup = cgroup::for_container(self.cgroups().await.as_deref(), &id, &create.spec)?;
        let procs = match &cgroup {
            Some(c) => Some(c.cgroup().procs_writer()?),
            None => None,
        };
        // If the caller goes away mid-create this future is dropped: the reservation
        // frees the id, and the dropped start pipe makes the waiting process exit.
        let (child_stdio, parent_stdio) = stdio::prepare(
            create.stdout.as_deref(),
            create.stderr.as_deref(),
            create.streams.as_ref(),
        )?;
        let spawned = match spawn::spawn(&self.reaper, &create, child_stdio, procs).await {
            Ok(spawned) => spawned,
            Err(err) => {
                tracing::warn!(container_id = %id, error = %err, "create failed");
                return Err(err);
            }
        };
        // Before the start byte, so the exec'd process inherits it.
        if let Err(err) = oom_score::apply(spawned.pid, oom_score_adj) {
            spawn::abandon(spawned).await;
            return Err(err);
        }
        let stdio = match parent_stdio.connect() {
            Ok(stdio) => stdio,
            Err(err) => {
                tracing::warn!(container_id = %id, error = %err, "create failed");
                spawn::abandon(spawned).await;
                return Err(err);
            }
        };
        reservation.keep();
        let (exit_tx, exit_rx) = watch::channel(None);
        let container = Arc::new(Container {
            id: id.clone(),
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            pending: tokio::sync::Mutex::new(Some(Pending {
                start: spawned.start,
                sync: spawned.sync,
            })),
            started_at: AtomicI64::new(0),
            exit: exit_rx,
            cgroup: cgroup.and_then(cgroup::PendingCgroup::keep),
            spec: Arc::new(create.spec),
            stdio,
            execs: Default::default(),
        });
        if let Some(cgroup) = &container.cgroup {
            cgroup.watch_oom(self.events.clone());
        }
        watch_exit(
            Arc::clone(&container),
            spawned.exit,
            exit_tx,
            self.events.clone(),
        );
        self.lock()
            .insert(id.clone(), Slot::Ready(Arc::clone(&container)));
        let pid = u32::try_from(container.pid.as_raw()).unwrap_or(0);
        tracing::info!(container_id = %id, pid, "container created");
        Ok(pid)
    }

    /// Runs the created container's process; fails if the exec fails.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        let container = self.get(id)?;
        let mut pending = container.pending.lock().await;
        let Some(Pending {
            mut start,
            mut sync,
        }) = pending.take()
        else {
            return Err(EngineError::FailedPrecondition(format!(
                "container {id:?} was already started"
            )));
        };
        if container.state() == ContainerState::Stopped {
            return Err(EngineError::FailedPrecondition(format!(
                "container {id:?} exited before it was started"
            )));
        }
        container.started_at.store(unix_nanos(), Ordering::SeqCst);
        start.write_all(&[1]).map_err(|e| {
            EngineError::FailedPrecondition(format!("container {id:?} cannot be started: {e}"))
        })?;
        // The sync pipe closes on a successful exec (close-on-exec); a message means it failed.
        let outcome = tokio::time::timeout(START_TIMEOUT, next_message(&mut sync)).await;
        match outcome {
            Ok(Ok(None)) => {
                tracing::info!(container_id = %id, "container started");
                Ok(())
            }
            Ok(Ok(Some(SyncMessage::Failed { kind, message }))) => {
                tracing::warn!(container_id = %id, %message, "exec failed");
                Err(failure(
                    kind,
                    format!("container {id:?} failed to start: {message}"),
                ))
            }
            Ok(Ok(Some(other))) => Err(EngineError::Internal(format!(
                "unexpected message from container {id:?}: {other:?}"
            ))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(EngineError::Internal(format!(
                "container {id:?} did not confirm its exec within {START_TIMEOUT:?}"
            ))),
        }
    }

    /// Sends `signal` to the running container's init process.
    pub fn signal(&self, id: &str, signal: u32) -> Result<(), EngineError> {
        let container = self.get(id)?;
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|n| Signal::try_from(n).ok())
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!("signal {signal} is not a valid signal"))
            })?;
        match container.state() {
            ContainerState::Created => Err(EngineError::FailedPrecondition(format!(
                "container {id:?} is not started"
            ))),
            ContainerState::Stopped => Err(EngineError::FailedPrecondition(format!(
                "container {id:?} has exited"
            ))),
            ContainerState::Running => match container.pidfd.signal(sig) {
                Ok(()) | Err(Errno::ESRCH) => {
                    tracing::info!(container_id = %id, signal = %sig, "signalled");
                    Ok(())
                }
                Err(errno) => Err(EngineError::Internal(format!(
                    "signal container {id:?}: {errno}"
                ))),
            },
        }
    }

    /// Waits for the container's exit.
    pub async fn wait(&self, id: &str) -> Result<ExitInfo, EngineError> {
        Ok(self.get(id)?.wait().await)
    }

    /// Kills what is left of the container (its whole cgroup and pid namespace) and forgets it.
    pub async fn delete(&self, id: &str) -> Result<(), EngineError> {
        let container = self.get(id)?;
        if container.state() != ContainerState::Stopped {
            // Killing a pid namespace's init kills every process in it.
            match container.pidfd.signal(Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    return Err(EngineError::Internal(format!(
                        "kill container {id:?}: {errno}"
                    )))
                }
            }
        }
        if tokio::time::timeout(DELETE_TIMEOUT, container.wait())
            .await
            .is_err()
        {
            return Err(EngineError::Internal(format!(
                "container {id:?} did not exit within {DELETE_TIMEOUT:?} of SIGKILL"
            )));
        }
        // The exit already removed it; this retries if that failed.
        if let Some(cgroup) = &container.cgroup {
            cgroup.remove(DELETE_TIMEOUT).await?;
        }
        let mut containers = self.lock();
        // A concurrent Delete may have removed it already; only remove this very container.
        if let Some(Slot::Ready(c)) = containers.get(id) {
            if Arc::ptr_eq(c, &container) {
                containers.remove(id);
            }
        }
        tracing::info!(container_id = %id, "container deleted");
        Ok(())
    }

    /// Kills and forgets every container (the agent is going down); failures are logged.
    pub async fn delete_all(&self) {
        for summary in self.list() {
            if let Err(err) = self.delete(&summary.id).await {
                tracing::warn!(container_id = %summary.id, error = %err, "cannot delete container");
            }
        }
    }

    /// Every container, sorted by id.
    pub fn list(&self) -> Vec<ContainerSummary> {
        let mut list: Vec<ContainerSummary> = self
            .lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(c) => Some(ContainerSummary {
                    id: c.id.clone(),
                    state: c.state(),
                    pid: u32::try_from(c.pid.as_raw()).unwrap_or(0),
                    exit: *c.exit.borrow(),
                }),
                Slot::Creating => None,
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }
}
