//! A worker thread for devices with a single request queue (rng, block):
//! it waits on the queue's notification eventfd and a stop eventfd, and
//! hands every wake-up to the device's `QueueHandler`.
//!
//! The handler does blocking host I/O (getrandom, pread/pwrite, fdatasync),
//! each bounded per request, so the loop never waits on the guest.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use tracing::error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device_worker::{self, watch_inputs, WorkerHandle};
use super::{GuestMemory, Interrupt};

const TOKEN_QUEUE: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// Most chains served per wake-up before the worker checks for a stop
/// request: a guest that refills the queue as fast as it is drained must
/// not keep a driver reset (which joins this thread) waiting.
pub const CHAIN_BUDGET: usize = 64;

/// What one `QueueHandler::process` call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Processed {
    /// Some chain went to the used ring.
    pub used: bool,
    /// The budget ran out with chains possibly left: call again.
    pub more: bool,
}

/// Serves the chains of one virtqueue.
pub trait QueueHandler: Send + 'static {
    /// Completes up to `CHAIN_BUDGET` chains the driver made available. An
    /// error means the guest broke the queue itself (not just one request)
    /// and the device needs a reset.
    fn process(&mut self, mem: &GuestMemory, queue: &mut Queue) -> Result<Processed, String>;
}

/// Serves available chains with `serve` (which returns the used length)
/// within the budget: the loop both device handlers share.
pub fn serve_chains<F>(
    mem: &GuestMemory,
    queue: &mut Queue,
    mut serve: F,
) -> Result<Processed, String>
where
    F: FnMut(virtio_queue::DescriptorChain<&GuestMemory>) -> u32,
{
    let mut done = Processed::default();
    for _ in 0..CHAIN_BUDGET {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => return Err(format!("request queue: {e}")),
        };
        let Some(chain) = chain else {
            return Ok(done);
        };
        let head = chain.head_index();
        let len = serve(chain);
        queue
            .add_used(mem, head, len)
            .map_err(|e| format!("used ring: {e}"))?;
        done.used = true;
    }
    done.more = true;
    Ok(done)
}

/// Starts a thread named `name` serving `queue` with `handler`.
pub fn spawn<H: QueueHandler>(
    name: &'static str,
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    queue: Queue,
    queue_evt: EventFd,
    handler: H,
) -> std::io::Result<WorkerHandle> {
    let stop = EventFd::new(EFD_NONBLOCK)?;
    let epoll = Epoll::new()?;
    watch_inputs(
        &epoll,
        &[
            (TOKEN_QUEUE, queue_evt.as_raw_fd()),
            (TOKEN_STOP, stop.as_raw_fd()),
        ],
    )?;
    let worker = Worker {
        name,
        mem,
        interrupt,
        queue,
        queue_evt,
        epoll,
        handler,
    };
    // The epoll set holds `stop`'s fd number; the handle keeps it open.
    WorkerHandle::spawn(name, stop, move || worker.run())
}

struct Worker<H> {
    name: &'static str,
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    queue: Queue,
    queue_evt: EventFd,
    epoll: Epoll,
    handler: H,
}

impl<H: QueueHandler> Worker<H> {
    fn run(mut self) {
        let mut events = [EpollEvent::default(); 2];
        // Buffers may have been queued before the first notification.
        let mut kick = true;
        loop {
            if kick {
                let more = match self.process() {
                    Ok(more) => more,
                    Err(e) => {
                        device_worker::report_broken(self.name, &*self.interrupt, &e);
                        // Stop touching the queue; wait for the driver's reset.
                        device_worker::wait_for_stop(&self.epoll, TOKEN_STOP, &[&self.queue_evt]);
                        return;
                    }
                };
                kick = more;
            }
            // With work left, only look for a stop request (timeout 0).
            let timeout = if kick { 0 } else { -1 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    error!("{}: epoll_wait failed, worker exits: {e}", self.name);
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return,
                    _ => {
                        // Non-blocking: EAGAIN only means it is drained already.
                        let _ = self.queue_evt.read();
                        kick = true;
                    }
                }
            }
        }
    }

    /// Serves one budget of chains; returns whether more may be waiting.
    fn process(&mut self) -> Result<bool, String> {
        let done = self.handler.process(&self.mem, &mut self.queue)?;
        if !done.used {
            return Ok(done.more);
        }
        let needed = self
            .queue
            .needs_notification(&self.mem)
            .map_err(|e| format!("used event: {e}"))?;
        if needed {
            if let Err(e) = self.interrupt.trigger(VIRTIO_MMIO_INT_VRING) {
                crate::guest_warn!("{}: cannot interrupt the guest: {e}", self.name);
            }
        }
        Ok(done.more)
    }
}
