//! Register-level tests of the virtio-mmio transport against a mock device.

use std::sync::Mutex;

use super::*;
use crate::devices::virtio::test_driver::TestQueue;
use crate::devices::virtio::ActivateError;
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
use vm_memory::GuestMemoryMmap;

const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRV: u32 = VIRTIO_CONFIG_S_DRIVER;
const FOK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;
const DOK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const V1: u64 = 1 << VIRTIO_F_VERSION_1;
const F_TEST: u64 = 1 << 3;

#[derive(Default)]
struct Record {
    acked: Option<u64>,
    queues: Vec<(u16, u64, u64, u64)>,
    evts: Vec<EventFd>,
    interrupt: Option<Arc<dyn Interrupt>>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
}

struct MockDevice {
    rec: Arc<Mutex<Record>>,
    sizes: Vec<u16>,
    fail_activate: bool,
}

impl VirtioDevice for MockDevice {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        V1 | F_TEST
    }
    fn ack_features(&mut self, features: u64) {
        self.rec.lock().unwrap().acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8).wrapping_add(0xa0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.rec
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::BadQueues("mock".into()));
        }
        let mut r = self.rec.lock().unwrap();
        r.queues = activation
            .queues
            .iter()
            .map(|q| (q.size(), q.desc_table(), q.avail_ring(), q.used_ring()))
            .collect();
        r.evts = activation.queue_evts;
        r.interrupt = Some(activation.interrupt);
        Ok(())
    }
    fn reset(&mut self) -> bool {
        self.rec.lock().unwrap().resets += 1;
        true
    }
}

struct Setup {
    t: MmioTransport,
    rec: Arc<Mutex<Record>>,
    irq: EventFd,
    mem: GuestMemory,
}

fn setup_with(sizes: Vec<u16>, fail_activate: bool) -> Setup {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let rec = Arc::new(Mutex::new(Record::default()));
    let dev = MockDevice {
        rec: rec.clone(),
        sizes,
        fail_activate,
    };
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(Box::new(dev), mem.clone(), irq.try_clone().unwrap()).unwrap();
    Setup { t, rec, irq, mem }
}

fn setup() -> Setup {
    setup_with(vec![16, 8], false)
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport, features: u64) {
    wr(t, REG_STATUS, ACK);
    wr(t, REG_STATUS, ACK | DRV);
    wr(t, REG_DRIVER_FEATURES_SEL, 0);
    wr(t, REG_DRIVER_FEATURES, features as u32);
    wr(t, REG_DRIVER_FEATURES_SEL, 1);
    wr(t, REG_DRIVER_FEATURES, (features >> 32) as u32);
    wr(t, REG_STATUS, ACK | DRV | FOK);
}

fn setup_queue(t: &mut MmioTransport, idx: u32, q: &TestQueue, size: u32) {
    wr(t, REG_QUEUE_SEL, idx);
    wr(t, REG_QUEUE_NUM, size);
    wr(t, REG_QUEUE_DESC_LOW, q.desc_addr() as u32);
    wr(t, REG_QUEUE_DESC_HIGH, (q.desc_addr() >> 32) as u32);
    wr(t, REG_QUEUE_DRIVER_LOW, q.avail_addr() as u32);
    wr(t, REG_QUEUE_DRIVER_HIGH, 0);
    wr(t, REG_QUEUE_DEVICE_LOW, q.used_addr() as u32);
    wr(t, REG_QUEUE_DEVICE_HIGH, 0);
    wr(t, REG_QUEUE_READY, 1);
}

fn bring_up(s: &mut Setup) -> (TestQueue, TestQueue) {
    negotiate(&mut s.t, V1);
    let q0 = TestQueue::new(&s.mem, 0x1000, 16);
    let q1 = TestQueue::new(&s.mem, 0x4000, 8);
    setup_queue(&mut s.t, 0, &q0, 16);
    setup_queue(&mut s.t, 1, &q1, 8);
    wr(&mut s.t, REG_STATUS, ACK | DRV | FOK | DOK);
    (q0, q1)
}

#[test]
fn identification_registers() {
    let mut s = setup();
    assert_eq!(rd(&mut s.t, REG_MAGIC), 0x7472_6976);
    assert_eq!(rd(&mut s.t, REG_VERSION), 2);
    assert_eq!(rd(&mut s.t, REG_DEVICE_ID), 42);
    assert_eq!(rd(&mut s.t, REG_VENDOR_ID), VENDOR_ID);
    assert_eq!(rd(&mut s.t, REG_STATUS), 0);
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn bad_widths_offsets_ignored() {
    let mut s = setup();
    // Narrow, wide and unaligned register reads return zeros.
    let mut b2 = [0xffu8; 2];
    s.t.read(REG_MAGIC, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b8 = [0xffu8; 8];
    s.t.read(REG_MAGIC, &mut b8);
    assert_eq!(b8, [0; 8]);
    assert_eq!(rd(&mut s.t, REG_MAGIC + 1), 0);
    // Unknown and write-only offsets, and beyond the window.
    for off in [
        0x018,
        0x028,
        0x0c0,
        0x0f8,
        REG_QUEUE_NOTIFY,
        0x1000,
        u64::MAX - 3,
    ] {
        assert_eq!(rd(&mut s.t, off), 0, "offset {off:#x}");
    }
    // No shared memory regions.
    wr(&mut s.t, REG_SHM_SEL, 0);
    for off in [0x0b0, 0x0b4, 0x0b8, 0x0bc] {
        assert_eq!(rd(&mut s.t, off), u32::MAX, "offset {off:#x}");
    }
    let mut empty: [u8; 0] = [];
    s.t.read(0, &mut empty);
    // Config reads that run past the window are ignored too.
    let mut b = [0xffu8; 8];
    s.t.read(0xffc, &mut b);
    assert_eq!(b, [0; 8]);
    s.t.read(u64::MAX, &mut b);
    // Narrow status write does nothing.
    s.t.write(REG_STATUS, &[1]);
    s.t.write(REG_STATUS + 1, &1u32.to_le_bytes());
    s.t.write(REG_STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(rd(&mut s.t, REG_STATUS), 0);
    s.t.write(0x1000, &[1, 2, 3, 4]);
    s.t.write(u64::MAX, &[1, 2, 3, 4]);
    s.t.write(0x0f0, &[1, 2, 3, 4]);
    assert!(s.rec.lock().unwrap().config_writes.is_empty());
}

#[test]
fn config_space_is_forwarded() {
    let mut s = setup();
    let mut b = [0u8; 2];
    s.t.read(0x104, &mut b);
    assert_eq!(b, [0xa4, 0xa5]);
    let mut b = [0u8; 1];
    s.t.read(0xfff, &mut b);
    assert_eq!(b, [0xa0u8.wrapping_add(0xff)]);
    s.t.write(0x108, &[9, 9]);
    assert_eq!(s.rec.lock().unwrap().config_writes, vec![(8, vec![9, 9])]);
}

#[test]
fn device_features_by_selector() {
    let mut s = setup();
    wr(&mut s.t, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(rd(&mut s.t, REG_DEVICE_FEATURES), F_TEST as u32);
    wr(&mut s.t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut s.t, REG_DEVICE_FEATURES), 1); // VERSION_1 is bit 32
    wr(&mut s.t, REG_DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&mut s.t, REG_DEVICE_FEATURES), 0);
    wr(&mut s.t, REG_DEVICE_FEATURES_SEL, u32::MAX);
    assert_eq!(rd(&mut s.t, REG_DEVICE_FEATURES), 0);
}

#[test]
fn features_accepted() {
    let mut s = setup();
    negotiate(&mut s.t, V1 | F_TEST);
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV | FOK);
    assert_eq!(s.rec.lock().unwrap().acked, Some(V1 | F_TEST));
    // Feature writes after FEATURES_OK are ignored.
    wr(&mut s.t, REG_DRIVER_FEATURES_SEL, 0);
    wr(&mut s.t, REG_DRIVER_FEATURES, 0);
    assert_eq!(s.t.driver_features, V1 | F_TEST);
}

#[test]
fn features_without_version_1_rejected() {
    let mut s = setup();
    negotiate(&mut s.t, F_TEST);
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV);
    assert_eq!(s.rec.lock().unwrap().acked, None);
}

#[test]
fn features_not_offered_rejected() {
    let mut s = setup();
    negotiate(&mut s.t, V1 | (1 << 7));
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV);
    // Nor can the driver go on to DRIVER_OK.
    wr(&mut s.t, REG_STATUS, ACK | DRV | FOK | DOK);
    assert_eq!(rd(&mut s.t, REG_STATUS) & (FOK | DOK), 0);
    assert!(!s.t.is_activated());
}

#[test]
fn status_out_of_order_ignored() {
    let mut s = setup();
    wr(&mut s.t, REG_STATUS, DRV);
    assert_eq!(rd(&mut s.t, REG_STATUS), 0);
    wr(&mut s.t, REG_STATUS, ACK);
    wr(&mut s.t, REG_STATUS, ACK | FOK);
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK);
    wr(&mut s.t, REG_STATUS, ACK | DRV | DOK);
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV);
    // Clearing bits other than by a full reset is not allowed.
    wr(&mut s.t, REG_STATUS, DRV);
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV);
    // Features before DRIVER are ignored.
    let mut s = setup();
    wr(&mut s.t, REG_STATUS, ACK);
    wr(&mut s.t, REG_DRIVER_FEATURES, 0xffff_ffff);
    assert_eq!(s.t.driver_features, 0);
}

#[test]
fn queue_setup_and_activation() {
    let mut s = setup();
    // Queue registers before FEATURES_OK are ignored.
    wr(&mut s.t, REG_QUEUE_SEL, 0);
    wr(&mut s.t, REG_QUEUE_NUM, 4);
    assert_eq!(s.t.queues[0].size, 0);
    assert_eq!(rd(&mut s.t, REG_QUEUE_NUM_MAX), 16);
    wr(&mut s.t, REG_QUEUE_SEL, 1);
    assert_eq!(rd(&mut s.t, REG_QUEUE_NUM_MAX), 8);
    wr(&mut s.t, REG_QUEUE_SEL, 2);
    assert_eq!(rd(&mut s.t, REG_QUEUE_NUM_MAX), 0);
    wr(&mut s.t, REG_QUEUE_READY, 1);
    assert_eq!(rd(&mut s.t, REG_QUEUE_READY), 0);

    let (q0, q1) = bring_up(&mut s);
    assert!(s.t.is_activated());
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV | FOK | DOK);
    {
        let r = s.rec.lock().unwrap();
        assert_eq!(
            r.queues,
            vec![
                (16, q0.desc_addr(), q0.avail_addr(), q0.used_addr()),
                (8, q1.desc_addr(), q1.avail_addr(), q1.used_addr()),
            ]
        );
        assert_eq!(r.evts.len(), 2);
    }
    wr(&mut s.t, REG_QUEUE_SEL, 1);
    assert_eq!(rd(&mut s.t, REG_QUEUE_READY), 1);
    // Queue registers are frozen after DRIVER_OK.
    wr(&mut s.t, REG_QUEUE_NUM, 2);
    wr(&mut s.t, REG_QUEUE_READY, 0);
    assert_eq!(s.t.queues[1].size, 8);
    assert!(s.t.queues[1].ready);

    // The queue eventfds handed out are the ones the device got.
    let evts = s.t.queue_events().unwrap();
    assert_eq!(evts.len(), 2);
    assert_eq!(evts[1].0, 1);
    evts[1].1.write(1).unwrap();
    assert_eq!(s.rec.lock().unwrap().evts[1].read().unwrap(), 1);
    // A notify that reaches the transport signals the same eventfd.
    wr(&mut s.t, REG_QUEUE_NOTIFY, 0);
    assert_eq!(s.rec.lock().unwrap().evts[0].read().unwrap(), 1);
    wr(&mut s.t, REG_QUEUE_NOTIFY, 7);
    wr(&mut s.t, REG_QUEUE_NOTIFY, u32::MAX);
}

fn activation_fails(size0: u32, desc: Option<u64>) {
    let mut s = setup();
    negotiate(&mut s.t, V1);
    let q0 = TestQueue::new(&s.mem, 0x1000, 16);
    let q1 = TestQueue::new(&s.mem, 0x4000, 8);
    setup_queue(&mut s.t, 0, &q0, size0);
    if let Some(d) = desc {
        wr(&mut s.t, REG_QUEUE_SEL, 0);
        wr(&mut s.t, REG_QUEUE_READY, 0);
        wr(&mut s.t, REG_QUEUE_DESC_LOW, d as u32);
        wr(&mut s.t, REG_QUEUE_DESC_HIGH, (d >> 32) as u32);
        wr(&mut s.t, REG_QUEUE_READY, 1);
    }
    setup_queue(&mut s.t, 1, &q1, 8);
    wr(&mut s.t, REG_STATUS, ACK | DRV | FOK | DOK);
    assert!(!s.t.is_activated());
    assert_ne!(rd(&mut s.t, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    assert_eq!(s.irq.read().unwrap(), 1);
    assert!(s.rec.lock().unwrap().queues.is_empty());
    // A reset clears it all.
    wr(&mut s.t, REG_STATUS, 0);
    assert_eq!(rd(&mut s.t, REG_STATUS), 0);
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), 0);
}

#[test]
fn queue_size_not_power_of_two() {
    activation_fails(12, None);
}

#[test]
fn queue_size_above_max() {
    activation_fails(32, None);
}

#[test]
fn queue_size_zero_or_huge() {
    activation_fails(0, None);
    activation_fails(0x1_0000, None);
}

#[test]
fn queue_outside_memory() {
    activation_fails(16, Some(0x10_0000));
    activation_fails(16, Some(!0xf));
}

#[test]
fn queue_misaligned() {
    activation_fails(16, Some(0x1008));
}

#[test]
fn queue_not_ready() {
    let mut s = setup();
    negotiate(&mut s.t, V1);
    let q0 = TestQueue::new(&s.mem, 0x1000, 16);
    setup_queue(&mut s.t, 0, &q0, 16);
    wr(&mut s.t, REG_STATUS, ACK | DRV | FOK | DOK);
    assert!(!s.t.is_activated());
    assert_ne!(rd(&mut s.t, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

#[test]
fn device_activation_error_needs_reset() {
    let mut s = setup_with(vec![16, 8], true);
    bring_up(&mut s);
    assert!(!s.t.is_activated());
    assert_ne!(rd(&mut s.t, REG_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
}

#[test]
fn interrupts_set_status_and_fire_irqfd() {
    let mut s = setup();
    bring_up(&mut s);
    let irq = s.rec.lock().unwrap().interrupt.clone().unwrap();
    irq.trigger(VIRTIO_MMIO_INT_VRING).unwrap();
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
    assert_eq!(s.irq.read().unwrap(), 1);
    irq.trigger(VIRTIO_MMIO_INT_CONFIG).unwrap();
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), 3);
    wr(&mut s.t, REG_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    assert_eq!(rd(&mut s.t, REG_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    // A device that the guest broke reports NEEDS_RESET.
    irq.set_needs_reset().unwrap();
    assert_eq!(
        rd(&mut s.t, REG_STATUS),
        ACK | DRV | FOK | DOK | VIRTIO_CONFIG_S_NEEDS_RESET
    );
}

#[test]
fn reset_returns_to_initial_state() {
    let mut s = setup();
    bring_up(&mut s);
    let gen = rd(&mut s.t, REG_CONFIG_GENERATION);
    wr(&mut s.t, REG_STATUS, 0);
    assert_eq!(s.rec.lock().unwrap().resets, 1);
    assert!(!s.t.is_activated());
    assert_eq!(rd(&mut s.t, REG_STATUS), 0);
    assert_ne!(rd(&mut s.t, REG_CONFIG_GENERATION), gen);
    wr(&mut s.t, REG_QUEUE_SEL, 0);
    assert_eq!(rd(&mut s.t, REG_QUEUE_READY), 0);
    assert_eq!(s.t.driver_features, 0);
    // And the device can be brought up again.
    bring_up(&mut s);
    assert!(s.t.is_activated());
    // Reset before activation does not call into the device.
    let mut s = setup();
    wr(&mut s.t, REG_STATUS, ACK);
    wr(&mut s.t, REG_STATUS, 0);
    assert_eq!(s.rec.lock().unwrap().resets, 0);
}

#[test]
fn constructor_validates_device() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    for sizes in [vec![], vec![3], vec![0], vec![16, 65535]] {
        let dev = MockDevice {
            rec: Arc::default(),
            sizes,
            fail_activate: false,
        };
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        assert!(MmioTransport::new(Box::new(dev), mem.clone(), irq).is_err());
    }
}

/// A guest that renegotiates badly in a loop (two MMIO writes a round)
/// gets a bounded number of warning lines, not one per attempt.
#[test]
fn a_guest_flooding_bad_negotiations_gets_few_log_lines() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Lines::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut s = setup();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..10_000 {
            wr(&mut s.t, REG_STATUS, 0);
            negotiate(&mut s.t, F_TEST);
        }
    });
    assert_eq!(rd(&mut s.t, REG_STATUS), ACK | DRV);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines = text.lines().count() as u64;
    // Other tests share the call site's bucket: never more than one burst
    // plus the refills of a slow run.
    assert!(
        lines <= crate::logging::BURST + 5,
        "{lines} lines for 10000 bad negotiations:\n{text}"
    );
}
