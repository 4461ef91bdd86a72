//! What every device worker thread shares: the handle that stops it, the
//! slot a device keeps it in while active, and the epoll chores of its
//! loop (watching inputs, giving up on a broken queue, waiting for stop).

use std::os::fd::RawFd;
use std::thread::JoinHandle;

use tracing::error;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::{ActivateError, Interrupt};

/// A running device worker thread (any device's): how to stop it and wait for it.
pub struct WorkerHandle {
    stop: EventFd,
    thread: JoinHandle<()>,
}

impl WorkerHandle {
    /// Starts `body` as the worker thread `name`, which exits once `stop`
    /// is signalled. Through the seccomp launcher: activation runs on a
    /// vCPU thread, whose filter a plain spawn would inherit.
    pub(crate) fn spawn<F>(name: &str, stop: EventFd, body: F) -> std::io::Result<Self>
    where
        F: FnOnce() + Send + 'static,
    {
        Self::spawn_as(name, crate::seccomp::Role::Device, stop, body)
    }

    /// [`WorkerHandle::spawn`] under the filter of another device `role`.
    pub(crate) fn spawn_as<F>(
        name: &str,
        role: crate::seccomp::Role,
        stop: EventFd,
        body: F,
    ) -> std::io::Result<Self>
    where
        F: FnOnce() + Send + 'static,
    {
        let thread = crate::seccomp::spawn_worker(name, role, body)?;
        Ok(Self { stop, thread })
    }

    /// Stops the worker and waits for it; false if it had panicked.
    pub fn stop(self) -> bool {
        if let Err(e) = self.stop.write(1) {
            // Without the wake-up join would hang; this cannot really fail.
            error!("device worker: cannot signal the worker to stop: {e}");
            return false;
        }
        self.thread.join().is_ok()
    }
}

/// The worker of a device while the driver has it active: empty before
/// activation and after a reset; stopped when the device is dropped.
pub struct DeviceWorker {
    /// The device's name in errors and logs.
    name: &'static str,
    handle: Option<WorkerHandle>,
}

impl DeviceWorker {
    /// An empty slot for device `name`.
    pub fn new(name: &'static str) -> Self {
        Self { name, handle: None }
    }

    /// Fails an activation while the worker of the last one still runs.
    pub fn ensure_idle(&self) -> Result<(), ActivateError> {
        match self.handle {
            Some(_) => Err(ActivateError::BadQueues(format!(
                "{} is already active",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// Keeps the worker `started` gave, or fails the activation.
    pub fn start(&mut self, started: std::io::Result<WorkerHandle>) -> Result<(), ActivateError> {
        self.handle = Some(started.map_err(ActivateError::Worker)?);
        Ok(())
    }

    /// Stops the worker, if one runs; false (and a warning) if it had panicked.
    pub fn stop(&mut self) -> bool {
        let ok = self.handle.take().is_none_or(WorkerHandle::stop);
        if !ok {
            crate::guest_warn!(device = self.name, "virtio: worker did not stop cleanly");
        }
        ok
    }
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Adds each `(token, fd)` to `epoll`, watching for input.
pub fn watch_inputs(epoll: &Epoll, fds: &[(u64, RawFd)]) -> std::io::Result<()> {
    for &(token, fd) in fds {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )?;
    }
    Ok(())
}

/// Reports that the guest broke device `name`'s queues (`e` says how) and
/// asks the driver for a reset; the worker must then leave the queues alone.
pub fn report_broken(name: &str, interrupt: &dyn Interrupt, e: &str) {
    crate::guest_warn!("{name}: guest broke the device, it needs a reset: {e}");
    if let Err(e) = interrupt.set_needs_reset() {
        crate::guest_warn!("{name}: cannot signal the guest: {e}");
    }
}

/// Waits on `epoll` until the event with `stop_token` comes, draining
/// `queue_evts` on every other wake-up (so they do not keep it spinning);
/// also returns if epoll fails.
pub fn wait_for_stop(epoll: &Epoll, stop_token: u64, queue_evts: &[&EventFd]) {
    let mut events = [EpollEvent::default(); 8];
    loop {
        match epoll.wait(-1, &mut events) {
            Ok(n) => {
                if events[..n].iter().any(|e| e.data() == stop_token) {
                    return;
                }
                for evt in queue_evts {
                    // Non-blocking: EAGAIN only means it is drained already.
                    let _ = evt.read();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
