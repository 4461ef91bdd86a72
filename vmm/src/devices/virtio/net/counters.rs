//! Per-device traffic counters, written by the device's worker and read
//! by the control API's `counters` request.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Live counters of one virtio-net device.
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames given to the guest.
    pub rx_packets: AtomicU64,
    /// Their bytes (Ethernet frame, without the virtio-net header).
    pub rx_bytes: AtomicU64,
    /// Frames from the tap dropped: too big for the guest's buffers, or
    /// with offloads the guest did not negotiate.
    pub rx_dropped: AtomicU64,
    /// Guest RX buffers that were unusable (bad addresses, no room for the
    /// header) and were returned empty.
    pub rx_bad_buffers: AtomicU64,
    /// Times reception paused until the guest posted more buffers.
    pub rx_waits: AtomicU64,
    /// Frames from the guest written to the tap.
    pub tx_packets: AtomicU64,
    /// Their bytes (without the virtio-net header).
    pub tx_bytes: AtomicU64,
    /// Guest TX chains rejected as malformed (bad descriptors, too short or
    /// too long, a header with offloads it did not negotiate).
    pub tx_malformed: AtomicU64,
    /// Frames the tap refused.
    pub tx_dropped: AtomicU64,
}

/// A snapshot of `NetCounters`, as the API reports it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NetCounterValues {
    /// See `NetCounters::rx_packets`.
    pub rx_packets: u64,
    /// See `NetCounters::rx_bytes`.
    pub rx_bytes: u64,
    /// See `NetCounters::rx_dropped`.
    pub rx_dropped: u64,
    /// See `NetCounters::rx_bad_buffers`.
    pub rx_bad_buffers: u64,
    /// See `NetCounters::rx_waits`.
    pub rx_waits: u64,
    /// See `NetCounters::tx_packets`.
    pub tx_packets: u64,
    /// See `NetCounters::tx_bytes`.
    pub tx_bytes: u64,
    /// See `NetCounters::tx_malformed`.
    pub tx_malformed: u64,
    /// See `NetCounters::tx_dropped`.
    pub tx_dropped: u64,
}

/// Adds `n` to a counter (single writer; relaxed is enough for statistics).
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl NetCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> NetCounterValues {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetCounterValues {
            rx_packets: g(&self.rx_packets),
            rx_bytes: g(&self.rx_bytes),
            rx_dropped: g(&self.rx_dropped),
            rx_bad_buffers: g(&self.rx_bad_buffers),
            rx_waits: g(&self.rx_waits),
            tx_packets: g(&self.tx_packets),
            tx_bytes: g(&self.tx_bytes),
            tx_malformed: g(&self.tx_malformed),
            tx_dropped: g(&self.tx_dropped),
        }
    }
}
