//! The virtio-vsock packet header (virtio 1.2 §5.10.6) and its parsing from
//! and writing into descriptor chains.
//!
//! The `virtio-vsock` crate's `VsockPacket` accepts only a header descriptor
//! plus at most one data descriptor, each inside a single memory region; a
//! driver may legally split a packet across any number of descriptors, so we
//! parse with virtio-queue's `Reader`/`Writer`, which walk whole chains, and
//! keep the 44-byte header as a plain struct.

use std::io::{self, Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};

use super::super::GuestMemory;

/// Size of the packed header on the wire.
pub const HDR_SIZE: usize = 44;
/// Largest payload we accept from or send to the guest in one packet.
pub const MAX_PKT_DATA: usize = 64 * 1024;
/// The well-known CID of the host.
pub const HOST_CID: u64 = 2;
/// Stream sockets, the only type we offer (no VIRTIO_VSOCK_F_SEQPACKET).
pub const TYPE_STREAM: u16 = 1;
/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (§5.10.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection reset.
    Rst = 3,
    /// No more data in one or both directions.
    Shutdown = 4,
    /// Payload.
    Rw = 5,
    /// Unsolicited credit information.
    CreditUpdate = 6,
    /// Asks the peer for a CREDIT_UPDATE.
    CreditRequest = 7,
}

impl Op {
    /// Decodes an op field; `None` for values the spec does not define.
    pub fn from_u16(v: u16) -> Option<Op> {
        Some(match v {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// `struct virtio_vsock_hdr`, decoded to host endianness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation (see [`Op`]).
    pub op: u16,
    /// Op-specific flags.
    pub flags: u32,
    /// Sender's total receive buffer space.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

impl Header {
    /// Decodes the little-endian wire form.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Header {
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |o: usize| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[o..o + 4]);
            u32::from_le_bytes(a)
        };
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// Encodes to the little-endian wire form.
    pub fn to_bytes(self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// A header answering `self` with `op`: CIDs and ports swapped, no payload.
    pub fn reply(&self, op: Op) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: op as u16,
            ..Header::default()
        }
    }
}

/// Why a TX chain was dropped.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The chain points outside guest memory or is otherwise unusable.
    #[error("bad descriptor chain: {0:?}")]
    Chain(virtio_queue::Error),
    /// Fewer readable bytes than a header.
    #[error("chain holds {0} readable bytes, less than a header")]
    Short(usize),
    /// `len` is above our cap.
    #[error("payload length {0} exceeds the maximum")]
    TooLong(u32),
    /// `len` is more than the chain carries.
    #[error("payload length {len} exceeds the {avail} bytes in the chain")]
    Truncated {
        /// Header's len.
        len: u32,
        /// Bytes left in the chain.
        avail: usize,
    },
    /// Copying from guest memory failed.
    #[error("reading the chain: {0}")]
    Io(#[from] io::Error),
}

/// A TX packet whose header has been read and checked; the payload is
/// still in guest memory so the device can decide before copying it.
pub struct TxPacket<'a> {
    /// The validated header.
    pub hdr: Header,
    reader: Reader<'a>,
}

impl<'a> TxPacket<'a> {
    /// Reads and checks the header of a TX chain: header size, `len` within
    /// [`MAX_PKT_DATA`] and within what the chain actually carries.
    pub fn parse(
        mem: &'a GuestMemory,
        chain: DescriptorChain<&'a GuestMemory>,
    ) -> Result<TxPacket<'a>, TxError> {
        let mut reader = chain.reader(mem).map_err(TxError::Chain)?;
        let avail = reader.available_bytes();
        if avail < HDR_SIZE {
            return Err(TxError::Short(avail));
        }
        let mut raw = [0u8; HDR_SIZE];
        reader.read_exact(&mut raw)?;
        let hdr = Header::from_bytes(&raw);
        if hdr.len as usize > MAX_PKT_DATA {
            return Err(TxError::TooLong(hdr.len));
        }
        let avail = reader.available_bytes();
        if hdr.len as usize > avail {
            return Err(TxError::Truncated {
                len: hdr.len,
                avail,
            });
        }
        Ok(TxPacket { hdr, reader })
    }

    /// Copies the payload (`hdr.len` bytes) into `buf`, returning it.
    pub fn read_data<'b>(&mut self, buf: &'b mut [u8]) -> Result<&'b [u8], TxError> {
        let len = self.hdr.len as usize;
        let dst = buf.get_mut(..len).ok_or(TxError::TooLong(self.hdr.len))?;
        self.reader.read_exact(dst)?;
        Ok(dst)
    }
}

/// Why an RX chain cannot take packets: the driver broke the queue.
#[derive(Debug, thiserror::Error)]
pub enum RxError {
    /// The chain points outside guest memory or is otherwise unusable.
    #[error("bad descriptor chain: {0:?}")]
    Chain(virtio_queue::Error),
    /// Fewer writable bytes than a header.
    #[error("chain holds {0} writable bytes, less than a header")]
    Short(usize),
    /// Copying into guest memory failed.
    #[error("writing the chain: {0}")]
    Io(#[from] io::Error),
}

/// An RX chain checked to hold at least a header.
pub struct RxBuffer<'a> {
    writer: Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    /// Wraps an RX chain; fails if it is unusable or smaller than a header.
    pub fn new(
        mem: &'a GuestMemory,
        chain: DescriptorChain<&'a GuestMemory>,
    ) -> Result<RxBuffer<'a>, RxError> {
        let writer = chain.writer(mem).map_err(RxError::Chain)?;
        let avail = writer.available_bytes();
        if avail < HDR_SIZE {
            return Err(RxError::Short(avail));
        }
        Ok(RxBuffer { writer })
    }

    /// How much payload fits after the header (capped at [`MAX_PKT_DATA`]).
    pub fn data_capacity(&self) -> usize {
        (self.writer.available_bytes() - HDR_SIZE).min(MAX_PKT_DATA)
    }

    /// Writes header and payload; returns the used length for the used ring.
    pub fn write(mut self, hdr: &Header, data: &[u8]) -> Result<u32, RxError> {
        self.writer.write_all(&hdr.to_bytes())?;
        self.writer.write_all(data)?;
        // Both are bounded by HDR_SIZE + MAX_PKT_DATA, far below u32::MAX.
        Ok((HDR_SIZE + data.len()) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 1024,
            len: 77,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn op_decoding() {
        assert_eq!(Op::from_u16(1), Some(Op::Request));
        assert_eq!(Op::from_u16(7), Some(Op::CreditRequest));
        assert_eq!(Op::from_u16(0), None);
        assert_eq!(Op::from_u16(8), None);
        assert_eq!(Op::from_u16(u16::MAX), None);
    }
}
