//! Virtio devices on the virtio-mmio transport (virtio 1.x, modern only).

pub mod balloon;
pub mod block;
mod device_worker;
pub mod fs;
pub mod mmio;
pub mod net;
mod queue_worker;
pub mod rng;
#[cfg(test)]
mod test_driver;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as the virtio devices see it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Raises the device's interrupt in the guest (used-buffer or config change).
pub trait Interrupt: Send + Sync {
    /// Sets `status` bits (VIRTIO_MMIO_INT_VRING / _CONFIG) and injects the IRQ.
    fn trigger(&self, status: u32) -> std::io::Result<()>;

    /// Marks the device as needing a reset (DEVICE_NEEDS_RESET) after the
    /// guest broke it, and tells the driver with a config-change interrupt.
    /// The default only raises the interrupt; transports override it to also
    /// set the status bit.
    fn set_needs_reset(&self) -> std::io::Result<()> {
        self.trigger(virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG)
    }
}

/// Error from activating a virtio device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up the queues in a way the device cannot use.
    #[error("invalid queue configuration: {0}")]
    BadQueues(String),
    /// The device's worker could not be started.
    #[error("cannot start device worker: {0}")]
    Worker(#[source] std::io::Error),
    /// An external (vhost-user) backend refused or failed the setup.
    #[error("vhost-user backend: {0}")]
    Backend(String),
}

/// What the transport hands a device when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest RAM.
    pub mem: GuestMemory,
    /// The device's interrupt line.
    pub interrupt: Arc<dyn Interrupt>,
    /// The queues the driver set up: the first `queues_in_use` of the
    /// `queue_max_sizes` entries.
    pub queues: Vec<Queue>,
    /// `queue_evts[i]` is signalled when the driver notifies queue `i`.
    pub queue_evts: Vec<EventFd>,
}

impl Activation {
    /// Takes the queues and their eventfds as exactly `N` of each, or fails
    /// the activation of `device` (the transport gives one per queue the
    /// device declared, so a mismatch is our bug).
    pub fn take_queues<const N: usize>(
        &mut self,
        device: &str,
    ) -> Result<([Queue; N], [EventFd; N]), ActivateError> {
        let queues = std::mem::take(&mut self.queues);
        let queue_evts = std::mem::take(&mut self.queue_evts);
        let (nq, ne) = (queues.len(), queue_evts.len());
        match (
            <[Queue; N]>::try_from(queues),
            <[EventFd; N]>::try_from(queue_evts),
        ) {
            (Ok(queues), Ok(evts)) => Ok((queues, evts)),
            _ => Err(ActivateError::BadQueues(format!(
                "{device} needs exactly {N} queues and {N} eventfds, got {nq} and {ne}"
            ))),
        }
    }
}

/// A virtio device behind a transport. The transport owns the generic
/// registers; the device owns features, config space and the queues once
/// the driver sets DRIVER_OK.
pub trait VirtioDevice: Send {
    /// Virtio device ID (e.g. 19 for vsock).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device feature bits offered to the driver (VIRTIO_F_VERSION_1
    /// included). The default offers nothing else.
    fn features(&self) -> u64 {
        1u64 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1
    }
    /// Records the features the driver accepted (the transport checked that
    /// it offered them). The default forgets them: a device that offers no
    /// optional feature has nothing to act on.
    fn ack_features(&mut self, _features: u64) {}
    /// How many of the declared queues the driver sets up and the device
    /// gets at activation, given the features it accepted: a queue that
    /// belongs to a declined feature is absent, and Linux numbers the queues
    /// after it one lower, so only a tail of optional queues can be left
    /// out. The default: every declared queue.
    fn queues_in_use(&self) -> usize {
        self.queue_max_sizes().len()
    }
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space. The default ignores
    /// the write: none of our devices offers a driver-writable field (each
    /// says why at its config space).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        tracing::debug!(
            device_type = self.device_type(),
            offset,
            len = data.len(),
            "virtio: ignored write to read-only config space"
        );
    }
    /// Starts the device: the driver set DRIVER_OK.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the device on a driver reset; returns false if it cannot be reset.
    fn reset(&mut self) -> bool;
}

/// Copies the bytes of a device's config space at `offset` into `data`; bytes
/// past its end read as zero. The guest picks `offset` and the length, so
/// every index is checked.
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o).copied())
            .unwrap_or(0);
    }
}
