//! Entry points for the fuzz targets in `vmm/fuzz/` only: thin wrappers that
//! expose the guest-facing parsers which are otherwise private to their
//! devices. Not a stable API; nothing else should use it.

use std::fs::File;

use virtio_queue::DescriptorChain;

use crate::devices::virtio::block::request::{self, Backend};
use crate::devices::virtio::vsock::packet::{RxBuffer, TxPacket, MAX_PKT_DATA};
use crate::devices::virtio::GuestMemory;

pub use crate::devices::virtio::vsock::handshake::{HandshakeError, HandshakeParser, MAX_LINE};

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
