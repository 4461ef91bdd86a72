//! Arbitrary bytes laid out as guest memory holding a split virtqueue,
//! driven as the virtio-net TX queue (chains gathered into frames) or RX
//! queue (frames from the "tap" copied into the guest's buffers, merged or
//! not). Nothing may panic, whatever the descriptors and frames are.
//!
//! Input: a 16-byte header, then guest memory from address 0.
//! - byte 0: bit 0 RX (else TX), bit 1 MRG_RXBUF, bit 2 offloads acked,
//!   bit 3 EVENT_IDX
//! - byte 1: queue size, `1 << (b % 9)` (1..=256)
//! - bytes 2..4, 4..6, 6..8: descriptor table, avail ring, used ring
//!   addresses (little endian; aligned down as the spec requires)
//! - bytes 8..14: RX only, three frame lengths (le16), each taken from the
//!   start of the memory image (so the frames' headers are fuzzed too)
//! - bytes 14..16: unused
#![no_main]

use libfuzzer_sys::fuzz_target;
use vessel_vmm::fuzzing;
use virtio_queue::QueueT;
const VERSION_1: u64 = 1 << 32;
const EVENT_IDX: u64 = 1 << 29;
const MRG_RXBUF: u64 = 1 << 15;
/// CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6.
const OFFLOADS: u64 = (1 << 0) | (1 << 1) | (1 << 7) | (1 << 8) | (1 << 11) | (1 << 12);

fn le16(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (hdr, image) = data.split_at(16);
    let mem = fuzzing::guest_memory(image).expect("guest memory");

    let mode = hdr[0];
    let mut acked = VERSION_1;
    if mode & 2 != 0 {
        acked |= MRG_RXBUF;
    }
    if mode & 4 != 0 {
        acked |= OFFLOADS;
    }
    if mode & 8 != 0 {
        acked |= EVENT_IDX;
    }
    let addrs = [hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7]];
    let Some(mut q) = fuzzing::fuzzed_queue(&mem, hdr[1], addrs, acked & EVENT_IDX != 0) else {
        return;
    };

    if mode & 1 == 0 {
        let _ = fuzzing::net_tx(&mem, &mut q, acked);
    } else {
        let frames = (0..3)
            .map(|i| {
                let len = (le16(&hdr[8 + 2 * i..10 + 2 * i]) as usize).min(image.len());
                image[..len].to_vec()
            })
            .collect();
        let _ = fuzzing::net_rx(&mem, &mut q, frames, acked);
    }
    // Whatever happened, the used-ring bookkeeping must stay sane.
    let _ = q.needs_notification(&mem);
});
