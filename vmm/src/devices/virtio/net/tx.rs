//! Guest → host: each TX chain is one frame with its header. The header is
//! copied and checked; the frame is handed to the backend straight from
//! guest memory with one writev.

use std::io;

use tracing::{debug, trace};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::volatile_memory::PtrGuard;
use vm_memory::{GuestMemory as _, Permissions, VolatileSlice};

use super::backend::FrameIo;
use super::counters::{add, NetCounters};
use super::header::{NetHeader, HDR_LEN, MAX_BUFFER, MIN_FRAME};
use crate::devices::virtio::queue_worker::{Processed, CHAIN_BUDGET};
use crate::devices::virtio::GuestMemory;

/// Most pieces (descriptors, or parts of them split across memory
/// regions) in one frame: below the kernel's UIO_MAXIOV of 1024.
pub const MAX_PIECES: usize = 1000;

/// A frame gathered from a TX chain: the checked header and the payload
/// as slices of guest memory.
pub struct TxFrame<'m> {
    header: [u8; HDR_LEN],
    payload: Vec<VolatileSlice<'m, ()>>,
    len: usize,
}

impl<'m> TxFrame<'m> {
    /// Gathers and checks a TX chain. Every length and address comes from
    /// the guest: the total is bounded, every piece must lie in guest
    /// memory and be device-readable.
    pub fn gather(
        mem: &'m GuestMemory,
        chain: DescriptorChain<&'m GuestMemory>,
        acked: u64,
    ) -> Result<TxFrame<'m>, &'static str> {
        let mut pieces: Vec<VolatileSlice<'m, ()>> = Vec::new();
        let mut total = 0usize;
        for desc in chain {
            if desc.is_write_only() {
                return Err("device-writable descriptor in a TX chain");
            }
            let len = desc.len() as usize;
            total = total
                .checked_add(len)
                .filter(|&t| t <= MAX_BUFFER)
                .ok_or("frame longer than 64 KiB plus headers")?;
            if len == 0 {
                continue;
            }
            let slices = mem
                .get_slices(desc.addr(), len, Permissions::Read)
                .map_err(|_| "descriptor outside guest memory")?;
            for s in slices {
                pieces.push(s.map_err(|_| "descriptor outside guest memory")?);
                if pieces.len() > MAX_PIECES {
                    return Err("too many descriptors");
                }
            }
        }
        if total < HDR_LEN + MIN_FRAME {
            return Err("shorter than the header plus an Ethernet header");
        }
        // Copy the header out (it may span pieces) so the guest cannot
        // change it after the check; the payload is the rest.
        let mut header = [0u8; HDR_LEN];
        let mut got = 0;
        let mut payload = Vec::with_capacity(pieces.len());
        for s in pieces {
            if got < HDR_LEN {
                let n = s.copy_to(&mut header[got..]);
                got += n;
                if n < s.len() {
                    payload.push(s.offset(n).map_err(|_| "bad descriptor split")?);
                }
            } else {
                payload.push(s);
            }
        }
        let checked = NetHeader::from_bytes(&header);
        checked.check_tx(acked)?;
        checked.check_frame(total - HDR_LEN)?;
        Ok(TxFrame {
            header,
            payload,
            len: total - HDR_LEN,
        })
    }

    /// Frame length without the header.
    pub fn frame_len(&self) -> usize {
        self.len
    }

    /// Writes the frame to `io` in one writev.
    pub fn send(&self, io: &dyn FrameIo) -> io::Result<usize> {
        let guards: Vec<PtrGuard> = self.payload.iter().map(|s| s.ptr_guard()).collect();
        let mut iov = Vec::with_capacity(guards.len() + 1);
        iov.push(libc::iovec {
            iov_base: self.header.as_ptr() as *mut libc::c_void,
            iov_len: HDR_LEN,
        });
        for (g, s) in guards.iter().zip(&self.payload) {
            iov.push(libc::iovec {
                iov_base: g.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            });
        }
        // SAFETY: the header lives in `self`; every other iovec is a
        // guest-memory slice whose pointer guard is held in `guards` for
        // the whole call, and the mapping lives as long as `mem`.
        unsafe { io.send(&iov) }
    }
}

/// Sends up to `CHAIN_BUDGET` frames from `queue` to `io`. An error means
/// the guest broke the queue itself; a bad chain only costs its frame.
pub fn process(
    mem: &GuestMemory,
    queue: &mut Queue,
    io: &dyn FrameIo,
    acked: u64,
    counters: &NetCounters,
) -> Result<Processed, String> {
    let mut done = Processed::default();
    for _ in 0..CHAIN_BUDGET {
        let chain = match queue.iter(mem) {
            Ok(mut it) => it.next(),
            Err(e) => return Err(format!("TX queue: {e}")),
        };
        let Some(chain) = chain else {
            return Ok(done);
        };
        let head = chain.head_index();
        match TxFrame::gather(mem, chain, acked) {
            Ok(frame) => match frame.send(io) {
                Ok(_) => {
                    add(&counters.tx_packets, 1);
                    add(&counters.tx_bytes, frame.frame_len() as u64);
                    trace!(len = frame.frame_len(), "net: frame from the guest");
                }
                Err(e) => {
                    debug!("net: the tap refused a frame: {e}");
                    add(&counters.tx_dropped, 1);
                }
            },
            Err(reason) => {
                crate::guest_warn!(head, "net: malformed TX chain dropped: {reason}");
                add(&counters.tx_malformed, 1);
            }
        }
        queue
            .add_used(mem, head, 0)
            .map_err(|e| format!("TX used ring: {e}"))?;
        done.used = true;
    }
    done.more = true;
    Ok(done)
}
