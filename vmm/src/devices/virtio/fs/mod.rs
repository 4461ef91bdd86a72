//! virtio-fs (device ID 26) as a vhost-user frontend: the queues are served
//! by an external virtiofsd, which maps guest RAM (a memfd) itself. The VMM
//! only keeps the config space (the tag), negotiates, hands over the
//! vrings at DRIVER_OK and relays the backend's interrupts.

mod backend;
pub mod config_space;
mod relay;
pub mod spec;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing::info;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{read_config_space, ActivateError, Activation, GuestMemory, Interrupt, VirtioDevice};
pub use backend::{BackendError, IO_TIMEOUT, NUM_QUEUES};
use config_space::CONFIG_LEN;
pub use spec::FsSpec;

/// Virtio device ID of virtio-fs.
pub const VIRTIO_ID_FS: u32 = 26;

/// Called once, with the share's tag, when its virtiofsd goes away while
/// the guest uses the device (the VMM stops the VM: see `attach_shares`).
pub type BackendLost = Arc<dyn Fn(&str) + Send + Sync>;

/// One virtio-fs share, connected to its virtiofsd.
pub struct Fs {
    tag: String,
    /// Every field is read-only for the driver (§5.11.4).
    config: [u8; CONFIG_LEN],
    queue_sizes: [u16; NUM_QUEUES],
    backend: backend::Backend,
    acked_features: u64,
    /// What the backend signals when it used buffers, one per vring; kept
    /// across activations.
    calls: Vec<EventFd>,
    /// Relays those calls to the guest; from the first activation on, as
    /// long as the device.
    relay: Relay,
    /// The vrings are handed to the backend (DRIVER_OK until reset).
    started: bool,
    /// The backend is gone or failed a request; the device stays dead.
    broken: Arc<AtomicBool>,
    /// Told when the backend goes away (the relay sees it).
    on_lost: Option<BackendLost>,
}

impl Fs {
    /// Connects to the share's virtiofsd and negotiates with it, so a
    /// missing or incompatible backend fails the VM's start.
    pub fn new(spec: &FsSpec) -> Result<Fs, BackendError> {
        let backend = backend::Backend::connect(&spec.socket)?;
        let io_err = |source| BackendError::Connect {
            path: spec.socket.clone(),
            source,
        };
        let calls = (0..NUM_QUEUES)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err)?;
        let relay_calls = calls
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(io_err)?;
        let socket = backend.socket().try_clone().map_err(io_err)?;
        let broken = Arc::new(AtomicBool::new(false));
        info!(tag = %spec.tag, socket = %spec.socket.display(), "virtio-fs: backend connected");
        Ok(Fs {
            tag: spec.tag.clone(),
            config: config_space::build(&spec.tag, (NUM_QUEUES - 1) as u32),
            queue_sizes: [spec.queue_size; NUM_QUEUES],
            backend,
            acked_features: 0,
            calls,
            relay: Relay::Pending(relay_calls, socket),
            started: false,
            broken,
            on_lost: None,
        })
    }

    /// Calls `lost` when virtiofsd disconnects while the device is in use.
    pub fn on_backend_lost(mut self, lost: BackendLost) -> Self {
        self.on_lost = Some(lost);
        self
    }

    /// The share's mount tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    fn start(
        &mut self,
        mem: &GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        queues: &[Queue],
        kicks: &[EventFd],
    ) -> Result<(), String> {
        if self.broken.load(Ordering::SeqCst) {
            return Err("the backend is gone".into());
        }
        // Marked first: a half-done setup is stopped on reset as well.
        self.started = true;
        // Started here, not in `new`: the VMM must still be single-threaded
        // when it enters its jail, and a worker started through the seccomp
        // launcher runs under the device filter.
        let relay = self
            .relay
            .start_once(&self.tag, &self.broken, self.on_lost.clone())?;
        // Before the vrings start: their first call must reach the guest.
        relay.attach(interrupt);
        self.backend
            .start(self.acked_features, mem, queues, kicks, &self.calls)
            .map_err(|e| e.to_string())
    }

    fn detach_relay(&self) {
        if let Relay::Running(relay) = &self.relay {
            relay.detach();
        }
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        self.backend.guest_features()
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        let (queues, queue_evts) = activation.take_queues::<NUM_QUEUES>("virtio-fs")?;
        match self.start(&activation.mem, activation.interrupt, &queues, &queue_evts) {
            Ok(()) => {
                info!(tag = %self.tag, "virtio-fs: activated");
                Ok(())
            }
            Err(e) => {
                // A failed request leaves the backend in an unknown state.
                self.broken.store(true, Ordering::SeqCst);
                self.detach_relay();
                Err(ActivateError::Backend(format!("tag {}: {e}", self.tag)))
            }
        }
    }

    fn reset(&mut self) -> bool {
        self.detach_relay();
        if std::mem::take(&mut self.started) && !self.broken.load(Ordering::SeqCst) {
            if let Err(e) = self.backend.stop(NUM_QUEUES) {
                crate::guest_warn!(tag = %self.tag, "virtio-fs: cannot stop the backend's vrings: {e}");
                self.broken.store(true, Ordering::SeqCst);
            }
        }
        // Always resettable: a broken device fails its next activation,
        // which sets DEVICE_NEEDS_RESET again.
        true
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        if let Relay::Running(relay) = std::mem::replace(&mut self.relay, Relay::Failed) {
            if !relay.stop() {
                crate::guest_warn!(tag = %self.tag, "virtio-fs: the interrupt relay had panicked");
            }
        }
    }
}

/// The interrupt relay's life: one state, so it cannot be both started and
/// waiting to start.
enum Relay {
    /// Not started yet: the call eventfds and backend socket it starts with.
    Pending(Vec<EventFd>, UnixStream),
    /// Relays the backend's calls to the guest.
    Running(relay::RelayHandle),
    /// Its start failed, or it was stopped with the device: no relay.
    Failed,
}

impl Relay {
    /// The running relay, started now if this is the first activation.
    fn start_once(
        &mut self,
        tag: &str,
        broken: &Arc<AtomicBool>,
        on_lost: Option<BackendLost>,
    ) -> Result<&relay::RelayHandle, String> {
        // Failed until the start succeeds.
        *self = match std::mem::replace(self, Relay::Failed) {
            Relay::Pending(calls, socket) => Relay::Running(
                relay::spawn(tag, calls, socket, broken.clone(), on_lost)
                    .map_err(|e| format!("cannot start the interrupt relay: {e}"))?,
            ),
            other => other,
        };
        match self {
            Relay::Running(relay) => Ok(relay),
            _ => Err("no interrupt relay".into()),
        }
    }
}

#[cfg(test)]
mod tests;
