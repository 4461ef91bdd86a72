//! Arbitrary bytes laid out as guest memory holding a split virtqueue, whose
//! chains are then parsed as the vsock TX/RX and virtio-blk devices parse
//! them. Nothing may panic, whatever the descriptors point at.
//!
//! Input: an 8-byte header, then guest memory from address 0.
//! - byte 0: which parser (`% 4`: vsock TX, vsock RX, blk, blk read-only)
//! - byte 1: queue size, `1 << (b % 9)` (1..=256)
//! - bytes 2..4, 4..6, 6..8: descriptor table, avail ring, used ring
//!   addresses (little endian; aligned down as the spec requires)
#![no_main]

use std::fs::File;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vessel_vmm::fuzzing;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const MEM_SIZE: usize = 0x1_0000;
const DISK_SECTORS: u64 = 64;

/// A scratch disk image, unlinked at once so nothing is left behind.
fn disk() -> &'static File {
    static DISK: OnceLock<File> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("vessel-fuzz-disk-{}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("scratch disk");
        let _ = std::fs::remove_file(&path);
        f.set_len(DISK_SECTORS * 512).expect("scratch disk size");
        f
    })
}

fn le16(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (hdr, image) = data.split_at(8);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let n = image.len().min(MEM_SIZE);
    mem.write_slice(&image[..n], GuestAddress(0)).unwrap();

    let size = 1u16 << (hdr[1] % 9);
    let mut q = Queue::new(256).unwrap();
    if q.try_set_size(size).is_err()
        || q.try_set_desc_table_address(GuestAddress(le16(&hdr[2..4]) & !0xf))
            .is_err()
        || q.try_set_avail_ring_address(GuestAddress(le16(&hdr[4..6]) & !1))
            .is_err()
        || q.try_set_used_ring_address(GuestAddress(le16(&hdr[6..8]) & !3))
            .is_err()
    {
        return;
    }
    q.set_ready(true);
    if !q.is_valid(&mem) {
        return;
    }

    for _ in 0..usize::from(size) {
        let Some(chain) = q.pop_descriptor_chain(&mem) else {
            break;
        };
        let head = chain.head_index();
        let used = match hdr[0] % 4 {
            0 => fuzzing::vsock_tx(&mem, chain).map_or(0, |n| n as u32),
            1 => fuzzing::vsock_rx(&mem, chain, image).unwrap_or(0),
            m => fuzzing::blk_request(&mem, chain, disk(), DISK_SECTORS, m == 3),
        };
        if q.add_used(&mem, head, used).is_err() {
            break;
        }
    }
});
