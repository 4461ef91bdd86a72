//! Entry points for the fuzz targets in `vmm/fuzz/` only: thin wrappers that
//! expose the guest-facing parsers which are otherwise private to their
//! devices. Not a stable API; nothing else should use it.

use std::fs::File;

use virtio_queue::DescriptorChain;

use crate::devices::virtio::block::request::{self, Backend};
use crate::devices::virtio::net::backend::FrameIo;
use crate::devices::virtio::net::counters::NetCounters;
use crate::devices::virtio::net::rx::{Rx, RxState};
use crate::devices::virtio::net::tx as net_tx;
use crate::devices::virtio::vsock::packet::{RxBuffer, TxPacket, MAX_PKT_DATA};
use crate::devices::virtio::GuestMemory;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use crate::devices::virtio::vsock::handshake::{HandshakeError, HandshakeParser, MAX_LINE};
pub use mmio_devices::{DeviceKind, DevicesHarness};
pub use vsock_muxer::MuxerHarness;

mod mmio_devices;
mod vsock_muxer;

/// Guest memory size of the queue fuzz targets.
pub const MEM_SIZE: usize = 0x1_0000;

/// Guest memory of `MEM_SIZE` bytes holding `image` (cut to fit) from
/// address 0; None if it cannot be mapped.
pub fn guest_memory(image: &[u8]) -> Option<GuestMemory> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
    let n = image.len().min(MEM_SIZE);
    mem.write_slice(&image[..n], GuestAddress(0)).ok()?;
    Some(mem)
}

/// The split queue a driver sets up from six fuzzed bytes, as the queue
/// targets read their header: size `1 << (size % 9)` (1..=256); descriptor
/// table, avail and used ring at the three little-endian u16 in `addrs`
/// (aligned down as the spec requires). None where the transport would
/// refuse the queue.
pub fn fuzzed_queue(mem: &GuestMemory, size: u8, addrs: [u8; 6], event_idx: bool) -> Option<Queue> {
    let addr = |i: usize, align: u64| {
        GuestAddress(u64::from(u16::from_le_bytes([addrs[i], addrs[i + 1]])) & !(align - 1))
    };
    let mut q = Queue::new(256).ok()?;
    q.try_set_size(1u16 << (size % 9)).ok()?;
    q.try_set_desc_table_address(addr(0, 16)).ok()?;
    q.try_set_avail_ring_address(addr(2, 2)).ok()?;
    q.try_set_used_ring_address(addr(4, 4)).ok()?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}

/// Parses a vsock TX chain as the device does, then copies its payload.
/// Returns the payload length, or `None` if the device would reject it.
pub fn vsock_tx(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Option<usize> {
    let mut pkt = TxPacket::parse(mem, chain).ok()?;
    let mut buf = vec![0u8; MAX_PKT_DATA];
    pkt.read_data(&mut buf).ok().map(<[u8]>::len)
}

/// Writes a reply header and up to `data` bytes into a vsock RX chain.
/// Returns the used length, or `None` if the chain is unusable.
pub fn vsock_rx(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    data: &[u8],
) -> Option<u32> {
    let rx = RxBuffer::new(mem, chain).ok()?;
    let n = rx.data_capacity().min(data.len());
    let hdr = Default::default();
    rx.write(&hdr, &data[..n]).ok()
}

/// Serves one virtio-blk request chain against `file` (a disk of `sectors`
/// 512-byte sectors); returns the used length.
pub fn blk_request(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    file: &File,
    sectors: u64,
    read_only: bool,
) -> u32 {
    let id = [0u8; crate::devices::virtio::block::disk::ID_BYTES];
    let backend = Backend {
        file,
        sectors,
        read_only,
        write_through: false,
        max_data: 1 << 20,
        id: &id,
    };
    let mut buf = vec![0u8; request::IO_CHUNK];
    request::handle(mem, chain, &backend, &mut buf)
}

/// Frames in memory standing in for a tap: `recv` hands out `frames` in
/// order, `send` copies what the device gathers (so every iovec is read).
struct MemFrames {
    frames: std::cell::RefCell<std::collections::VecDeque<Vec<u8>>>,
    sent: std::cell::Cell<usize>,
}

impl FrameIo for MemFrames {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let f = self
            .frames
            .borrow_mut()
            .pop_front()
            .ok_or(std::io::ErrorKind::WouldBlock)?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(n)
    }

    unsafe fn send(&self, iov: &[libc::iovec]) -> std::io::Result<usize> {
        let mut copy = Vec::new();
        for v in iov {
            let start = copy.len();
            copy.resize(start + v.iov_len, 0);
            // SAFETY: the caller vouches that every iovec is readable.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    v.iov_base.cast::<u8>(),
                    copy[start..].as_mut_ptr(),
                    v.iov_len,
                )
            };
        }
        self.sent.set(self.sent.get() + copy.len());
        Ok(copy.len())
    }
}

/// Runs the virtio-net TX path over `queue` until it is empty or broken,
/// with features `acked`. Returns the frames sent, or the error that
/// would put the device in needs-reset.
pub fn net_tx(mem: &GuestMemory, queue: &mut Queue, acked: u64) -> Result<u64, String> {
    let io = MemFrames {
        frames: Default::default(),
        sent: Default::default(),
    };
    let counters = NetCounters::default();
    // Each call serves one budget; a queue holds at most 32768 chains.
    for _ in 0..8 {
        if !net_tx::process(mem, queue, &io, acked, &counters)?.more {
            break;
        }
    }
    Ok(counters.snapshot().tx_packets)
}

/// Runs the virtio-net RX path delivering `frames` (each starting with
/// the 12-byte header the tap would write) into `queue`. Returns the
/// frames delivered, or the error that would put the device in needs-reset.
pub fn net_rx(
    mem: &GuestMemory,
    queue: &mut Queue,
    frames: Vec<Vec<u8>>,
    acked: u64,
) -> Result<u64, String> {
    let io = MemFrames {
        frames: std::cell::RefCell::new(frames.into()),
        sent: Default::default(),
    };
    let counters = NetCounters::default();
    let mut rx = Rx::new(acked);
    for _ in 0..8 {
        if rx.process(mem, queue, &io, &counters)?.0 != RxState::Budget {
            break;
        }
    }
    Ok(counters.snapshot().rx_packets)
}
