//! virtio-blk (device ID 2, virtio 1.2 §5.2) on a raw image file or block
//! device: read, write, flush and get-id, one request queue served by its
//! own worker thread.
//!
//! Not rust-vmm's `virtio-blk` crate: it is not published on crates.io
//! (only in the vm-virtio repository), so the request handling is ours, on
//! virtio-queue's `Reader`/`Writer`.

pub mod disk;
pub(crate) mod request;

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;

use super::device_worker::DeviceWorker;
use super::queue_worker::{self, Processed, QueueHandler};
use super::{ActivateError, Activation, GuestMemory, VirtioDevice};
use disk::{DiskImage, ID_BYTES};
use request::{Backend, IO_CHUNK};

/// Size of the request queue.
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];
/// Most data segments per request: a chain also needs the header and the
/// status, and without indirect descriptors it must fit the queue.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest data segment, in bytes. With SEG_MAX it bounds one request to
/// about 32 MiB, so no request keeps the worker busy for long.
pub const SIZE_MAX: u32 = 128 << 10;
/// Largest data length of one request; longer ones get IOERR.
const MAX_DATA: usize = SEG_MAX as usize * SIZE_MAX as usize;
/// Bytes of `struct virtio_blk_config` we fill in: capacity, size_max,
/// seg_max. The rest (geometry, topology, discard, ...) reads as zero.
const CONFIG_LEN: usize = 16;

/// The virtio-blk device.
pub struct Block {
    path: PathBuf,
    file: Arc<File>,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_BYTES],
    acked_features: u64,
    worker: DeviceWorker,
}

impl Block {
    /// Creates the device over an opened, checked image.
    pub fn new(image: DiskImage) -> Block {
        Block {
            path: image.path,
            file: Arc::new(image.file),
            read_only: image.read_only,
            sectors: image.sectors,
            id: image.id,
            acked_features: 0,
            worker: DeviceWorker::new("virtio-blk"),
        }
    }

    /// The config space. Read-only to the driver: only `writeback` is
    /// writable, with VIRTIO_BLK_F_CONFIG_WCE, which we do not offer.
    fn config(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        c[0..8].copy_from_slice(&self.sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_BLK_F_SIZE_MAX);
        if self.read_only {
            f |= 1u64 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        super::read_config_space(&config, offset, data);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        self.worker.ensure_idle()?;
        let ([queue], [evt]) = activation.take_queues("virtio-blk")?;
        let handler = BlockHandler {
            file: self.file.clone(),
            sectors: self.sectors,
            read_only: self.read_only,
            write_through: self.acked_features & (1u64 << VIRTIO_BLK_F_FLUSH) == 0,
            id: self.id,
            buf: vec![0; IO_CHUNK],
        };
        debug!(path = %self.path.display(), "virtio-blk: activated");
        self.worker.start(queue_worker::spawn(
            "virtio-blk",
            activation.mem,
            activation.interrupt,
            queue,
            evt,
            handler,
        ))
    }

    fn reset(&mut self) -> bool {
        self.worker.stop()
    }
}

/// The worker's side of the device.
struct BlockHandler {
    file: Arc<File>,
    sectors: u64,
    read_only: bool,
    write_through: bool,
    id: [u8; ID_BYTES],
    buf: Vec<u8>,
}

impl QueueHandler for BlockHandler {
    fn process(&mut self, mem: &GuestMemory, queue: &mut Queue) -> Result<Processed, String> {
        let backend = Backend {
            file: &self.file,
            sectors: self.sectors,
            read_only: self.read_only,
            write_through: self.write_through,
            max_data: MAX_DATA,
            id: &self.id,
        };
        queue_worker::serve_chains(mem, queue, |chain| {
            request::handle(mem, chain, &backend, &mut self.buf)
        })
    }
}

#[cfg(test)]
mod tests;
