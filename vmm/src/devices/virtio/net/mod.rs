//! virtio-net (device ID 1, virtio 1.2 §5.1) backed by a tap device: one
//! RX/TX queue pair, the guest's MAC from the command line, checksum and
//! TSO offloads when the tap takes them, merged RX buffers and EVENT_IDX.
//!
//! See `header.rs` for the feature set and why.

pub(crate) mod backend;
pub mod counters;
pub(crate) mod header;
pub(crate) mod rx;
pub mod spec;
pub mod tap;
pub(crate) mod tx;
mod worker;

use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP;

use super::device_worker::DeviceWorker;
use super::{ActivateError, Activation, VirtioDevice};
use backend::Backend;
use counters::NetCounters;
use spec::MacAddr;
use worker::Worker;

/// Size of the RX and TX queues.
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];

/// The virtio-net device over backend `B` (a `tap::Tap` in the VMM).
pub struct Net<B: Backend> {
    backend: Arc<B>,
    mac: Option<MacAddr>,
    acked_features: u64,
    counters: Arc<NetCounters>,
    worker: DeviceWorker,
}

impl<B: Backend> Net<B> {
    /// A device on `backend`; the guest gets `mac` if given, otherwise its
    /// driver picks a random one.
    pub fn new(backend: B, mac: Option<MacAddr>) -> Net<B> {
        Net {
            backend: Arc::new(backend),
            mac,
            acked_features: 0,
            counters: Arc::default(),
            worker: DeviceWorker::new("virtio-net"),
        }
    }

    /// The device's traffic counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// The config space: `struct virtio_net_config` up to
    /// `max_virtqueue_pairs` (mac, status, one pair). Read-only to the
    /// driver: the MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR
    /// (not offered).
    fn config(&self) -> [u8; 10] {
        let mut c = [0u8; 10];
        if let Some(mac) = self.mac {
            c[..6].copy_from_slice(&mac.0);
        }
        // The tap carries frames whenever the VMM runs: the link is up.
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    fn stop_worker(&mut self) -> bool {
        let ok = self.worker.stop();
        // A driver that comes next may not take offloaded frames.
        if let Err(e) = self.backend.set_offload(0) {
            crate::guest_warn!("virtio-net: cannot turn the tap's offloads off: {e}");
        }
        ok
    }
}

impl<B: Backend> VirtioDevice for Net<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        header::offered_features(self.backend.supports_offloads(), self.mac.is_some())
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_space(&self.config(), offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        self.worker.ensure_idle()?;
        let (queues, evts) = activation.take_queues("virtio-net")?;
        let offloads = header::tap_offloads(self.acked_features);
        if let Err(e) = self.backend.set_offload(offloads) {
            // Safe to go on: without them the tap just sends plain frames.
            crate::guest_warn!("virtio-net: cannot set the tap's offloads {offloads:#x}: {e}");
        }
        let worker = Worker::new(
            activation.mem,
            activation.interrupt,
            queues,
            evts,
            self.backend.clone(),
            self.acked_features,
            self.counters.clone(),
        )
        .map_err(ActivateError::Worker)?;
        self.worker.start(worker.spawn())?;
        debug!(
            features = format_args!("{:#x}", self.acked_features),
            offloads, "virtio-net: activated"
        );
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker()
    }
}

#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod tests;
