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
use virtio_queue::QueueT;
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

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (hdr, image) = data.split_at(8);
    let mem = fuzzing::guest_memory(image).expect("guest memory");

    let addrs = [hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7]];
    let Some(mut q) = fuzzing::fuzzed_queue(&mem, hdr[1], addrs, false) else {
        return;
    };
    let size = q.size();

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
