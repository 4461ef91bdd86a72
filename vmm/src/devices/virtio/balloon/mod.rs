//! virtio-balloon (device ID 5, virtio 1.2 §5.5) with free page reporting
//! only: the guest hands blocks of free memory (2 MiB and up, Linux's
//! `page_reporting_order`) to the host on the reporting queue, and the
//! host punches them out of guest RAM's memfd (see `hole`), so memory a pod
//! touched once and freed goes back to the host within seconds.
//!
//! The host never sets a target (`num_pages` stays 0), so the balloon
//! itself is never inflated; the inflate and deflate queues exist because
//! the driver always sets them up. Not offered: the stats and free-page-hint
//! queues and DEFLATE_ON_OOM (nothing to deflate). PAGE_POISON is offered:
//! Linux turns reporting off without it when the guest fills freed pages
//! (`init_on_free=1`, page poisoning). The driver then writes the value
//! free pages hold; a punched page reads as zeroes, so ranges are given
//! back only while that value is 0 (init_on_free), and otherwise just
//! acknowledged.

mod hole;
pub mod spec;
mod worker;

use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;

use super::device_worker::DeviceWorker;
use super::{read_config_space, ActivateError, Activation, VirtioDevice};
pub use hole::{punch, HoleError, PUNCH_HOLE_MODE};
use spec::{
    CONFIG_ACTUAL, CONFIG_NUM_PAGES, CONFIG_POISON_VAL, CONFIG_SIZE, F_PAGE_POISON, F_REPORTING,
    REPORTING_QUEUE,
};
pub use worker::{BalloonCounters, MAX_RANGES_PER_CHAIN};

/// Size of each queue (Linux needs at least 32 on the reporting queue).
pub const QUEUE_SIZE: u16 = 128;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];
// Linux refuses a reporting queue smaller than PAGE_REPORTING_CAPACITY.
const _: () = assert!(QUEUE_SIZE >= 32);

/// The virtio-balloon device.
pub struct Balloon {
    /// The features the driver accepted.
    acked: u64,
    /// What the driver last wrote to `actual` (pages in its balloon).
    actual: u32,
    /// What the driver wrote to `poison_val` (the content of its free pages).
    poison_val: u32,
    counters: Arc<BalloonCounters>,
    worker: DeviceWorker,
}

impl Balloon {
    /// Creates the device; it needs no host resources until activation.
    pub fn new() -> Balloon {
        Balloon {
            acked: 0,
            actual: 0,
            poison_val: 0,
            counters: Arc::new(BalloonCounters::default()),
            worker: DeviceWorker::new("virtio-balloon"),
        }
    }

    /// What the device has given back so far.
    pub fn counters(&self) -> Arc<BalloonCounters> {
        self.counters.clone()
    }

    fn reporting(&self) -> bool {
        self.acked & (1u64 << F_REPORTING) != 0
    }

    /// Whether a reported page may become a hole (which reads as zeroes):
    /// unless the driver said its free pages hold a non-zero poison value.
    fn may_punch(&self) -> bool {
        self.acked & (1u64 << F_PAGE_POISON) == 0 || self.poison_val == 0
    }

    fn config(&self) -> [u8; CONFIG_SIZE] {
        let mut c = [0u8; CONFIG_SIZE];
        // num_pages: no target, ever.
        c[CONFIG_NUM_PAGES..CONFIG_NUM_PAGES + 4].copy_from_slice(&0u32.to_le_bytes());
        c[CONFIG_ACTUAL..CONFIG_ACTUAL + 4].copy_from_slice(&self.actual.to_le_bytes());
        c[CONFIG_POISON_VAL..CONFIG_POISON_VAL + 4].copy_from_slice(&self.poison_val.to_le_bytes());
        c
    }
}

impl Default for Balloon {
    fn default() -> Balloon {
        Balloon::new()
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        (1u64 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
            | (1u64 << F_REPORTING)
            | (1u64 << F_PAGE_POISON)
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn queues_in_use(&self) -> usize {
        if self.reporting() {
            REPORTING_QUEUE + 1
        } else {
            REPORTING_QUEUE
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` and `poison_val` are the driver's to write
        // (§5.5.6.3); Linux writes each whole, as a le32.
        match <[u8; 4]>::try_from(data) {
            Ok(v) if offset == CONFIG_ACTUAL as u64 => self.actual = u32::from_le_bytes(v),
            Ok(v) if offset == CONFIG_POISON_VAL as u64 => {
                self.poison_val = u32::from_le_bytes(v);
            }
            _ => debug!(
                offset,
                len = data.len(),
                "virtio-balloon: ignored config write"
            ),
        }
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        self.worker.ensure_idle()?;
        let (queues, evts) = if self.reporting() {
            let (q, e) = activation.take_queues::<3>("virtio-balloon")?;
            (Vec::from(q), Vec::from(e))
        } else {
            let (q, e) = activation.take_queues::<2>("virtio-balloon")?;
            (Vec::from(q), Vec::from(e))
        };
        let punch = self.may_punch();
        if self.reporting() && !punch {
            tracing::info!(
                poison_val = self.poison_val,
                "virtio-balloon: the guest poisons its free pages; reported pages are kept"
            );
        }
        debug!(reporting = self.reporting(), "virtio-balloon: activated");
        self.worker.start(worker::spawn(
            activation.mem,
            activation.interrupt,
            queues,
            evts,
            worker::Reporting {
                punch,
                counters: self.counters.clone(),
            },
        ))
    }

    fn reset(&mut self) -> bool {
        let stopped = self.worker.stop();
        self.acked = 0;
        self.actual = 0;
        self.poison_val = 0;
        stopped
    }
}

#[cfg(test)]
mod tests;
