//! The balloon driven from a test "guest": guest RAM on a real memfd (as in
//! a VM), real virtqueues in it, the real worker thread; holes are checked
//! in the file itself (SEEK_DATA and its allocated blocks).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::spec::{DEFLATE_QUEUE, INFLATE_QUEUE, PAGE_SIZE};
use super::*;
use crate::bus::BusDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_WRITE};
use crate::devices::virtio::GuestMemory;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

const MIB: u64 = 1 << 20;
const MEM_SIZE: u64 = 32 * MIB;
const TIMEOUT: Duration = Duration::from_secs(5);
const V1: u64 = 1 << VIRTIO_F_VERSION_1;
const REPORTING: u64 = 1 << F_REPORTING;
const POISON: u64 = 1 << spec::F_PAGE_POISON;

/// Guest RAM as the VMM makes it: a sealed memfd mapped shared.
fn guest_ram(size: u64) -> GuestMemory {
    crate::memory::create_guest_memory(size, false).unwrap()
}

/// The memfd behind `mem`'s first region.
fn memfd(mem: &GuestMemory) -> &std::fs::File {
    mem.iter().next().unwrap().file_offset().unwrap().file()
}

/// Where the next data at or after `offset` is in `file`; None past the last.
fn seek_data(file: &std::fs::File, offset: u64) -> Option<u64> {
    // SAFETY: lseek on a descriptor we hold open.
    let at = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
    u64::try_from(at).ok()
}

/// Bytes the file holds (st_blocks counts 512-byte units).
fn allocated(file: &std::fs::File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().unwrap().blocks() * 512
}

/// Writes a non-zero pattern over `addr..addr+len`, so the file holds it.
fn touch(mem: &GuestMemory, addr: u64, len: u64) {
    mem.write_slice(&vec![0x5a; len as usize], GuestAddress(addr))
        .unwrap();
}

fn all_bytes(mem: &GuestMemory, addr: u64, len: u64, want: u8) -> bool {
    let mut v = vec![0u8; len as usize];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v.iter().all(|&b| b == want)
}

/// A driver that accepted `features`, with the device active on its queues.
struct Guest {
    mem: GuestMemory,
    queues: Vec<TestQueue>,
    evts: Vec<EventFd>,
    irq: Arc<TestInterrupt>,
    dev: Balloon,
}

impl Guest {
    fn new(features: u64) -> Guest {
        Guest::poisoned(features, 0)
    }

    /// A driver that also wrote `poison_val` before DRIVER_OK, as Linux does.
    fn poisoned(features: u64, poison_val: u32) -> Guest {
        let mem = guest_ram(MEM_SIZE);
        let mut dev = Balloon::new();
        dev.ack_features(features);
        dev.write_config(12, &poison_val.to_le_bytes());
        let n = dev.queues_in_use();
        let queues: Vec<TestQueue> = (0..n as u64)
            .map(|i| TestQueue::new(&mem, 0x1_0000 + i * 0x1_0000, QUEUE_SIZE))
            .collect();
        let evts: Vec<EventFd> = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let irq = Arc::new(TestInterrupt::default());
        let refs: Vec<&TestQueue> = queues.iter().collect();
        dev.activate(activation(&mem, &irq, &refs, &evts)).unwrap();
        Guest {
            mem,
            queues,
            evts,
            irq,
            dev,
        }
    }

    /// Publishes one chain of `(addr, len)` ranges on queue `q` (as Linux
    /// does: device-writable buffers), kicks, and waits for it to be used.
    fn send(&mut self, q: usize, ranges: &[(u64, u32)]) -> u32 {
        let bufs: Vec<(u64, u32, u16)> = ranges.iter().map(|&(a, l)| (a, l, F_WRITE)).collect();
        let head = self.queues[q].add_chain(&bufs);
        self.queues[q].publish(head);
        self.evts[q].write(1).unwrap();
        let (id, len) = self.queues[q].wait_used(TIMEOUT).expect("no used element");
        assert_eq!(id, u32::from(head));
        len
    }

    fn report(&mut self, ranges: &[(u64, u32)]) {
        assert_eq!(self.send(REPORTING_QUEUE, ranges), 0);
    }

    fn reported(&self) -> u64 {
        self.dev.counters().reported_bytes.load(Ordering::SeqCst)
    }

    fn refused(&self) -> u64 {
        self.dev.counters().refused_ranges.load(Ordering::SeqCst)
    }
}

#[test]
fn offers_reporting_only_and_numbers_its_queues_by_the_features() {
    let mut dev = Balloon::new();
    assert_eq!(dev.device_type(), 5);
    assert_eq!(dev.features(), V1 | REPORTING | POISON);
    for absent in [
        spec::F_STATS_VQ,
        spec::F_DEFLATE_ON_OOM,
        spec::F_FREE_PAGE_HINT,
    ] {
        assert_eq!(dev.features() & (1 << absent), 0, "bit {absent}");
    }
    assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE; 3]);
    dev.ack_features(V1);
    assert_eq!(dev.queues_in_use(), 2, "inflate and deflate only");
    dev.ack_features(V1 | REPORTING);
    assert_eq!(dev.queues_in_use(), 3, "reporting is the third queue");
    // A reset forgets the features.
    assert!(dev.reset());
    assert_eq!(dev.queues_in_use(), 2);
}

#[test]
fn config_space_has_no_target_and_takes_actual() {
    let mut dev = Balloon::new();
    let mut c = [0xffu8; 8];
    dev.read_config(0, &mut c);
    assert_eq!(c, [0; 8]);
    dev.write_config(4, &7u32.to_le_bytes());
    let mut actual = [0u8; 4];
    dev.read_config(4, &mut actual);
    assert_eq!(u32::from_le_bytes(actual), 7);
    // num_pages is the host's; odd writes and reads are harmless.
    dev.write_config(0, &9u32.to_le_bytes());
    dev.write_config(5, &[1]);
    dev.write_config(u64::MAX, &[1, 2, 3, 4]);
    dev.write_config(12, &0xaau32.to_le_bytes());
    let mut all = [0xffu8; 24];
    dev.read_config(0, &mut all);
    assert_eq!(&all[..4], &[0; 4]);
    assert_eq!(&all[4..8], &7u32.to_le_bytes());
    assert_eq!(&all[8..12], &[0; 4]);
    assert_eq!(&all[12..16], &0xaau32.to_le_bytes());
    assert!(all[16..].iter().all(|&b| b == 0));
    dev.read_config(u64::MAX - 1, &mut all);
}

#[test]
fn reported_ranges_are_punched_out_of_the_memfd() {
    let mut g = Guest::new(V1 | REPORTING);
    let file = memfd(&g.mem).try_clone().unwrap();
    touch(&g.mem, 8 * MIB, 8 * MIB);
    let before = allocated(&file);
    assert!(before >= 8 * MIB, "touched pages are in the file: {before}");
    assert_eq!(seek_data(&file, 8 * MIB), Some(8 * MIB));

    // Two 2 MiB blocks in one chain, as page reporting sends them.
    g.report(&[(8 * MIB, 2 << 20), (10 * MIB, 2 << 20)]);
    assert_eq!(g.reported(), 4 * MIB);
    assert_eq!(g.refused(), 0);
    // The range is a hole now: the next data is where the untouched part starts.
    assert_eq!(seek_data(&file, 8 * MIB), Some(12 * MIB));
    let after = allocated(&file);
    assert!(
        before - after >= 4 * MIB,
        "4 MiB given back: {before} -> {after}"
    );
    // The guest reads zeroes there, and its other pages are intact.
    assert!(all_bytes(&g.mem, 8 * MIB, 4 * MIB, 0));
    assert!(all_bytes(&g.mem, 12 * MIB, 4 * MIB, 0x5a));
    // Reusing a reported page just allocates it again.
    touch(&g.mem, 8 * MIB, PAGE_SIZE);
    assert_eq!(seek_data(&file, 2 * MIB), Some(8 * MIB));
    assert!(g.irq.count.load(Ordering::SeqCst) >= 1);
    assert!(!g.irq.needs_reset());
}

#[test]
fn poisoned_free_pages_are_kept_zeroed_ones_go_back() {
    // init_on_free: free pages hold zeroes, which a hole keeps.
    let mut g = Guest::poisoned(V1 | REPORTING | POISON, 0);
    touch(&g.mem, 4 * MIB, 2 * MIB);
    g.report(&[(4 * MIB, 2 << 20)]);
    assert_eq!(g.reported(), 2 * MIB);
    assert!(all_bytes(&g.mem, 4 * MIB, 2 * MIB, 0));
    // Page poisoning with 0xaa: a hole would read as zeroes, so nothing is
    // punched; the buffer still comes back.
    let mut g = Guest::poisoned(V1 | REPORTING | POISON, 0xaaaa_aaaa);
    touch(&g.mem, 4 * MIB, 2 * MIB);
    g.report(&[(4 * MIB, 2 << 20)]);
    assert_eq!((g.reported(), g.refused()), (0, 0));
    assert!(all_bytes(&g.mem, 4 * MIB, 2 * MIB, 0x5a));
    // Without PAGE_POISON negotiated, a stray poison_val write is meaningless.
    let mut g = Guest::poisoned(V1 | REPORTING, 0xaaaa_aaaa);
    touch(&g.mem, 4 * MIB, 2 * MIB);
    g.report(&[(4 * MIB, 2 << 20)]);
    assert_eq!(g.reported(), 2 * MIB);
}

#[test]
fn hostile_ranges_are_refused_and_nothing_else_is_touched() {
    let mut g = Guest::new(V1 | REPORTING);
    // Everything above the queue rings (in the first 2 MiB).
    touch(&g.mem, 2 * MIB, MEM_SIZE - 2 * MIB);
    let file = memfd(&g.mem).try_clone().unwrap();
    let before = allocated(&file);
    let bad: [(u64, u32); 8] = [
        // Past the end of RAM.
        (MEM_SIZE, 2 << 20),
        // Starting inside RAM, running past its end.
        (MEM_SIZE - MIB, 2 << 20),
        // Wrapping around the address space.
        (u64::MAX - 0xfff, 0x2000),
        (0xffff_ffff_ffff_f000, 0xffff_f000),
        // Not whole pages.
        (MIB + 1, 0x1000),
        (MIB, 0x1001),
        // Empty.
        (MIB, 0),
        // In the MMIO gap, where there is no RAM.
        (0xd000_0000, 0x1000),
    ];
    for range in bad {
        g.report(&[range]);
    }
    assert_eq!(g.refused(), bad.len() as u64);
    assert_eq!(g.reported(), 0);
    assert_eq!(allocated(&file), before, "nothing was punched");
    assert!(all_bytes(&g.mem, 0x20_0000, MEM_SIZE - 0x20_0000, 0x5a));
    // A good range among bad ones in one chain still goes back.
    g.report(&[
        (MEM_SIZE, 4096),
        (4 * MIB, 2 << 20),
        (u64::MAX - 0xfff, 4096),
    ]);
    assert_eq!(g.reported(), 2 * MIB);
    assert_eq!(g.refused(), bad.len() as u64 + 2);
    assert!(all_bytes(&g.mem, 4 * MIB, 2 * MIB, 0));
    assert!(all_bytes(&g.mem, 6 * MIB, MIB, 0x5a));
    assert!(!g.irq.needs_reset(), "bad ranges do not break the device");
}

#[test]
fn a_huge_chain_is_cut_at_the_bound() {
    let mut g = Guest::new(V1 | REPORTING);
    // More ranges than one chain may have: 100 pages, one descriptor each.
    let n = MAX_RANGES_PER_CHAIN as u64 + 36;
    touch(&g.mem, 4 * MIB, n * PAGE_SIZE);
    let ranges: Vec<(u64, u32)> = (0..n).map(|i| (4 * MIB + i * PAGE_SIZE, 4096)).collect();
    g.report(&ranges);
    let done = MAX_RANGES_PER_CHAIN as u64 * PAGE_SIZE;
    assert_eq!(g.reported(), done);
    assert_eq!(g.refused(), 1);
    assert!(all_bytes(&g.mem, 4 * MIB, done, 0));
    assert!(all_bytes(
        &g.mem,
        4 * MIB + done,
        (n - MAX_RANGES_PER_CHAIN as u64) * PAGE_SIZE,
        0x5a
    ));
}

#[test]
fn a_broken_reporting_ring_needs_reset_and_reset_restarts() {
    let mut g = Guest::new(V1 | REPORTING);
    g.queues[REPORTING_QUEUE].set_avail_idx(QUEUE_SIZE + 10);
    g.evts[REPORTING_QUEUE].write(1).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !g.irq.needs_reset() {
        assert!(std::time::Instant::now() < deadline, "no needs-reset");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(g.dev.reset());
    // The driver starts over.
    let mut g2 = Guest::new(V1 | REPORTING);
    touch(&g2.mem, 2 * MIB, 2 * MIB);
    g2.report(&[(2 * MIB, 2 << 20)]);
    assert_eq!(g2.reported(), 2 * MIB);
}

#[test]
fn without_reporting_inflate_and_deflate_buffers_are_acknowledged_untouched() {
    let mut g = Guest::new(V1);
    assert_eq!(g.queues.len(), 2);
    touch(&g.mem, 2 * MIB, PAGE_SIZE);
    // An inflate buffer holds le32 PFNs; nothing was asked, nothing is freed.
    let pfn_buf = 0x8_0000;
    g.mem
        .write_obj(((2 * MIB) / PAGE_SIZE) as u32, GuestAddress(pfn_buf))
        .unwrap();
    let head = g.queues[INFLATE_QUEUE].add_chain(&[(pfn_buf, 4, 0)]);
    g.queues[INFLATE_QUEUE].publish(head);
    g.evts[INFLATE_QUEUE].write(1).unwrap();
    assert_eq!(
        g.queues[INFLATE_QUEUE].wait_used(TIMEOUT),
        Some((u32::from(head), 0))
    );
    assert_eq!(g.send(DEFLATE_QUEUE, &[(pfn_buf, 4)]), 0);
    assert!(all_bytes(&g.mem, 2 * MIB, PAGE_SIZE, 0x5a));
    assert_eq!(g.reported(), 0);
    // The wrong number of queues is refused.
    let mut dev = Balloon::new();
    dev.ack_features(V1 | REPORTING);
    let irq = Arc::new(TestInterrupt::default());
    let two: Vec<&TestQueue> = g.queues.iter().collect();
    let err = dev.activate(activation(&g.mem, &irq, &two, &g.evts));
    assert!(matches!(err, Err(ActivateError::BadQueues(_))));
}

#[test]
fn ranges_map_to_their_file_offsets_above_the_mmio_gap() {
    use crate::boot::layout::{MMIO_GAP_END, MMIO_GAP_START};
    // Two regions (below the gap and at 4 GiB), nothing touched but this.
    let mem = guest_ram(MMIO_GAP_START + 4 * MIB);
    let high = MMIO_GAP_END + 2 * MIB;
    touch(&mem, high, 2 * MIB);
    touch(&mem, MMIO_GAP_START - 2 * MIB, 2 * MIB);
    let file = memfd(&mem).try_clone().unwrap();
    let file_off = MMIO_GAP_START + 2 * MIB;
    assert_eq!(seek_data(&file, MMIO_GAP_START), Some(file_off));
    punch(&mem, high, 2 * MIB).unwrap();
    assert_eq!(
        seek_data(&file, MMIO_GAP_START),
        None,
        "hole at the right offset"
    );
    assert!(all_bytes(&mem, MMIO_GAP_START - 2 * MIB, 2 * MIB, 0x5a));
    // A range across the gap, or across the end of the low region, is not RAM.
    assert_eq!(
        punch(&mem, MMIO_GAP_START - 2 * MIB, 4 * MIB),
        Err(HoleError::OutsideRam {
            addr: MMIO_GAP_START - 2 * MIB,
            len: 4 * MIB
        })
    );
    assert_eq!(
        seek_data(&file, MMIO_GAP_START - 2 * MIB),
        Some(MMIO_GAP_START - 2 * MIB)
    );
}

#[test]
fn anonymous_ram_is_refused_not_madvised() {
    let mem = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    assert_eq!(punch(&mem, 0, 4096), Err(HoleError::NoFile { addr: 0 }));
}

/// Through the real virtio-mmio transport: a driver that declines
/// reporting sets up two queues only, and the device comes up on them.
#[test]
fn the_transport_activates_without_the_reporting_queue() {
    // virtio-mmio register offsets (virtio 1.2 §4.2.2).
    const FEATURES: u64 = 0x010;
    const FEATURES_SEL: u64 = 0x014;
    const DRIVER_FEATURES: u64 = 0x020;
    const DRIVER_FEATURES_SEL: u64 = 0x024;
    const QUEUE_SEL: u64 = 0x030;
    const QUEUE_NUM: u64 = 0x038;
    const QUEUE_READY: u64 = 0x044;
    const STATUS: u64 = 0x070;
    const QUEUE_DESC: u64 = 0x080;
    const QUEUE_DRIVER: u64 = 0x090;
    const QUEUE_DEVICE: u64 = 0x0a0;
    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }
    for (features, queues) in [(V1, 2u64), (V1 | REPORTING, 3), (V1 | REPORTING, 2)] {
        let mem = guest_ram(4 * MIB);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(Balloon::new()), mem.clone(), irq).unwrap();
        wr(&mut t, FEATURES_SEL, 0);
        assert_eq!(u64::from(rd(&mut t, FEATURES)), REPORTING | POISON);
        wr(&mut t, STATUS, 1 | 2);
        wr(&mut t, DRIVER_FEATURES_SEL, 0);
        wr(&mut t, DRIVER_FEATURES, features as u32);
        wr(&mut t, DRIVER_FEATURES_SEL, 1);
        wr(&mut t, DRIVER_FEATURES, (features >> 32) as u32);
        wr(&mut t, STATUS, 1 | 2 | 8);
        for i in 0..queues {
            let q = TestQueue::new(&mem, 0x1_0000 * (i + 1), QUEUE_SIZE);
            wr(&mut t, QUEUE_SEL, i as u32);
            wr(&mut t, QUEUE_NUM, u32::from(QUEUE_SIZE));
            wr(&mut t, QUEUE_DESC, q.desc_addr() as u32);
            wr(&mut t, QUEUE_DRIVER, q.avail_addr() as u32);
            wr(&mut t, QUEUE_DEVICE, q.used_addr() as u32);
            wr(&mut t, QUEUE_READY, 1);
        }
        wr(&mut t, STATUS, 1 | 2 | 8 | 4);
        // With reporting accepted its queue must be set up too.
        let want = !(features & REPORTING != 0 && queues == 2);
        assert_eq!(t.is_activated(), want, "{features:#x} with {queues} queues");
        wr(&mut t, STATUS, 0);
    }
}
