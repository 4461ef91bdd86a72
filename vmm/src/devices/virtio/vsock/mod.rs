//! virtio-vsock (device ID 19) with a Firecracker-style hybrid backend: the
//! host end of every guest stream is a Unix socket.
//!
//! Host → guest: a client connects to `uds_path`, writes `CONNECT <port>\n`,
//! reads `OK <host port>\n`, then the stream is the guest's. Guest → host: a
//! connection to CID 2 port P is forwarded to `<uds_path>_P`.

mod connection;
pub(crate) mod handshake;
pub(crate) mod muxer;
pub use muxer::MAX_CONNECTIONS;
pub(crate) mod packet;
pub(crate) mod uds;
mod worker;

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::device_worker::DeviceWorker;
use super::{ActivateError, Activation, VirtioDevice};
use muxer::Muxer;
use worker::Worker;

/// Queue size for rx, tx and event queues.
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Error from creating the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0–2 are reserved and the upper 32 bits must be zero (§5.10.4).
    #[error("invalid guest CID {0}: must be between 3 and 4294967294")]
    InvalidCid(u64),
    /// A live listener already owns the path.
    #[error("vsock socket {} is in use by another process", .0.display())]
    InUse(PathBuf),
    /// The path exists and is something other than a socket.
    #[error("vsock socket path {} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// Binding, probing or removing the socket failed.
    #[error("vsock socket {}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
}

/// Payload bytes the device has moved, per direction (written by its worker,
/// read by the control API).
#[derive(Debug, Default)]
pub struct VsockBytes {
    /// Host sockets to the guest.
    pub host_to_guest: AtomicU64,
    /// The guest to host sockets.
    pub guest_to_host: AtomicU64,
}

/// The virtio-vsock device.
pub struct Vsock {
    guest_cid: u64,
    uds_path: PathBuf,
    socket_id: (u64, u64),
    listener: UnixListener,
    worker: DeviceWorker,
    bytes: Arc<VsockBytes>,
}

impl Vsock {
    /// Creates the device for guest `guest_cid` and binds the host listener
    /// at `uds_path` now, so host clients can queue before the guest is up.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<Vsock, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let (listener, socket_id) = uds::bind_listener(uds_path)?;
        Ok(Vsock {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            socket_id,
            listener,
            worker: DeviceWorker::new("vsock"),
            bytes: Arc::default(),
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Where host clients connect.
    pub fn uds_path(&self) -> &Path {
        &self.uds_path
    }

    /// The device's byte counters.
    pub fn bytes(&self) -> Arc<VsockBytes> {
        self.bytes.clone()
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// EVENT_IDX: the guest kicks and is interrupted only when the other
    /// side asked for it, which saves VM exits on every busy stream.
    fn features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1) | (1u64 << VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }, read-only.
        let config = self.guest_cid.to_le_bytes();
        super::read_config_space(&config, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        self.worker.ensure_idle()?;
        let (queues, queue_evts) = activation.take_queues("vsock")?;
        // The worker gets its own descriptor; ours keeps the socket bound
        // and listening across driver resets.
        let listener = self.listener.try_clone().map_err(ActivateError::Worker)?;
        let muxer = Muxer::new(self.guest_cid, self.uds_path.clone(), listener)
            .map_err(ActivateError::Worker)?;
        let worker = Worker::new(
            activation.mem,
            activation.interrupt,
            queues,
            queue_evts,
            muxer,
        )
        .map_err(ActivateError::Worker)?
        .with_bytes(self.bytes.clone());
        self.worker.start(worker.spawn())
    }

    fn reset(&mut self) -> bool {
        self.worker.stop()
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.worker.stop();
        uds::unlink_if_ours(&self.uds_path, self.socket_id);
    }
}

#[cfg(test)]
mod tests;
