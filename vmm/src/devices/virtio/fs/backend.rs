//! The vhost-user connection of one virtio-fs device to its virtiofsd: the
//! messages of each phase, on the `vhost` crate's frontend.
//!
//! - startup: SET_OWNER, features and protocol features (fail fast here if
//!   virtiofsd is not there or does not speak what we need);
//! - guest DRIVER_OK: SET_FEATURES, SET_MEM_TABLE (the memfd regions), then
//!   per vring NUM, ADDR, BASE, CALL, KICK and ENABLE;
//! - guest reset: disable and GET_VRING_BASE, which stops each vring.
//!
//! Activation and reset run on a vCPU thread (the guest's MMIO write), so
//! every socket read and write is bounded by `IO_TIMEOUT`: a hung backend
//! stalls that vCPU for at most that long, then the device is failed.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::GuestMemory;

/// Virtqueues of the device: hiprio, then one request queue.
pub const NUM_QUEUES: usize = 2;
/// Longest wait for one message to or from the backend.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection attempts while the backend's socket refuses.
const CONNECT_TRIES: u32 = 5;
/// Pause between those attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// Device features we pass through from the backend to the guest: ring
/// features our split-ring transport handles, nothing device-specific
/// (VIRTIO_FS_F_NOTIFICATION would need a notification queue).
const GUEST_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// Error talking to the vhost-user backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The socket could not be connected (nothing listens, or no permission).
    #[error("cannot connect to virtiofsd at {}: {source} (is virtiofsd running?)", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A vhost-user request failed (the backend refused, closed or timed out).
    #[error("vhost-user {step} failed: {source}")]
    Protocol {
        /// The request.
        step: &'static str,
        /// Why.
        source: vhost::Error,
    },
    /// The backend does not offer something the device needs.
    #[error("the backend does not support {0}")]
    Unsupported(&'static str),
    /// The backend serves fewer queues than the device has.
    #[error("the backend serves {0} queues, the device needs {NUM_QUEUES}")]
    TooFewQueues(u64),
    /// A vring address is not in guest RAM.
    #[error("vring {index}: {what} {addr:#x} is not in guest memory")]
    RingAddress {
        /// Queue index.
        index: usize,
        /// Which ring part.
        what: &'static str,
        /// Its guest address.
        addr: u64,
    },
    /// A guest memory region cannot be shared (no backing file).
    #[error("guest memory cannot be shared with the backend: {0}")]
    Memory(vhost::Error),
}

fn step(step: &'static str) -> impl FnOnce(vhost::Error) -> BackendError {
    move |source| BackendError::Protocol { step, source }
}

/// One connected, negotiated vhost-user backend.
pub struct Backend {
    frontend: Frontend,
    /// The same socket, kept to watch for the backend hanging up.
    socket: UnixStream,
    /// Virtio features the backend offers.
    features: u64,
    /// Whether VHOST_USER_F_PROTOCOL_FEATURES was negotiated (then vrings
    /// start disabled and need SET_VRING_ENABLE).
    protocol: bool,
}

impl Backend {
    /// Connects to `path` and negotiates what does not depend on the guest.
    pub fn connect(path: &Path) -> Result<Backend, BackendError> {
        let connect_err = |source| BackendError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let socket = connect_socket(path).map_err(connect_err)?;
        socket
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| socket.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(connect_err)?;
        let watch = socket.try_clone().map_err(connect_err)?;
        let mut frontend = Frontend::from_stream(socket, NUM_QUEUES as u64);
        frontend.set_owner().map_err(step("SET_OWNER"))?;
        let features = frontend.get_features().map_err(step("GET_FEATURES"))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(BackendError::Unsupported("VIRTIO_F_VERSION_1"));
        }
        let protocol = features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
        if protocol {
            negotiate_protocol(&mut frontend)?;
        }
        debug!(features, protocol, "virtio-fs: backend negotiated");
        Ok(Backend {
            frontend,
            socket: watch,
            features,
            protocol,
        })
    }

    /// Features to offer the guest.
    pub fn guest_features(&self) -> u64 {
        self.features & GUEST_FEATURES
    }

    /// The connection, to watch for the backend going away.
    pub fn socket(&self) -> &UnixStream {
        &self.socket
    }

    /// Hands the guest's negotiated features, its memory and the vrings to
    /// the backend and enables them. `kicks[i]` is the guest's notification
    /// eventfd of queue `i`, `calls[i]` what the backend signals when it
    /// used buffers of it.
    pub fn start(
        &mut self,
        acked: u64,
        mem: &GuestMemory,
        queues: &[Queue],
        kicks: &[EventFd],
        calls: &[EventFd],
    ) -> Result<(), BackendError> {
        let mut features = acked & self.features;
        if self.protocol {
            features |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        let fe = &mut self.frontend;
        fe.set_features(features).map_err(step("SET_FEATURES"))?;
        let regions = mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(BackendError::Memory)?;
        fe.set_mem_table(&regions).map_err(step("SET_MEM_TABLE"))?;
        for (index, ((queue, kick), call)) in queues.iter().zip(kicks).zip(calls).enumerate() {
            let host = |what, addr| {
                mem.get_host_address(GuestAddress(addr))
                    .map(|p| p as u64)
                    .map_err(|_| BackendError::RingAddress { index, what, addr })
            };
            let ring = VringConfigData {
                queue_max_size: queue.max_size(),
                queue_size: queue.size(),
                flags: 0,
                desc_table_addr: host("descriptor table", queue.desc_table())?,
                used_ring_addr: host("used ring", queue.used_ring())?,
                avail_ring_addr: host("available ring", queue.avail_ring())?,
                log_addr: None,
            };
            fe.set_vring_num(index, queue.size())
                .map_err(step("SET_VRING_NUM"))?;
            fe.set_vring_addr(index, &ring)
                .map_err(step("SET_VRING_ADDR"))?;
            fe.set_vring_base(index, queue.next_avail())
                .map_err(step("SET_VRING_BASE"))?;
            fe.set_vring_call(index, call)
                .map_err(step("SET_VRING_CALL"))?;
            fe.set_vring_kick(index, kick)
                .map_err(step("SET_VRING_KICK"))?;
            if self.protocol {
                fe.set_vring_enable(index, true)
                    .map_err(step("SET_VRING_ENABLE"))?;
            }
        }
        Ok(())
    }

    /// Stops the first `count` vrings: the backend stops serving them and
    /// answers with where it stopped (which a fresh start does not need).
    pub fn stop(&mut self, count: usize) -> Result<(), BackendError> {
        for index in 0..count {
            if self.protocol {
                self.frontend
                    .set_vring_enable(index, false)
                    .map_err(step("SET_VRING_ENABLE"))?;
            }
            let base = self
                .frontend
                .get_vring_base(index)
                .map_err(step("GET_VRING_BASE"))?;
            debug!(index, base, "virtio-fs: vring stopped");
        }
        Ok(())
    }
}

/// Connects, retrying briefly while the socket refuses: virtiofsd creates
/// the socket file before it listens on it (the vhost crate's own
/// `Frontend::connect` waits the same way).
fn connect_socket(path: &Path) -> io::Result<UnixStream> {
    let mut tries = CONNECT_TRIES;
    loop {
        match UnixStream::connect(path) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && tries > 1 => {
                tries -= 1;
                std::thread::sleep(CONNECT_RETRY);
            }
            other => return other,
        }
    }
}

/// Takes the protocol features we use: MQ to check the queue count, and
/// REPLY_ACK so every request is acknowledged and a failure is seen at the
/// request that caused it, not later.
fn negotiate_protocol(fe: &mut Frontend) -> Result<(), BackendError> {
    let offered = fe
        .get_protocol_features()
        .map_err(step("GET_PROTOCOL_FEATURES"))?;
    let wanted = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
    let acked = offered & wanted;
    fe.set_protocol_features(acked)
        .map_err(step("SET_PROTOCOL_FEATURES"))?;
    if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }
    if acked.contains(VhostUserProtocolFeatures::MQ) {
        let n = fe.get_queue_num().map_err(step("GET_QUEUE_NUM"))?;
        if n < NUM_QUEUES as u64 {
            return Err(BackendError::TooFewQueues(n));
        }
    }
    Ok(())
}
