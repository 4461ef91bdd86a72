//! The net device's worker thread: one epoll loop over the RX and TX queue
//! notifications, the tap and a stop eventfd.
//!
//! Notification suppression: TX drains the queue with guest kicks off and
//! re-enables them only when it is empty (with EVENT_IDX through
//! `avail_event`). RX reads the tap only while the guest has buffers; when
//! it runs out, the tap leaves the epoll set and RX kicks are enabled, so
//! the next refill wakes the worker, which then resumes reading.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use tracing::error;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::backend::Backend;
use super::counters::NetCounters;
use super::rx::{Rx, RxState};
use super::tx;
use crate::devices::virtio::device_worker::{self, WorkerHandle};
use crate::devices::virtio::{GuestMemory, Interrupt};

const TOKEN_RXQ: u64 = 0;
const TOKEN_TXQ: u64 = 1;
const TOKEN_TAP: u64 = 2;
const TOKEN_STOP: u64 = 3;

/// The device's side of both queues plus the backend.
pub struct Worker<B: Backend> {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    rxq: Queue,
    txq: Queue,
    rx_evt: EventFd,
    tx_evt: EventFd,
    stop: EventFd,
    epoll: Epoll,
    backend: Arc<B>,
    rx: Rx,
    acked: u64,
    counters: Arc<NetCounters>,
    /// Whether the tap is in the epoll set (false while RX waits for buffers).
    polling_tap: bool,
}

impl<B: Backend> Worker<B> {
    /// Builds a worker; `queues` and `evts` are RX then TX.
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        [rxq, txq]: [Queue; 2],
        [rx_evt, tx_evt]: [EventFd; 2],
        backend: Arc<B>,
        acked: u64,
        counters: Arc<NetCounters>,
    ) -> std::io::Result<Worker<B>> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        device_worker::watch_inputs(
            &epoll,
            &[
                (TOKEN_RXQ, rx_evt.as_raw_fd()),
                (TOKEN_TXQ, tx_evt.as_raw_fd()),
                (TOKEN_TAP, backend.as_raw_fd()),
                (TOKEN_STOP, stop.as_raw_fd()),
            ],
        )?;
        Ok(Worker {
            mem,
            interrupt,
            rxq,
            txq,
            rx_evt,
            tx_evt,
            stop,
            epoll,
            backend,
            rx: Rx::new(acked),
            acked,
            counters,
            polling_tap: true,
        })
    }

    /// Starts the worker thread.
    pub fn spawn(self) -> std::io::Result<WorkerHandle> {
        WorkerHandle::spawn("virtio-net", self.stop.try_clone()?, move || self.run())
    }

    fn run(mut self) {
        let mut events = [EpollEvent::default(); 4];
        // Buffers and frames may be waiting before the first notification.
        let (mut kick_tx, mut kick_rx) = (true, true);
        loop {
            let mut more = false;
            let step = (|| -> Result<(), String> {
                if kick_tx {
                    more |= self.process_tx()?;
                }
                if kick_rx {
                    more |= self.process_rx()?;
                }
                Ok(())
            })();
            if let Err(e) = step {
                device_worker::report_broken("virtio-net", &*self.interrupt, &e);
                self.wait_for_stop();
                return;
            }
            // With work left, only look for a stop request (timeout 0).
            let n = match self.epoll.wait(if more { 0 } else { -1 }, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    error!("virtio-net: epoll_wait failed, worker exits: {e}");
                    return;
                }
            };
            kick_tx = more;
            kick_rx = more;
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return,
                    TOKEN_TXQ => {
                        // Non-blocking: EAGAIN only means it is drained already.
                        let _ = self.tx_evt.read();
                        kick_tx = true;
                    }
                    TOKEN_RXQ => {
                        let _ = self.rx_evt.read();
                        kick_rx = true;
                    }
                    _ => kick_rx = true,
                }
            }
        }
    }

    /// Drains the TX queue (one budget); true if chains may be left.
    fn process_tx(&mut self) -> Result<bool, String> {
        let mem = &self.mem;
        loop {
            self.txq
                .disable_notification(mem)
                .map_err(|e| format!("TX notification: {e}"))?;
            let done = tx::process(
                mem,
                &mut self.txq,
                self.backend.as_ref(),
                self.acked,
                &self.counters,
            )?;
            if done.used {
                notify(&mut self.txq, mem, self.interrupt.as_ref())?;
            }
            if done.more {
                return Ok(true);
            }
            // Empty: re-arm kicks, and look again in case the guest added
            // a chain before it saw them armed.
            let again = self
                .txq
                .enable_notification(mem)
                .map_err(|e| format!("TX notification: {e}"))?;
            if !again {
                return Ok(false);
            }
        }
    }

    /// Moves frames to the guest (one budget); true if more may be waiting.
    fn process_rx(&mut self) -> Result<bool, String> {
        loop {
            let (state, used) = self.rx.process(
                &self.mem,
                &mut self.rxq,
                self.backend.as_ref(),
                &self.counters,
            )?;
            if used {
                notify(&mut self.rxq, &self.mem, self.interrupt.as_ref())?;
            }
            match state {
                RxState::Budget => return Ok(true),
                RxState::Broken => {
                    // The tap failed for good (e.g. its interface was
                    // deleted): stop polling it; TX keeps going.
                    self.poll_tap(false)?;
                    return Ok(false);
                }
                RxState::Drained => {
                    self.poll_tap(true)?;
                    return Ok(false);
                }
                RxState::NeedBuffers => {
                    // Wait for the guest: stop reading the tap (its frames
                    // queue in the kernel) and ask for a kick on refill.
                    self.poll_tap(false)?;
                    let seen = self.rx.seen_avail();
                    if !arm_refill_kick(&mut self.rxq, &self.mem, seen)? {
                        return Ok(false);
                    }
                    // Buffers came in meanwhile: retry now.
                }
            }
        }
    }

    /// Adds or removes the tap from the epoll set.
    fn poll_tap(&mut self, on: bool) -> Result<(), String> {
        if self.polling_tap == on {
            return Ok(());
        }
        // Removed rather than masked: epoll reports errors even on an
        // empty mask, and a tap in error would spin the loop.
        let op = if on {
            ControlOperation::Add
        } else {
            ControlOperation::Delete
        };
        self.epoll
            .ctl(
                op,
                self.backend.as_raw_fd(),
                EpollEvent::new(EventSet::IN, TOKEN_TAP),
            )
            .map_err(|e| format!("epoll: {e}"))?;
        self.polling_tap = on;
        if on {
            // Refills no longer matter until the next shortage.
            self.rxq
                .disable_notification(&self.mem)
                .map_err(|e| format!("RX notification: {e}"))?;
        }
        Ok(())
    }

    /// After the device broke: only the stop request matters now.
    fn wait_for_stop(&mut self) {
        if self.poll_tap(false).is_err() {
            return;
        }
        device_worker::wait_for_stop(&self.epoll, TOKEN_STOP, &[&self.rx_evt, &self.tx_evt]);
    }
}

/// Asks the guest for a kick when it adds RX buffers beyond `seen`, the
/// available index RX had reached when it ran out (the chains before it
/// were too few for the waiting frame and were handed back); true if some
/// came already. `enable_notification` alone would compare against the
/// handed-back chains, always see "more", and spin until the guest
/// refilled, and with EVENT_IDX it would set `avail_event` behind the
/// guest's index, where no kick comes.
pub(super) fn arm_refill_kick(
    queue: &mut Queue,
    mem: &GuestMemory,
    seen: u16,
) -> Result<bool, String> {
    let next = queue.next_avail();
    queue.set_next_avail(seen);
    let again = queue
        .enable_notification(mem)
        .map_err(|e| format!("RX notification: {e}"));
    queue.set_next_avail(next);
    again
}

/// Interrupts the guest for new used entries unless it suppressed it.
fn notify(queue: &mut Queue, mem: &GuestMemory, interrupt: &dyn Interrupt) -> Result<(), String> {
    let needed = queue
        .needs_notification(mem)
        .map_err(|e| format!("used event: {e}"))?;
    if needed {
        if let Err(e) = interrupt.trigger(VIRTIO_MMIO_INT_VRING) {
            crate::guest_warn!("virtio-net: cannot interrupt the guest: {e}");
        }
    }
    Ok(())
}
