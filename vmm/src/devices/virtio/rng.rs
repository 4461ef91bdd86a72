//! virtio-rng / entropy device (device ID 4, virtio 1.2 §5.4): fills the
//! guest's device-writable buffers from the host's getrandom(2), so the
//! guest's CRNG is seeded within milliseconds of boot.

use tracing::{debug, trace};
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::{Queue, Writer};

use super::device_worker::DeviceWorker;
use super::queue_worker::{self, Processed, QueueHandler};
use super::{ActivateError, Activation, GuestMemory, VirtioDevice};

/// Size of the single request queue.
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 1] = [QUEUE_SIZE];
/// Most bytes given per descriptor chain: a guest cannot make one request
/// cost the host more than this (Linux asks for at most a page or so).
pub const MAX_BYTES_PER_CHAIN: usize = 64 * 1024;

/// The virtio-rng device.
pub struct Rng {
    worker: DeviceWorker,
}

impl Rng {
    /// Creates the device; it needs no host resources until activation.
    pub fn new() -> Rng {
        Rng {
            worker: DeviceWorker::new("virtio-rng"),
        }
    }
}

impl Default for Rng {
    fn default() -> Rng {
        Rng::new()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // The entropy device has no configuration space.
        debug!(offset, len = data.len(), "rng: read of absent config space");
        data.fill(0);
    }

    fn activate(&mut self, mut activation: Activation) -> Result<(), ActivateError> {
        self.worker.ensure_idle()?;
        let ([queue], [evt]) = activation.take_queues("virtio-rng")?;
        let handler = RngHandler {
            buf: vec![0; MAX_BYTES_PER_CHAIN],
            served_any: false,
        };
        debug!("virtio-rng: activated");
        self.worker.start(queue_worker::spawn(
            "virtio-rng",
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

/// The worker's side: one reusable buffer of `MAX_BYTES_PER_CHAIN`.
struct RngHandler {
    buf: Vec<u8>,
    /// Whether the first request was logged (one line, not one per request).
    served_any: bool,
}

impl QueueHandler for RngHandler {
    fn process(&mut self, mem: &GuestMemory, queue: &mut Queue) -> Result<Processed, String> {
        queue_worker::serve_chains(mem, queue, |chain| match Writer::new(mem, chain) {
            Ok(mut w) => {
                let n = w.available_bytes().min(MAX_BYTES_PER_CHAIN);
                let len = self.fill(&mut w, n);
                if !self.served_any && len > 0 {
                    self.served_any = true;
                    debug!(bytes = len, "virtio-rng: first entropy request served");
                }
                trace!(bytes = len, "virtio-rng: request served");
                len
            }
            Err(e) => {
                // A bad buffer is the guest's loss; the queue still works.
                debug!("virtio-rng: unusable descriptor chain: {e}");
                0
            }
        })
    }
}

impl RngHandler {
    /// Writes `n` random bytes into the chain; returns how many went in.
    fn fill(&mut self, w: &mut Writer<'_>, n: usize) -> u32 {
        let buf = &mut self.buf[..n];
        if let Err(e) = getrandom(buf) {
            // Never hand the guest predictable bytes: give it nothing.
            crate::guest_warn!("rng: getrandom failed: {e}");
            return 0;
        }
        match std::io::Write::write_all(w, buf) {
            // n <= MAX_BYTES_PER_CHAIN, which fits a u32.
            Ok(()) => u32::try_from(n).unwrap_or(0),
            Err(e) => {
                debug!("rng: cannot write to the guest buffer: {e}");
                u32::try_from(w.bytes_written()).unwrap_or(0)
            }
        }
    }
}

/// Fills `buf` from the kernel's CSPRNG (the urandom source, never blocking
/// after boot), retrying on EINTR and short reads.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n.unsigned_abs();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
