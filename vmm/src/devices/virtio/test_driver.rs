//! Test-only driver side of a split virtqueue (virtio 1.2 §2.7): lays out
//! the rings in guest memory, publishes descriptor chains the way a guest
//! driver would, and reads back the used ring. It can also write whatever
//! garbage a hostile driver might.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::{Activation, GuestMemory};

/// Descriptor flag: another descriptor follows.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: device-writable buffer.
pub const F_WRITE: u16 = 2;

/// A split virtqueue as the driver sees it.
pub struct TestQueue {
    mem: GuestMemory,
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl TestQueue {
    /// Lays out a queue of `size` entries at `base` (16-byte aligned) and
    /// zeroes its rings.
    pub fn new(mem: &GuestMemory, base: u64, size: u16) -> TestQueue {
        let n = u64::from(size);
        let desc = GuestAddress(base);
        let avail = GuestAddress(base + 16 * n);
        // Used ring: 4-byte aligned after avail (flags, idx, ring, used_event).
        let used = GuestAddress((base + 16 * n + 6 + 2 * n + 3) & !3);
        let end = used.0 + 6 + 8 * n;
        mem.write_slice(&vec![0u8; (end - base) as usize], desc)
            .unwrap();
        TestQueue {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Descriptor table address.
    pub fn desc_addr(&self) -> u64 {
        self.desc.0
    }

    /// Available ring (driver area) address.
    pub fn avail_addr(&self) -> u64 {
        self.avail.0
    }

    /// Used ring (device area) address.
    pub fn used_addr(&self) -> u64 {
        self.used.0
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY: the device wants no kicks).
    pub fn used_flags(&self) -> u16 {
        self.mem.read_obj(self.used).unwrap()
    }

    /// The device's `avail_event` (EVENT_IDX: kick when the available index
    /// passes it), after the used ring.
    pub fn avail_event(&self) -> u16 {
        let at = self.used.0 + 4 + 8 * u64::from(self.size);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// The available index the driver published last.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// The device-side queue, configured as a transport would.
    pub fn device_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.try_set_size(self.size).unwrap();
        q.try_set_desc_table_address(self.desc).unwrap();
        q.try_set_avail_ring_address(self.avail).unwrap();
        q.try_set_used_ring_address(self.used).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&self.mem));
        q
    }

    /// Writes descriptor `index` verbatim.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        let at = self.desc.0 + 16 * u64::from(index % self.size);
        self.mem.write_slice(&raw, GuestAddress(at)).unwrap();
    }

    /// Writes a chain of `(addr, len, flags)` buffers into free descriptor
    /// slots, linking them with F_NEXT; returns the head index.
    pub fn add_chain(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if last { flags } else { flags | F_NEXT };
            self.write_desc(idx, addr, len, flags, self.next_desc);
        }
        head
    }

    /// Puts `head` in the available ring and publishes it.
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(self.avail.0 + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Writes the available ring's idx field verbatim.
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.avail.0 + 2))
            .unwrap();
    }

    /// The device's used idx.
    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap())
    }

    /// The next used element `(head, len)` not yet seen, if any.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        if self.used_seen == self.used_idx() {
            return None;
        }
        let slot = u64::from(self.used_seen % self.size);
        let at = self.used.0 + 4 + 8 * slot;
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((u32::from_le(id), u32::from_le(len)))
    }
}

/// An interrupt line that counts triggers and records a needs-reset.
#[derive(Default)]
pub struct TestInterrupt {
    /// Number of `trigger` calls.
    pub count: std::sync::atomic::AtomicUsize,
    /// Whether the device asked for a reset.
    pub needs_reset: std::sync::atomic::AtomicBool,
}

impl super::Interrupt for TestInterrupt {
    fn trigger(&self, _status: u32) -> std::io::Result<()> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    fn set_needs_reset(&self) -> std::io::Result<()> {
        self.needs_reset
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

impl TestInterrupt {
    /// Whether the device asked for a reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl TestQueue {
    /// Waits up to `timeout` for the next used element.
    pub fn wait_used(&mut self, timeout: std::time::Duration) -> Option<(u32, u32)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(u) = self.pop_used() {
                return Some(u);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// What a transport would activate a device with: the device side of the
/// driver's `queues`, notified through (clones of) `evts`, interrupting `irq`.
pub fn activation(
    mem: &GuestMemory,
    irq: &Arc<TestInterrupt>,
    queues: &[&TestQueue],
    evts: &[EventFd],
) -> Activation {
    Activation {
        mem: mem.clone(),
        interrupt: irq.clone(),
        queues: queues.iter().map(|q| q.device_queue()).collect(),
        queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
    }
}
