//! The vsock device's worker thread: one epoll loop over the queue
//! notifications, the Unix listener and every connection's socket. Every
//! socket is non-blocking, so nothing here waits except `epoll_wait`.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{RxBuffer, TxPacket, MAX_PKT_DATA};
use super::VsockBytes;
use crate::devices::virtio::device_worker::{self, WorkerHandle};
use crate::devices::virtio::queue_worker::CHAIN_BUDGET;
use crate::devices::virtio::{GuestMemory, Interrupt};

const TOKEN_RX: u64 = 0;
const TOKEN_TX: u64 = 1;
const TOKEN_EVQ: u64 = 2;
const TOKEN_STOP: u64 = 3;
/// Epoll events handled per wake-up.
const EVENT_BATCH: usize = 64;

/// The device's side of the virtqueues plus the connection muxer.
pub struct Worker {
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    rxq: Queue,
    txq: Queue,
    queue_evts: [EventFd; 3],
    stop: EventFd,
    muxer: Muxer,
    tx_stalled: bool,
    /// A TX budget ran out with packets left: drain again after a look at
    /// the stop event, without waiting for a kick.
    tx_more: bool,
    rx_data: Vec<u8>,
    tx_data: Vec<u8>,
    bytes: Arc<VsockBytes>,
}

impl Worker {
    /// Builds a worker; `queues` and `queue_evts` are rx, tx, event in order.
    pub fn new(
        mem: GuestMemory,
        interrupt: Arc<dyn Interrupt>,
        // Nothing uses the event queue (no live migration).
        [rxq, txq, _evq]: [Queue; 3],
        queue_evts: [EventFd; 3],
        muxer: Muxer,
    ) -> std::io::Result<Worker> {
        let stop = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?;
        let epoll = muxer.epoll();
        device_worker::watch_inputs(
            epoll,
            &[
                (TOKEN_RX, queue_evts[0].as_raw_fd()),
                (TOKEN_TX, queue_evts[1].as_raw_fd()),
                (TOKEN_EVQ, queue_evts[2].as_raw_fd()),
                (TOKEN_STOP, stop.as_raw_fd()),
            ],
        )?;
        Ok(Worker {
            mem,
            interrupt,
            rxq,
            txq,
            queue_evts,
            stop,
            muxer,
            tx_stalled: false,
            tx_more: false,
            rx_data: vec![0; MAX_PKT_DATA],
            tx_data: vec![0; MAX_PKT_DATA],
            bytes: Arc::default(),
        })
    }

    /// Counts payload bytes into `bytes` instead of a private counter.
    pub fn with_bytes(mut self, bytes: Arc<VsockBytes>) -> Self {
        self.bytes = bytes;
        self
    }

    /// Starts the worker thread.
    pub fn spawn(self) -> std::io::Result<WorkerHandle> {
        WorkerHandle::spawn_as(
            "vsock",
            crate::seccomp::Role::Vsock,
            self.stop.try_clone()?,
            move || self.run(),
        )
    }

    fn run(mut self) {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        // Buffers may have been queued before the first notification.
        let mut kick_tx = true;
        loop {
            if let Err(e) = self.process_queues(kick_tx) {
                device_worker::report_broken("vsock", &*self.interrupt, &e);
                // Stop touching the queues and close every connection, so
                // host clients see EOF; then wait for the driver's reset.
                let Worker { muxer, stop, .. } = self;
                drop(muxer);
                wait_for_stop(&stop);
                return;
            }
            // With TX work left over, only look at the events, never sleep.
            let timeout = if self.tx_more {
                0
            } else {
                self.muxer.timeout_ms(Instant::now())
            };
            let n = match self.muxer.epoll().wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    error!("vsock: epoll_wait failed, worker exits: {e}");
                    return;
                }
            };
            kick_tx = false;
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return,
                    TOKEN_RX => drain(&self.queue_evts[0]),
                    TOKEN_TX => {
                        drain(&self.queue_evts[1]);
                        kick_tx = true;
                    }
                    // Nothing uses the event queue (no live migration).
                    TOKEN_EVQ => drain(&self.queue_evts[2]),
                    token => self.muxer.handle_event(token, ev.event_set()),
                }
            }
            self.muxer.handle_timeouts(Instant::now());
        }
    }

    fn process_queues(&mut self, kick_tx: bool) -> Result<(), String> {
        // A stalled TX queue is retried on every wake-up: any of them may
        // have drained a host socket.
        if kick_tx || self.tx_stalled || self.tx_more {
            self.process_tx()?;
        }
        self.process_rx()
    }

    /// Takes up to one budget of packets from the guest, stopping early
    /// when the queue is empty or the next packet must wait for buffer
    /// space. Kicks are off while it drains (every kick is a VM exit) and
    /// back on once the queue is empty; with the budget spent they stay off
    /// and the run loop comes back after checking its stop event, so a
    /// guest refilling the queue from another vCPU cannot hold the worker.
    fn process_tx(&mut self) -> Result<(), String> {
        self.tx_stalled = false;
        self.tx_more = false;
        self.txq
            .disable_notification(&self.mem)
            .map_err(|e| format!("TX notification: {e}"))?;
        let (used, spent) = self.drain_tx()?;
        if used {
            self.notify_used(true)?;
        }
        // A stalled queue is retried on every wake-up, kicked or not.
        if self.tx_stalled {
            return Ok(());
        }
        if spent {
            self.tx_more = true;
            return Ok(());
        }
        // Empty: re-arm kicks, and come back at once in case the guest
        // added a packet before it saw them armed.
        self.tx_more = self
            .txq
            .enable_notification(&self.mem)
            .map_err(|e| format!("TX notification: {e}"))?;
        Ok(())
    }

    /// One pass over the TX queue of at most `CHAIN_BUDGET` packets;
    /// returns whether packets were used and whether the budget ran out.
    fn drain_tx(&mut self) -> Result<(bool, bool), String> {
        let mut used = false;
        for _ in 0..CHAIN_BUDGET {
            let chain = match self.txq.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(format!("TX queue: {e}")),
            };
            let Some(chain) = chain else {
                return Ok((used, false));
            };
            let head = chain.head_index();
            match TxPacket::parse(&self.mem, chain) {
                Ok(mut pkt) => {
                    if self.muxer.tx_would_block(&pkt.hdr) {
                        self.txq.go_to_previous_position();
                        self.tx_stalled = true;
                        return Ok((used, false));
                    }
                    match pkt.read_data(&mut self.tx_data) {
                        Ok(data) => {
                            let n = data.len() as u64;
                            self.bytes.guest_to_host.fetch_add(n, Ordering::Relaxed);
                            self.muxer.handle_tx(&pkt.hdr, data)
                        }
                        Err(e) => debug!("vsock: dropping TX packet: {e}"),
                    }
                }
                Err(e) => debug!("vsock: dropping TX packet: {e}"),
            }
            self.txq
                .add_used(&self.mem, head, 0)
                .map_err(|e| format!("TX used ring: {e}"))?;
            used = true;
        }
        Ok((used, true))
    }

    /// Gives the guest packets while it has RX buffers and we have packets.
    /// The guest's refills need no kick while buffers last (packets come
    /// from host sockets); only running out with packets waiting asks for
    /// one.
    fn process_rx(&mut self) -> Result<(), String> {
        loop {
            let (used, starved) = self.fill_rx()?;
            if used {
                self.notify_used(false)?;
            }
            if !starved {
                return self
                    .rxq
                    .disable_notification(&self.mem)
                    .map_err(|e| format!("RX notification: {e}"));
            }
            let again = self
                .rxq
                .enable_notification(&self.mem)
                .map_err(|e| format!("RX notification: {e}"))?;
            if !again {
                return Ok(());
            }
            // Buffers came in meanwhile: go on.
        }
    }

    /// One pass over the RX queue; returns whether buffers were used and
    /// whether packets are left waiting for buffers.
    fn fill_rx(&mut self) -> Result<(bool, bool), String> {
        let mut used = false;
        while self.muxer.has_rx_work() {
            let chain = match self.rxq.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => return Err(format!("RX queue: {e}")),
            };
            let Some(chain) = chain else {
                return Ok((used, true));
            };
            let head = chain.head_index();
            let buf = RxBuffer::new(&self.mem, chain).map_err(|e| format!("RX buffer: {e}"))?;
            let cap = buf.data_capacity();
            match self.muxer.next_rx_packet(&mut self.rx_data[..cap]) {
                Some((hdr, n)) => {
                    let count = n as u64;
                    self.bytes.host_to_guest.fetch_add(count, Ordering::Relaxed);
                    let len = buf
                        .write(&hdr, &self.rx_data[..n])
                        .map_err(|e| format!("RX buffer: {e}"))?;
                    self.rxq
                        .add_used(&self.mem, head, len)
                        .map_err(|e| format!("RX used ring: {e}"))?;
                    used = true;
                }
                None => {
                    self.rxq.go_to_previous_position();
                    break;
                }
            }
        }
        Ok((used, false))
    }

    fn notify_used(&mut self, tx: bool) -> Result<(), String> {
        let q = if tx { &mut self.txq } else { &mut self.rxq };
        let needed = q
            .needs_notification(&self.mem)
            .map_err(|e| format!("used event: {e}"))?;
        if needed {
            if let Err(e) = self.interrupt.trigger(VIRTIO_MMIO_INT_VRING) {
                crate::guest_warn!("vsock: cannot interrupt the guest: {e}");
            }
        }
        Ok(())
    }
}

/// After the device broke: only the stop request matters now.
/// Waits for the stop request on an epoll set of its own (the muxer's went
/// with the muxer).
fn wait_for_stop(stop: &EventFd) {
    let Ok(epoll) = Epoll::new() else {
        return;
    };
    if device_worker::watch_inputs(&epoll, &[(TOKEN_STOP, stop.as_raw_fd())]).is_ok() {
        device_worker::wait_for_stop(&epoll, TOKEN_STOP, &[]);
    }
}

fn drain(evt: &EventFd) {
    // Non-blocking: EAGAIN just means someone drained it already.
    let _ = evt.read();
}

#[cfg(test)]
mod budget_tests {
    use std::os::unix::net::UnixListener;

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::devices::virtio::test_driver::{TestInterrupt, TestQueue};
    use crate::devices::virtio::vsock::packet::{Header, Op, HDR_SIZE, HOST_CID, TYPE_STREAM};

    /// However many packets the guest queued, one call drains one budget
    /// and asks to be called again without a kick; the last call re-arms
    /// kicks. So the run loop reaches its stop check between budgets.
    #[test]
    fn tx_is_drained_one_budget_per_call() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (rx, mut tx, ev) = (
            TestQueue::new(&mem, 0x1_0000, 256),
            TestQueue::new(&mem, 0x2_0000, 256),
            TestQueue::new(&mem, 0x3_0000, 256),
        );
        let dir = std::env::temp_dir().join(format!("vessel-vsock-budget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("v.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        let muxer = Muxer::new(3, sock.clone(), listener).unwrap();
        let evts = [0, 1, 2].map(|_| EventFd::new(EFD_NONBLOCK).unwrap());
        let mut worker = Worker::new(
            mem.clone(),
            Arc::new(TestInterrupt::default()),
            [rx.device_queue(), tx.device_queue(), ev.device_queue()],
            evts,
            muxer,
        )
        .unwrap();
        // Dropped without an answer (wrong source CID): only TX works.
        let hdr = Header {
            src_cid: 4,
            dst_cid: HOST_CID,
            src_port: 1,
            dst_port: 2,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            ..Header::default()
        };
        mem.write_slice(&hdr.to_bytes(), GuestAddress(0x8_0000))
            .unwrap();
        let total = 3 * CHAIN_BUDGET + 5;
        for _ in 0..total {
            let head = tx.add_chain(&[(0x8_0000, HDR_SIZE as u32, 0)]);
            tx.publish(head);
        }
        for round in 1..=3 {
            worker.process_tx().unwrap();
            assert_eq!(usize::from(tx.used_idx()), round * CHAIN_BUDGET);
            assert!(worker.tx_more, "round {round}: more is left");
        }
        worker.process_tx().unwrap();
        assert_eq!(usize::from(tx.used_idx()), total);
        assert!(!worker.tx_more, "the queue is empty and kicks are re-armed");
        drop(worker);
        let _ = std::fs::remove_dir_all(dir);
    }
}
