//! The block device driven from a test "guest": a real virtqueue in guest
//! memory, the real worker thread and a real image file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::{DiskError, DiskImage, DiskSpec};

/// Parses a `--disk` value and opens the image.
fn open(arg: &str) -> Result<DiskImage, DiskError> {
    DiskImage::open(&arg.parse::<DiskSpec>().unwrap())
}
use super::*;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_NEXT, F_WRITE};

const MEM_SIZE: usize = 8 << 20;
const QUEUE_BASE: u64 = 0x1_0000;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x1f_0000;
const TIMEOUT: Duration = Duration::from_secs(5);
/// Image size in sectors.
const SECTORS: u64 = 64;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// A temporary image file, removed on drop.
struct TempImage(PathBuf);

impl TempImage {
    fn new(name: &str, contents: &[u8]) -> TempImage {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vessel-blk-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&p, contents).unwrap();
        TempImage(p)
    }

    /// An image whose sector `s` is filled with the byte `s`.
    fn patterned(name: &str) -> TempImage {
        let mut v = Vec::new();
        for s in 0..SECTORS {
            v.extend(std::iter::repeat_n(s as u8, 512));
        }
        TempImage::new(name, &v)
    }

    fn arg(&self, opts: &str) -> String {
        format!("{}{opts}", self.0.display())
    }

    fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Guest {
    mem: GuestMemory,
    q: TestQueue,
    evt: EventFd,
    irq: Arc<TestInterrupt>,
    dev: Block,
    img: TempImage,
}

impl Guest {
    fn new(opts: &str) -> Guest {
        Self::with_features(opts, None)
    }

    fn with_features(opts: &str, features: Option<u64>) -> Guest {
        let img = TempImage::patterned("disk.img");
        let mut dev = Block::new(open(&img.arg(opts)).unwrap());
        dev.ack_features(features.unwrap_or(dev.features()));
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
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
            img,
        }
    }

    fn header(&self, ty: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ty.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(HDR)).unwrap();
    }

    /// Publishes a chain, kicks the device and returns (used len, status).
    fn submit(&mut self, bufs: &[(u64, u32, u16)]) -> (u32, u8) {
        self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let head = self.q.add_chain(bufs);
        self.q.publish(head);
        self.evt.write(1).unwrap();
        let (id, len) = self.q.wait_used(TIMEOUT).expect("no used element");
        assert_eq!(id, u32::from(head));
        (len, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }

    /// A well-formed request with one data buffer of `len` bytes.
    fn request(&mut self, ty: u32, sector: u64, len: u32) -> (u32, u8) {
        self.header(ty, sector);
        let data_flags = if ty == VIRTIO_BLK_T_OUT { 0 } else { F_WRITE };
        let mut bufs = vec![(HDR, 16, 0)];
        if len > 0 {
            bufs.push((DATA, len, data_flags));
        }
        bufs.push((STATUS, 1, F_WRITE));
        self.submit(&bufs)
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(DATA)).unwrap();
        v
    }

    fn set_data(&self, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(DATA)).unwrap();
    }
}

#[test]
fn config_space_and_features() {
    let g = Guest::new("");
    assert_eq!(g.dev.device_type(), 2);
    let mut cfg = [0u8; 24];
    g.dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), SECTORS);
    assert_eq!(u32::from_le_bytes(cfg[8..12].try_into().unwrap()), SIZE_MAX);
    assert_eq!(u32::from_le_bytes(cfg[12..16].try_into().unwrap()), SEG_MAX);
    assert_eq!(&cfg[16..], &[0; 8]);
    let mut far = [0xffu8; 4];
    g.dev.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
    let f = g.dev.features();
    assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_SEG_MAX), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_SIZE_MAX), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    let ro = Guest::new(",ro");
    assert_ne!(ro.dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
}

#[test]
fn reads_sectors() {
    let mut g = Guest::new("");
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 3, 1024), (1025, OK));
    let d = g.data(1024);
    assert!(d[..512].iter().all(|&b| b == 3));
    assert!(d[512..].iter().all(|&b| b == 4));
    // The last sector is in range.
    assert_eq!(g.request(VIRTIO_BLK_T_IN, SECTORS - 1, 512), (513, OK));
    assert!(g.data(512).iter().all(|&b| b == (SECTORS - 1) as u8));
    assert!(g.irq.count.load(Ordering::SeqCst) >= 1);
}

#[test]
fn writes_then_reads_back_over_split_buffers() {
    let mut g = Guest::new("");
    let payload: Vec<u8> = (0..1536u32).map(|i| (i * 7) as u8).collect();
    g.set_data(&payload);
    g.header(VIRTIO_BLK_T_OUT, 10);
    // Header, three data pieces of odd sizes, status.
    let r = g.submit(&[
        (HDR, 16, 0),
        (DATA, 100, 0),
        (DATA + 100, 1000, 0),
        (DATA + 1100, 436, 0),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r, (1, OK));
    let file = g.img.contents();
    assert_eq!(&file[10 * 512..13 * 512], &payload[..]);
    assert!(file[13 * 512..14 * 512].iter().all(|&b| b == 13));

    g.set_data(&[0; 1536]);
    g.header(VIRTIO_BLK_T_IN, 10);
    let r = g.submit(&[
        (HDR, 16, 0),
        (DATA, 512, F_WRITE),
        (DATA + 512, 1024, F_WRITE),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r, (1537, OK));
    assert_eq!(g.data(1536), payload);
}

#[test]
fn header_and_status_may_share_buffers_with_data() {
    let mut g = Guest::new("");
    // One writable descriptor holding data and the status byte.
    g.header(VIRTIO_BLK_T_IN, 1);
    let (len, _) = g.submit(&[(HDR, 16, 0), (DATA, 513, F_WRITE)]);
    assert_eq!(len, 513);
    assert_eq!(g.data(513)[512], OK);
    assert!(g.data(512).iter().all(|&b| b == 1));
}

#[test]
fn flush_and_write_through() {
    let mut g = Guest::new("");
    assert_eq!(g.request(VIRTIO_BLK_T_FLUSH, 0, 0), (1, OK));
    let mut ro = Guest::new(",ro");
    assert_eq!(ro.request(VIRTIO_BLK_T_FLUSH, 0, 0), (1, OK));
    // Without FLUSH negotiated every write is synced; it still works.
    let mut wt = Guest::with_features("", Some(1 << VIRTIO_F_VERSION_1));
    wt.set_data(&[9; 512]);
    assert_eq!(wt.request(VIRTIO_BLK_T_OUT, 0, 512), (1, OK));
    assert!(wt.img.contents()[..512].iter().all(|&b| b == 9));
}

#[test]
fn get_id_from_serial_or_file_name() {
    let mut g = Guest::new(",serial=vessel-disk-0");
    assert_eq!(g.request(VIRTIO_BLK_T_GET_ID, 0, 20), (21, OK));
    assert_eq!(&g.data(20)[..], b"vessel-disk-0\0\0\0\0\0\0\0");

    let mut g = Guest::new("");
    assert_eq!(g.request(VIRTIO_BLK_T_GET_ID, 0, 20), (21, OK));
    let name = g.img.0.file_name().unwrap().to_str().unwrap().to_string();
    let want: Vec<u8> = name.bytes().take(20).collect();
    assert_eq!(&g.data(20)[..want.len()], &want[..]);
    // A short buffer gets what fits.
    g.set_data(&[0xee; 8]);
    assert_eq!(g.request(VIRTIO_BLK_T_GET_ID, 0, 4), (5, OK));
    assert_eq!(&g.data(5)[..4], &want[..4]);
}

#[test]
fn read_only_refuses_writes() {
    let mut g = Guest::new(",ro");
    let before = g.img.contents();
    g.set_data(&[0x55; 512]);
    assert_eq!(g.request(VIRTIO_BLK_T_OUT, 0, 512), (1, IOERR));
    assert_eq!(g.img.contents(), before);
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 2, 512), (513, OK));
    assert!(g.data(512).iter().all(|&b| b == 2));
}

#[test]
fn out_of_range_and_overflowing_sectors() {
    let mut g = Guest::new("");
    let before = g.img.contents();
    assert_eq!(g.request(VIRTIO_BLK_T_IN, SECTORS, 512).1, IOERR);
    assert_eq!(g.request(VIRTIO_BLK_T_IN, SECTORS - 1, 1024).1, IOERR);
    g.set_data(&[0x77; 1024]);
    assert_eq!(g.request(VIRTIO_BLK_T_OUT, SECTORS - 1, 1024), (1, IOERR));
    for sector in [u64::MAX, u64::MAX - 1, u64::MAX / 512, u64::MAX / 512 + 1] {
        assert_eq!(g.request(VIRTIO_BLK_T_IN, sector, 1024).1, IOERR);
        assert_eq!(g.request(VIRTIO_BLK_T_OUT, sector, 1024), (1, IOERR));
    }
    assert_eq!(g.img.contents(), before);
}

#[test]
fn malformed_data_buffers() {
    let mut g = Guest::new("");
    let before = g.img.contents();
    // Zero-length data.
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 0, 0), (1, IOERR));
    assert_eq!(g.request(VIRTIO_BLK_T_OUT, 0, 0), (1, IOERR));
    g.header(VIRTIO_BLK_T_IN, 0);
    let r = g.submit(&[(HDR, 16, 0), (DATA, 0, F_WRITE), (STATUS, 1, F_WRITE)]);
    assert_eq!(r, (1, IOERR));
    // Not whole sectors.
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 0, 100).1, IOERR);
    // A read into device-readable memory.
    g.header(VIRTIO_BLK_T_IN, 0);
    let r = g.submit(&[(HDR, 16, 0), (DATA, 512, 0), (STATUS, 1, F_WRITE)]);
    assert_eq!(r, (1, IOERR));
    // A write whose data is device-writable.
    g.header(VIRTIO_BLK_T_OUT, 0);
    let r = g.submit(&[(HDR, 16, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
    assert_eq!(r, (1, IOERR));
    // Data beyond guest memory.
    g.header(VIRTIO_BLK_T_IN, 0);
    let r = g.submit(&[
        (HDR, 16, 0),
        (MEM_SIZE as u64 - 256, 512, F_WRITE),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r.0, 0);
    // Write data beyond guest memory: the status still says IOERR.
    g.header(VIRTIO_BLK_T_OUT, 0);
    let r = g.submit(&[
        (HDR, 16, 0),
        (MEM_SIZE as u64 - 256, 512, 0),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r, (1, IOERR));
    // A header beyond guest memory likewise.
    let r = g.submit(&[(u64::MAX - 8, 16, 0), (STATUS, 1, F_WRITE)]);
    assert_eq!(r, (1, IOERR));
    assert_eq!(g.img.contents(), before);
}

#[test]
fn bad_type_and_bad_header() {
    let mut g = Guest::new("");
    assert_eq!(g.request(VIRTIO_BLK_T_DISCARD, 0, 16).1, UNSUPP);
    assert_eq!(g.request(0xdead_beef, 0, 0), (1, UNSUPP));
    // A header shorter than 16 bytes.
    g.header(VIRTIO_BLK_T_IN, 0);
    let r = g.submit(&[(HDR, 8, 0), (DATA, 512, F_WRITE), (STATUS, 1, F_WRITE)]);
    assert_eq!(r.1, IOERR);
    // A header split over two descriptors is fine.
    g.header(VIRTIO_BLK_T_IN, 5);
    let r = g.submit(&[
        (HDR, 4, 0),
        (HDR + 4, 12, 0),
        (DATA, 512, F_WRITE),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r, (513, OK));
    assert!(g.data(512).iter().all(|&b| b == 5));
}

#[test]
fn missing_or_empty_status_completes_without_panic() {
    let mut g = Guest::new("");
    g.header(VIRTIO_BLK_T_IN, 0);
    // No writable descriptor at all.
    assert_eq!(g.submit(&[(HDR, 16, 0)]).0, 0);
    // A zero-length status descriptor.
    assert_eq!(g.submit(&[(HDR, 16, 0), (STATUS, 0, F_WRITE)]).0, 0);
    // Status outside guest memory.
    assert_eq!(
        g.submit(&[(HDR, 16, 0), (u64::MAX, 1, F_WRITE)]).0,
        0,
        "status beyond memory"
    );
    // The device still serves.
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 0, 512), (513, OK));
    assert!(!g.irq.needs_reset());
}

#[test]
fn garbage_descriptors_do_not_hang_or_panic() {
    let mut g = Guest::new("");
    // A descriptor chained to itself: the chain ends at the queue size.
    g.header(VIRTIO_BLK_T_IN, 0);
    g.q.write_desc(100, HDR, 16, F_NEXT, 100);
    g.q.publish(100);
    g.evt.write(1).unwrap();
    assert_eq!(g.q.wait_used(TIMEOUT).unwrap().0, 100);
    // A next index beyond the queue.
    g.q.write_desc(101, HDR, 16, F_NEXT, 60000);
    g.q.publish(101);
    g.evt.write(1).unwrap();
    assert_eq!(g.q.wait_used(TIMEOUT).unwrap(), (101, 0));
    // Huge lengths.
    g.header(VIRTIO_BLK_T_IN, 0);
    let r = g.submit(&[
        (HDR, 16, 0),
        (DATA, u32::MAX, F_WRITE),
        (STATUS, 1, F_WRITE),
    ]);
    assert_eq!(r.0, 0);
    assert_eq!(g.request(VIRTIO_BLK_T_IN, 0, 512), (513, OK));
    assert!(!g.irq.needs_reset());

    // A broken avail ring stops the device until reset.
    g.q.set_avail_idx(g.q.used_idx().wrapping_add(QUEUE_SIZE + 1));
    g.evt.write(1).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !g.irq.needs_reset() {
        assert!(Instant::now() < deadline, "no needs-reset");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(g.dev.reset());
    assert!(g.dev.reset());
}

#[test]
fn disk_open_errors_name_flag_and_path() {
    let e = open("/nonexistent/x.img").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("--disk /nonexistent/x.img: cannot open read-write"));
    let e = open("/nonexistent/x.img,ro").unwrap_err();
    assert!(e
        .to_string()
        .starts_with("--disk /nonexistent/x.img: cannot open read-only"));
    let e = open("/tmp,ro").unwrap_err();
    assert_eq!(
        e.to_string(),
        "--disk /tmp: not a regular file or block device"
    );
    let empty = TempImage::new("empty.img", b"");
    let e = open(&empty.arg("")).unwrap_err();
    assert!(matches!(e, DiskError::Empty(_)));
    let odd = TempImage::new("odd.img", &[0; 1000]);
    let e = open(&odd.arg(",ro")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "--disk {}: size 1000 bytes is not a multiple of 512",
            odd.0.display()
        )
    );
}

#[test]
fn disk_locks() {
    let img = TempImage::new("lock.img", &[0; 1024]);
    let rw = open(&img.arg("")).unwrap();
    assert_eq!(rw.sectors, 2);
    let e = open(&img.arg(",ro")).unwrap_err();
    assert!(matches!(e, DiskError::Locked(_)));
    drop(rw);
    let ro1 = open(&img.arg(",ro")).unwrap();
    let _ro2 = open(&img.arg(",ro")).unwrap();
    assert!(ro1.read_only);
    let e = open(&img.arg("")).unwrap_err();
    assert!(matches!(e, DiskError::Locked(_)));
}
