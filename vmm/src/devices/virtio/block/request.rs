//! One virtio-blk request (virtio 1.2 §5.2.6): a 16-byte device-readable
//! header, data, and a 1-byte device-writable status at the very end.
//!
//! The layout is not assumed (VERSION_1 implies ANY_LAYOUT): the readable
//! bytes are the header followed by OUT data, the writable bytes are IN data
//! followed by the status. Everything the guest wrote is checked before any
//! host I/O; a bad request gets IOERR or UNSUPP and the queue goes on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use tracing::{debug, trace};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::{DescriptorChain, Reader, Writer};

use super::disk::{ID_BYTES, SECTOR_SIZE};
use crate::devices::virtio::GuestMemory;

/// Size of `struct virtio_blk_outhdr` (type, reserved, sector).
const HEADER_LEN: usize = 16;
/// Bounce buffer size: host I/O happens in pieces of at most this much.
pub const IO_CHUNK: usize = 128 * 1024;

/// What the device needs to serve a request.
pub struct Backend<'a> {
    /// The image.
    pub file: &'a File,
    /// Capacity in sectors.
    pub sectors: u64,
    /// Whether writes are refused.
    pub read_only: bool,
    /// Whether every write must reach the disk before completing (the
    /// driver did not negotiate FLUSH, so it expects write-through).
    pub write_through: bool,
    /// Largest data length of one request, in bytes.
    pub max_data: usize,
    /// GET_ID answer.
    pub id: &'a [u8; ID_BYTES],
}

/// Why a request failed, turned into a status byte.
#[derive(Debug, thiserror::Error)]
enum ReqError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("host I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ReqError {
    fn status(&self) -> u8 {
        let s = match self {
            ReqError::Unsupported(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        };
        // The status constants are 0, 1 and 2.
        s as u8
    }
}

/// Serves one chain; returns the used length (bytes written to the guest,
/// status byte included). Never fails: the worst case is a chain with no
/// room for a status, which completes with length 0.
pub fn handle(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    backend: &Backend<'_>,
    buf: &mut [u8],
) -> u32 {
    let mut writer = match Writer::new(mem, chain.clone()) {
        Ok(w) => w,
        Err(e) => {
            // Writable addresses outside guest memory: no status can go back.
            debug!("virtio-blk: unusable descriptor chain: {e}");
            return 0;
        }
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        debug!("virtio-blk: request without a status byte");
        return 0;
    }
    let Ok(mut status_w) = writer.split_at(writable - 1) else {
        return 0;
    };
    let result = match Reader::new(mem, chain) {
        Ok(mut reader) => execute(&mut reader, &mut writer, backend, buf),
        Err(e) => Err(ReqError::Malformed(format!("readable buffers: {e}"))),
    };
    let (status, data_written) = match result {
        Ok(n) => {
            trace!(data = n, "virtio-blk: request done");
            (VIRTIO_BLK_S_OK as u8, n)
        }
        Err(e) => {
            match &e {
                ReqError::Io(_) => crate::guest_warn!("virtio-blk: {e}"),
                _ => debug!("virtio-blk: {e}"),
            }
            (e.status(), writer.bytes_written())
        }
    };
    if let Err(e) = status_w.write_all(&[status]) {
        debug!("virtio-blk: cannot write the status: {e}");
        return 0;
    }
    // Both are bounded by the chain, whose length the queue caps below 4 GiB.
    u32::try_from(data_written + 1).unwrap_or(0)
}

/// Runs the request; returns the data bytes written to the guest.
fn execute(
    reader: &mut Reader<'_>,
    writer: &mut Writer<'_>,
    b: &Backend<'_>,
    buf: &mut [u8],
) -> Result<usize, ReqError> {
    if reader.available_bytes() < HEADER_LEN {
        return Err(ReqError::Malformed(format!(
            "header is {} bytes, needs {HEADER_LEN}",
            reader.available_bytes()
        )));
    }
    let mut hdr = [0u8; HEADER_LEN];
    reader.read_exact(&mut hdr)?;
    let (ty, sector) = parse_header(&hdr);
    match ty {
        VIRTIO_BLK_T_IN => {
            no_extra("IN", reader.available_bytes(), "readable")?;
            let len = check_range(sector, writer.available_bytes(), b)?;
            read_disk(b.file, sector, len, writer, buf)?;
            Ok(len)
        }
        VIRTIO_BLK_T_OUT => {
            no_extra("OUT", writer.available_bytes(), "writable")?;
            if b.read_only {
                return Err(ReqError::ReadOnly);
            }
            let len = check_range(sector, reader.available_bytes(), b)?;
            write_disk(b.file, sector, len, reader, buf)?;
            if b.write_through {
                b.file.sync_data()?;
            }
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            // Nothing is buffered in the VMM: fdatasync is the whole flush.
            // A read-only image has nothing of ours to flush.
            if !b.read_only {
                b.file.sync_data()?;
            }
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            let n = writer.available_bytes().min(ID_BYTES);
            writer.write_all(&b.id[..n])?;
            Ok(n)
        }
        other => Err(ReqError::Unsupported(other)),
    }
}

/// Splits the little-endian header into (type, sector).
fn parse_header(hdr: &[u8; HEADER_LEN]) -> (u32, u64) {
    let mut ty = [0u8; 4];
    ty.copy_from_slice(&hdr[0..4]);
    let mut sector = [0u8; 8];
    sector.copy_from_slice(&hdr[8..16]);
    (u32::from_le_bytes(ty), u64::from_le_bytes(sector))
}

/// Data in the wrong direction means the driver and we disagree on the
/// layout: refuse rather than guess.
fn no_extra(op: &str, extra: usize, dir: &str) -> Result<(), ReqError> {
    if extra == 0 {
        Ok(())
    } else {
        Err(ReqError::Malformed(format!(
            "{op} request with {extra} {dir} data bytes"
        )))
    }
}

/// Checks a data length and sector range; returns the length.
fn check_range(sector: u64, len: usize, b: &Backend<'_>) -> Result<usize, ReqError> {
    if len == 0 || !(len as u64).is_multiple_of(SECTOR_SIZE) {
        return Err(ReqError::Malformed(format!(
            "data length {len} is not a positive multiple of {SECTOR_SIZE}"
        )));
    }
    if len > b.max_data {
        return Err(ReqError::Malformed(format!(
            "data length {len} above the limit of {}",
            b.max_data
        )));
    }
    let end = sector.checked_add(len as u64 / SECTOR_SIZE);
    match end {
        Some(end) if end <= b.sectors => Ok(len),
        _ => Err(ReqError::Malformed(format!(
            "sectors {sector}+{} beyond the capacity of {}",
            len as u64 / SECTOR_SIZE,
            b.sectors
        ))),
    }
}

/// pread into the guest's buffers through `buf`, piece by piece.
fn read_disk(
    file: &File,
    sector: u64,
    len: usize,
    writer: &mut Writer<'_>,
    buf: &mut [u8],
) -> Result<(), ReqError> {
    // check_range made sector * 512 + len fit below capacity * 512.
    let mut offset = sector * SECTOR_SIZE;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        // A short read (the image shrank under us) is an error, not zeros.
        file.read_exact_at(&mut buf[..n], offset)?;
        writer.write_all(&buf[..n])?;
        offset += n as u64;
        left -= n;
    }
    Ok(())
}

/// pwrite from the guest's buffers through `buf`, piece by piece.
fn write_disk(
    file: &File,
    sector: u64,
    len: usize,
    reader: &mut Reader<'_>,
    buf: &mut [u8],
) -> Result<(), ReqError> {
    let mut offset = sector * SECTOR_SIZE;
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        reader.read_exact(&mut buf[..n])?;
        file.write_all_at(&buf[..n], offset)?;
        offset += n as u64;
        left -= n;
    }
    Ok(())
}
