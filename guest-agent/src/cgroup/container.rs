//! One container's cgroup: created with its limits before the container's
//! process exists, killed and removed when the container stops.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::CgroupError;
use super::notify::FileWatch;
use super::resources::{self, Plan};
use super::{devices, files, Controller, Hierarchy};
use crate::events::{EventBus, EventKind};

/// How long stopping a container may take to empty and remove its cgroup.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one limit into the cgroup at `dir`; false if the file is absent
/// and the write allows that ([`resources::Write::missing_ok`]). Errors name
/// the spec field.
fn write_limit(dir: &Path, w: &resources::Write) -> Result<bool, CgroupError> {
    let file = dir.join(&w.file);
    match files::write(&file, &w.value) {
        Ok(()) => Ok(true),
        Err(CgroupError::Io { source, .. }) => {
            match Errno::from_raw(source.raw_os_error().unwrap_or(0)) {
                Errno::ENOENT if w.missing_ok => Ok(false),
                Errno::ENOENT => Err(CgroupError::InvalidArgument(format!(
                    "{}: this kernel has no {} (unsupported size or feature)",
                    w.field, w.file
                ))),
                Errno::EINVAL | Errno::ERANGE | Errno::EOVERFLOW => {
                    Err(CgroupError::InvalidArgument(format!(
                        "{}: the kernel refused {:?} for {}: {source}",
                        w.field, w.value, w.file
                    )))
                }
                _ => Err(CgroupError::io("write", &file, source)),
            }
        }
        Err(other) => Err(other),
    }
}

/// The cgroup `vessel/pod/<container_id>`.
#[derive(Debug)]
pub struct ContainerCgroup {
    id: String,
    path: PathBuf,
    /// Whether the memory controller is on (memory.events exists).
    memory: bool,
    /// The `oom_kill` count already published as events.
    oom_published: AtomicU64,
    removed: AtomicBool,
    /// Set once removed; ends the OOM watcher.
    closed: watch::Sender<bool>,
    /// The device program on it (set right after creation).
    devices: Mutex<Option<devices::Attached>>,
}

fn is_not_found(err: &CgroupError) -> bool {
    matches!(err, CgroupError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

impl ContainerCgroup {
    /// Checks `resources`, then creates the cgroup and applies them; a failure leaves no directory.
    pub fn create(
        hierarchy: &Hierarchy,
        id: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<PendingCgroup, CgroupError> {
        let plan = match resources {
            Some(r) => resources::plan(r)?,
            None => Plan::default(),
        };
        hierarchy.check(&plan)?;
        let devices = devices::policy(resources.and_then(|r| r.devices().as_deref()))?;
        let path = hierarchy.pod().join(id);
        // A leftover of an earlier container with this id (the id was free, so it is
        // not in use): remove it if it is empty, else creating fails below.
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).map_err(|e| CgroupError::io("mkdir", &path, e))?;
        let cgroup = Arc::new(Self {
            id: id.to_owned(),
            path,
            memory: hierarchy.controllers().contains(&Controller::Memory),
            oom_published: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            closed: watch::channel(false).0,
            devices: Mutex::new(None),
        });
        let pending = PendingCgroup(Some(cgroup));
        pending.cgroup().apply(&plan)?;
        // Before any process is in it: the init stage's own mknods already pass through it.
        let attached = devices::install(&pending.cgroup().path, &devices)?;
        *pending.cgroup().lock_devices() = Some(attached);
        tracing::debug!(container_id = %id, rules = devices.rules.len(), default_allow = devices.default_allow, "device program attached");
        Ok(pending)
    }

    /// Applies new `resources` to the running container; `devices`, if
    /// present, replaces the device program (checked before anything changes).
    pub fn update(
        &self,
        hierarchy: &Hierarchy,
        resources: &LinuxResources,
    ) -> Result<(), CgroupError> {
        let plan = resources::plan(resources)?;
        hierarchy.check(&plan)?;
        let policy = match resources.devices() {
            Some(rules) => Some(devices::policy(Some(rules))?),
            None => None,
        };
        self.apply(&plan)?;
        if let Some(policy) = policy {
            let mut attached = self.lock_devices();
            let new = match attached.as_ref() {
                Some(old) => devices::replace(&self.path, old, &policy)?,
                None => devices::install(&self.path, &policy)?,
            };
            *attached = Some(new);
            tracing::debug!(container_id = %self.id, rules = policy.rules.len(), "device program replaced");
        }
        Ok(())
    }

    /// The device program slot; a poisoned lock still holds a valid fd.
    fn lock_devices(&self) -> std::sync::MutexGuard<'_, Option<devices::Attached>> {
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, plan: &Plan) -> Result<(), CgroupError> {
        for w in &plan.writes {
            if write_limit(&self.path, w)? {
                tracing::debug!(container_id = %self.id, file = %w.file, value = %w.value, "cgroup limit set");
            } else {
                tracing::debug!(container_id = %self.id, file = %w.file, value = %w.value, "cgroup file absent: the kernel already gives this");
            }
        }
        Ok(())
    }

    /// `cgroup.procs` opened for writing: the spawn writes `0` to it to move the
    /// container's init stage in before it does anything.
    pub fn procs_writer(&self) -> Result<OwnedFd, CgroupError> {
        let path = self.path.join("cgroup.procs");
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map(OwnedFd::from)
            .map_err(|e| CgroupError::io("open", &path, e))
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the cgroup is gone (the container stopped).
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Pids of its processes, as the agent's pid namespace sees them; empty once removed.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        match files::read(&self.path.join("cgroup.procs")) {
            Ok(text) => Ok(files::pids(&text)),
            Err(err) if is_not_found(&err) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    /// The `oom_kill` counter of memory.events; 0 without the memory controller.
    pub fn oom_kills(&self) -> u64 {
        if !self.memory {
            return 0;
        }
        files::read_flat_keyed(&self.path.join("memory.events"))
            .ok()
            .flatten()
            .and_then(|events| events.get("oom_kill").copied())
            .unwrap_or(0)
    }

    /// Publishes an OOM event if the counter rose since the last one; returns the counter.
    pub fn publish_oom(&self, events: &EventBus) -> u64 {
        let count = self.oom_kills();
        let before = self.oom_published.fetch_max(count, Ordering::SeqCst);
        if count > before {
            tracing::warn!(container_id = %self.id, oom_kills = count, "OOM kill in container");
            events.publish(EventKind::Oom {
                container_id: self.id.clone(),
                oom_kills: count,
            });
        }
        count.max(before)
    }

    /// Watches memory.events (inotify) and publishes OOM kills until the cgroup is removed.
    pub fn watch_oom(self: &Arc<Self>, events: EventBus) {
        if !self.memory {
            return;
        }
        let mut watch = match FileWatch::new(&self.path.join("memory.events")) {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(container_id = %self.id, error = %err, "cannot watch for OOM kills");
                return;
            }
        };
        let cgroup = Arc::clone(self);
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = watch.changed() => {
                        if !changed {
                            break;
                        }
                        cgroup.publish_oom(&events);
                    }
                    _ = closed.wait_for(|c| *c) => break,
                }
            }
        });
    }

    /// Kills every process in the cgroup (`cgroup.kill`; one SIGKILL per pid on kernels before 5.14).
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match files::write(&self.path.join("cgroup.kill"), "1") {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => {
                if !self.path.exists() {
                    return Ok(());
                }
                for pid in self.pids()? {
                    if let Ok(pid) = i32::try_from(pid) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The container stopped: publishes a last OOM kill, kills what is left and
    /// removes the cgroup. Returns whether the OOM killer struck in it.
    pub async fn stop(&self, events: &EventBus) -> bool {
        let oom_killed = self.publish_oom(events) > 0;
        if let Err(err) = self.remove(REMOVE_TIMEOUT).await {
            tracing::warn!(container_id = %self.id, error = %err, "cannot remove the container's cgroup");
        }
        oom_killed
    }

    /// Kills every process in the cgroup and removes it, waiting at most `timeout`; idempotent.
    pub async fn remove(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        // cgroup.events changes when the last process leaves ("populated 0").
        let mut watch = FileWatch::new(&self.path.join("cgroup.events")).ok();
        loop {
            self.kill_all()?;
            match std::fs::remove_dir(&self.path) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CgroupError::io("rmdir", &self.path, e))
                }
                _ => {
                    if !self.removed.swap(true, Ordering::SeqCst) {
                        tracing::debug!(container_id = %self.id, "cgroup removed");
                    }
                    self.closed.send_replace(true);
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CgroupError::io(
                    "rmdir",
                    &self.path,
                    std::io::Error::other(format!(
                        "processes still in it {timeout:?} after cgroup.kill"
                    )),
                ));
            }
            // Re-checks at least every 50 ms in case a change was missed.
            let pause = (deadline - now).min(Duration::from_millis(50));
            match watch.as_mut() {
                Some(w) => {
                    if let Ok(false) = tokio::time::timeout(pause, w.changed()).await {
                        watch = None;
                    }
                }
                None => tokio::time::sleep(pause.min(Duration::from_millis(10))).await,
            }
        }
    }
}

/// A cgroup not yet owned by a container: dropped (a failed or abandoned
/// `Create`), it kills what is in it and removes it in the background.
#[derive(Debug)]
pub struct PendingCgroup(Option<Arc<ContainerCgroup>>);

impl PendingCgroup {
    /// The cgroup.
    pub fn cgroup(&self) -> &ContainerCgroup {
        match &self.0 {
            Some(c) => c,
            // Only `keep` takes it, and that consumes self.
            None => unreachable!("PendingCgroup used after keep"),
        }
    }

    /// Hands the cgroup to its container.
    pub fn keep(mut self) -> Option<Arc<ContainerCgroup>> {
        self.0.take()
    }
}

impl Drop for PendingCgroup {
    fn drop(&mut self) {
        let Some(cgroup) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = cgroup.remove(REMOVE_TIMEOUT).await {
                        tracing::warn!(container_id = %cgroup.id, error = %err, "cannot remove an unused cgroup");
                    }
                });
            }
            Err(_) => {
                let _ = cgroup.kill_all();
                let _ = std::fs::remove_dir(&cgroup.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap_write(value: &str, missing_ok: bool) -> resources::Write {
        resources::Write {
            file: "memory.swap.max".into(),
            value: value.into(),
            field: "linux.resources.memory.swap".into(),
            controller: Controller::Memory,
            missing_ok,
        }
    }

    #[test]
    fn an_absent_swap_file_is_skipped_only_when_the_write_allows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A kernel without swap accounting: no memory.swap.max at all.
        assert!(!write_limit(dir.path(), &swap_write("0", true)).expect("skipped"));
        match write_limit(dir.path(), &swap_write("1048576", false)) {
            Err(CgroupError::InvalidArgument(m)) => {
                assert!(
                    m.starts_with(
                        "linux.resources.memory.swap: this kernel has no memory.swap.max"
                    ),
                    "{m}"
                );
            }
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
        // Where the file exists it is written either way (a plain file here,
        // so empty: the write does not truncate, a cgroup file needs none).
        std::fs::write(dir.path().join("memory.swap.max"), "").expect("file");
        assert!(write_limit(dir.path(), &swap_write("0", true)).expect("written"));
        let written = std::fs::read_to_string(dir.path().join("memory.swap.max"));
        assert_eq!(written.ok().as_deref(), Some("0"));
    }
}
