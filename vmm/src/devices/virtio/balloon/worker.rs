//! The balloon's worker thread: one epoll loop over the notifications of
//! its queues (inflate, deflate, and reporting when negotiated) and a stop
//! eventfd. Reported ranges are punched out of guest RAM's memfd before
//! their buffer goes back to the guest: once it is back, the guest may
//! reuse the pages, and a late punch would wipe live data.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::hole;
use super::spec::REPORTING_QUEUE;
use crate::devices::virtio::device_worker::{self, watch_inputs, WorkerHandle};
use crate::devices::virtio::queue_worker::CHAIN_BUDGET;
use crate::devices::virtio::{GuestMemory, Interrupt};

/// Most ranges taken from one reporting chain. Linux reports at most 32
/// (PAGE_REPORTING_CAPACITY) per chain; a chain through an indirect table
/// could otherwise hold 65535, each a syscall.
pub const MAX_RANGES_PER_CHAIN: usize = 64;

/// The epoll token of the stop eventfd (queue `i` uses token `i`).
const TOKEN_STOP: u64 = u64::MAX;

/// What the balloon has done, for tests and the VMM's log.
#[derive(Debug, Default)]
pub struct BalloonCounters {
    /// Bytes of reported free memory punched out of guest RAM's file.
    pub reported_bytes: AtomicU64,
    /// Reported ranges refused (outside RAM, misaligned, or the punch failed).
    pub refused_ranges: AtomicU64,
}

/// What the worker does with reported ranges.
pub struct Reporting {
    /// Punch them out (false: the guest's free pages hold a poison value
    /// that a hole, reading as zeroes, would not keep; they are only
    /// acknowledged).
    pub punch: bool,
    /// Where the worker counts what it did.
    pub counters: Arc<BalloonCounters>,
}

/// The device's side of its queues.
struct Worker {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    queues: Vec<Queue>,
    evts: Vec<EventFd>,
    epoll: Epoll,
    reporting: Reporting,
}

/// Starts the worker thread over `queues` (inflate, deflate, then
/// reporting if negotiated), each notified through the same index of `evts`;
/// `reporting` says what becomes of reported ranges.
pub fn spawn(
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    queues: Vec<Queue>,
    evts: Vec<EventFd>,
    reporting: Reporting,
) -> std::io::Result<WorkerHandle> {
    let stop = EventFd::new(EFD_NONBLOCK)?;
    let epoll = Epoll::new()?;
    let mut inputs: Vec<(u64, RawFd)> = (0u64..).zip(evts.iter().map(|e| e.as_raw_fd())).collect();
    inputs.push((TOKEN_STOP, stop.as_raw_fd()));
    watch_inputs(&epoll, &inputs)?;
    let worker = Worker {
        mem,
        interrupt,
        queues,
        evts,
        epoll,
        reporting,
    };
    // The epoll set holds `stop`'s fd number; the handle keeps it open.
    WorkerHandle::spawn_as(
        "virtio-balloon",
        crate::seccomp::Role::Balloon,
        stop,
        move || worker.run(),
    )
}

impl Worker {
    fn run(mut self) {
        let mut events = [EpollEvent::default(); 4];
        // Buffers may have been queued before the first notification.
        let mut pending = vec![true; self.queues.len()];
        loop {
            for (i, waiting) in pending.iter_mut().enumerate() {
                if !*waiting {
                    continue;
                }
                match self.process(i) {
                    Ok(more) => *waiting = more,
                    Err(e) => {
                        device_worker::report_broken("virtio-balloon", &*self.interrupt, &e);
                        let evts: Vec<&EventFd> = self.evts.iter().collect();
                        device_worker::wait_for_stop(&self.epoll, TOKEN_STOP, &evts);
                        return;
                    }
                }
            }
            // With work left, only look for a stop request (timeout 0).
            let timeout = if pending.contains(&true) { 0 } else { -1 };
            let n = match self.epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    error!("virtio-balloon: epoll_wait failed, worker exits: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                if token == TOKEN_STOP {
                    return;
                }
                let queue = usize::try_from(token).ok().filter(|&i| i < self.evts.len());
                if let Some(i) = queue {
                    // Non-blocking: EAGAIN only means it is drained already.
                    let _ = self.evts[i].read();
                    pending[i] = true;
                }
            }
        }
    }

    /// Serves up to `CHAIN_BUDGET` chains of queue `index` and interrupts
    /// the guest if it wants to know; returns whether more may be waiting.
    /// An error means the guest broke the queue itself.
    fn process(&mut self, index: usize) -> Result<bool, String> {
        let mem = &self.mem;
        let queue = &mut self.queues[index];
        let mut used = false;
        let mut more = true;
        for _ in 0..CHAIN_BUDGET {
            let chain = match queue.iter(mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(format!("queue {index}: {e}")),
            };
            let Some(chain) = chain else {
                more = false;
                break;
            };
            let head = chain.head_index();
            if index == REPORTING_QUEUE {
                if self.reporting.punch {
                    report(mem, chain, &self.reporting.counters);
                }
            } else {
                // Inflate/deflate: the host never sets a target (num_pages
                // stays 0), so a driver has no reason to move pages; what
                // one sends anyway is acknowledged and left alone.
                crate::guest_warn!(
                    queue = index,
                    "virtio-balloon: inflate/deflate buffer nobody asked for, ignored"
                );
            }
            // The device writes nothing into the buffers.
            queue
                .add_used(mem, head, 0)
                .map_err(|e| format!("queue {index} used ring: {e}"))?;
            used = true;
        }
        if used
            && queue
                .needs_notification(mem)
                .map_err(|e| format!("queue {index} used event: {e}"))?
        {
            if let Err(e) = self.interrupt.trigger(VIRTIO_MMIO_INT_VRING) {
                crate::guest_warn!("virtio-balloon: cannot interrupt the guest: {e}");
            }
        }
        Ok(more)
    }
}

/// Gives back every range of one reporting chain (each descriptor is one
/// free block, page_reporting_order pages or more), at most
/// `MAX_RANGES_PER_CHAIN` of them.
fn report(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>, counters: &BalloonCounters) {
    for (i, desc) in chain.enumerate() {
        if i == MAX_RANGES_PER_CHAIN {
            crate::guest_warn!(
                "virtio-balloon: reporting chain longer than {MAX_RANGES_PER_CHAIN} ranges, rest ignored"
            );
            counters.refused_ranges.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let len = u64::from(desc.len());
        match hole::punch(mem, desc.addr().0, len) {
            Ok(()) => {
                counters.reported_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(e) => {
                counters.refused_ranges.fetch_add(1, Ordering::Relaxed);
                crate::guest_warn!("virtio-balloon: reported range not given back: {e}");
            }
        }
    }
}
