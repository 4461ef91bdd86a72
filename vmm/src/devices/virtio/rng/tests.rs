//! The rng device driven from a test "guest": a real virtqueue in guest
//! memory and the real worker thread.

use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_WRITE};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

const MEM_SIZE: usize = 4 << 20;
const QUEUE_BASE: u64 = 0x1_0000;
const BUF: u64 = 0x10_0000;
const TIMEOUT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(200);

struct Guest {
    mem: GuestMemory,
    q: TestQueue,
    evt: EventFd,
    irq: Arc<TestInterrupt>,
    dev: Rng,
}

impl Guest {
    fn new() -> Guest {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let mut dev = Rng::new();
        let q = TestQueue::new(&mem, QUEUE_BASE, QUEUE_SIZE);
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = Arc::new(TestInterrupt::default());
        dev.activate(activation(&mem, &irq, &[&q], std::slice::from_ref(&evt)))
            .unwrap();
        Guest {
            mem,
            q,
            evt,
            irq,
            dev,
        }
    }

    /// Publishes a chain, kicks the device and waits for its used length.
    fn request(&mut self, bufs: &[(u64, u32, u16)]) -> u32 {
        let head = self.q.add_chain(bufs);
        self.q.publish(head);
        self.evt.write(1).unwrap();
        let (id, len) = self.q.wait_used(TIMEOUT).expect("no used element");
        assert_eq!(id, u32::from(head));
        len
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

#[test]
fn fills_buffers_with_fresh_bytes() {
    let mut g = Guest::new();
    assert_eq!(g.request(&[(BUF, 4096, F_WRITE)]), 4096);
    assert_eq!(g.request(&[(BUF + 4096, 4096, F_WRITE)]), 4096);
    let a = g.read(BUF, 4096);
    let b = g.read(BUF + 4096, 4096);
    assert!(a.iter().any(|&x| x != 0));
    assert_ne!(a, b);
    assert!(g.irq.count.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn spreads_over_several_descriptors() {
    let mut g = Guest::new();
    let n = g.request(&[(BUF, 16, F_WRITE), (BUF + 0x1000, 100, F_WRITE)]);
    assert_eq!(n, 116);
    assert!(g.read(BUF + 0x1000, 100).iter().any(|&x| x != 0));
}

#[test]
fn caps_each_chain() {
    let mut g = Guest::new();
    let total = 3 * MAX_BYTES_PER_CHAIN as u32;
    g.mem
        .write_slice(&vec![0xaa; total as usize], GuestAddress(BUF))
        .unwrap();
    let n = g.request(&[(BUF, total, F_WRITE)]);
    assert_eq!(n as usize, MAX_BYTES_PER_CHAIN);
    // Past the cap the guest's bytes are untouched.
    let rest = g.read(BUF + MAX_BYTES_PER_CHAIN as u64, 2 * MAX_BYTES_PER_CHAIN);
    assert!(rest.iter().all(|&x| x == 0xaa));
}

#[test]
fn bad_chains_complete_empty_and_the_queue_goes_on() {
    let mut g = Guest::new();
    // Device-readable only: nothing to fill.
    assert_eq!(g.request(&[(BUF, 64, 0)]), 0);
    // Outside guest memory.
    assert_eq!(g.request(&[(MEM_SIZE as u64 - 8, 64, F_WRITE)]), 0);
    assert_eq!(g.request(&[(u64::MAX - 4, 64, F_WRITE)]), 0);
    // Zero-length buffer.
    assert_eq!(g.request(&[(BUF, 0, F_WRITE)]), 0);
    // A descriptor that chains to itself ends at the queue size.
    g.q.write_desc(200, BUF, 8, F_WRITE | 1, 200);
    g.q.publish(200);
    g.evt.write(1).unwrap();
    let (id, len) = g.q.wait_used(TIMEOUT).unwrap();
    assert_eq!(id, 200);
    assert!(len as usize <= MAX_BYTES_PER_CHAIN);
    // Still serving.
    assert_eq!(g.request(&[(BUF, 32, F_WRITE)]), 32);
    assert!(!g.irq.needs_reset());
}

#[test]
fn broken_avail_ring_needs_reset_and_reset_restarts() {
    let mut g = Guest::new();
    // An avail idx more than a queue ahead is not a valid ring state.
    g.q.set_avail_idx(QUEUE_SIZE + 10);
    g.evt.write(1).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !g.irq.needs_reset() {
        assert!(std::time::Instant::now() < deadline, "no needs-reset");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(QUIET);
    assert_eq!(g.q.pop_used(), None);
    assert!(g.dev.reset());

    // A fresh activation works again.
    let q = TestQueue::new(&g.mem, 0x3_0000, QUEUE_SIZE);
    let evt = EventFd::new(EFD_NONBLOCK).unwrap();
    g.dev
        .activate(activation(
            &g.mem,
            &g.irq,
            &[&q],
            std::slice::from_ref(&evt),
        ))
        .unwrap();
    g.q = q;
    g.evt = evt;
    assert_eq!(g.request(&[(BUF, 8, F_WRITE)]), 8);
}

#[test]
fn device_basics() {
    let mut dev = Rng::new();
    assert_eq!(dev.device_type(), 4);
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE]);
    assert_eq!(dev.features(), 1u64 << VIRTIO_F_VERSION_1);
    let mut data = [0xffu8; 4];
    dev.read_config(0, &mut data);
    assert_eq!(data, [0; 4]);
    dev.write_config(0, &[1, 2]);
    // Not active: reset is a no-op that succeeds.
    assert!(dev.reset());
    // Wrong queue count is refused.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let irq = Arc::new(TestInterrupt::default());
    let err = dev.activate(activation(&mem, &irq, &[], &[]));
    assert!(matches!(err, Err(ActivateError::BadQueues(_))));
}

#[test]
fn more_chains_than_one_budget_are_all_served() {
    let mut g = Guest::new();
    let n = 3 * crate::devices::virtio::queue_worker::CHAIN_BUDGET + 5;
    let mut heads = Vec::new();
    for i in 0..n as u64 {
        let head = g.q.add_chain(&[(BUF + 64 * i, 64, F_WRITE)]);
        g.q.publish(head);
        heads.push(u32::from(head));
    }
    // One notification for all of them.
    g.evt.write(1).unwrap();
    for head in heads {
        assert_eq!(g.q.wait_used(TIMEOUT), Some((head, 64)));
    }
}
