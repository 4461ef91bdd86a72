//! Host → guest: frames read from the backend are copied into the guest's
//! RX buffers, one descriptor chain per frame, or several with MRG_RXBUF
//! (§5.1.6.4). A frame waits in a staging buffer while the guest has no
//! room for it, so nothing is read (or lost) until the guest refills the
//! queue.

use std::io::{self, Write};

use tracing::{debug, trace};
use virtio_queue::{Queue, QueueOwnedT, QueueT, Writer};

use super::backend::FrameIo;
use super::counters::{add, NetCounters};
use super::header::{NetHeader, HDR_LEN, MAX_BUFFER};
use crate::devices::virtio::GuestMemory;

/// Most frames moved per call, so the worker checks for a stop request.
pub const FRAME_BUDGET: usize = 64;

/// How a `process` call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxState {
    /// The backend has no more frames: wait until it is readable.
    Drained,
    /// A frame waits for guest buffers: stop reading the backend until the
    /// guest refills the RX queue.
    NeedBuffers,
    /// The budget ran out: call again after checking for a stop request.
    Budget,
    /// Reading the backend failed with something other than "no frame":
    /// stop polling it.
    Broken,
}

/// What happened to one frame.
enum Delivery {
    Done,
    Dropped,
    NoBuffers,
}

/// The RX side of one device.
pub struct Rx {
    buf: Vec<u8>,
    /// Length (header included) of the frame in `buf` not yet delivered.
    pending: Option<usize>,
    acked: u64,
    mergeable: bool,
    /// The available index this side had reached when it last ran out of
    /// buffers (chains it could not use are handed back, so this can be
    /// ahead of the queue's `next_avail`).
    seen_avail: u16,
}

impl Rx {
    /// An RX side for a driver that acked `acked`.
    pub fn new(acked: u64) -> Rx {
        Rx {
            // One byte more than the largest frame, so a frame the read
            // had to cut short is seen (and dropped) rather than delivered.
            buf: vec![0; MAX_BUFFER + 1],
            pending: None,
            acked,
            mergeable: super::header::has(
                acked,
                virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF,
            ),
            seen_avail: 0,
        }
    }

    /// See `seen_avail`: where to ask the guest for a kick after `NeedBuffers`.
    pub fn seen_avail(&self) -> u16 {
        self.seen_avail
    }

    /// Moves frames from `io` into `queue` until the backend is drained,
    /// the guest runs out of buffers or the budget is spent. Returns the
    /// state and whether any buffer went to the used ring. An error means
    /// the guest broke the queue itself.
    pub fn process(
        &mut self,
        mem: &GuestMemory,
        queue: &mut Queue,
        io: &dyn FrameIo,
        counters: &NetCounters,
    ) -> Result<(RxState, bool), String> {
        let mut used = false;
        for _ in 0..FRAME_BUDGET {
            let len = match self.pending.take() {
                Some(len) => len,
                None => match io.recv(&mut self.buf) {
                    Ok(n) if !(HDR_LEN..=MAX_BUFFER).contains(&n) => {
                        add(&counters.rx_dropped, 1);
                        continue;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok((RxState::Drained, used))
                    }
                    Err(e) => {
                        crate::guest_warn!("net: reading from the tap failed, RX stops: {e}");
                        return Ok((RxState::Broken, used));
                    }
                },
            };
            let delivery = if self.mergeable {
                self.deliver_merged(mem, queue, len, counters, &mut used)?
            } else {
                self.deliver_single(mem, queue, len, counters, &mut used)?
            };
            match delivery {
                Delivery::Done => {
                    add(&counters.rx_packets, 1);
                    add(&counters.rx_bytes, (len - HDR_LEN) as u64);
                    trace!(len, "net: frame to the guest");
                }
                Delivery::Dropped => add(&counters.rx_dropped, 1),
                Delivery::NoBuffers => {
                    self.pending = Some(len);
                    add(&counters.rx_waits, 1);
                    return Ok((RxState::NeedBuffers, used));
                }
            }
        }
        Ok((RxState::Budget, used))
    }

    /// Patches the staged frame's header for this guest; false to drop it.
    fn fit_header(&mut self, num_buffers: u16) -> bool {
        let mut raw = [0u8; HDR_LEN];
        raw.copy_from_slice(&self.buf[..HDR_LEN]);
        match NetHeader::from_bytes(&raw).fit_rx(self.acked, num_buffers) {
            Some(h) => {
                self.buf[..HDR_LEN].copy_from_slice(&h.to_bytes());
                true
            }
            None => false,
        }
    }

    /// Without MRG_RXBUF: the whole frame goes into one chain. A chain too
    /// small for it stays available for the next frame.
    fn deliver_single(
        &mut self,
        mem: &GuestMemory,
        queue: &mut Queue,
        len: usize,
        counters: &NetCounters,
        used: &mut bool,
    ) -> Result<Delivery, String> {
        if !self.fit_header(1) {
            return Ok(Delivery::Dropped);
        }
        loop {
            let Some(chain) = next_chain(mem, queue)? else {
                self.seen_avail = queue.next_avail();
                return Ok(Delivery::NoBuffers);
            };
            let head = chain.head_index();
            let mut w = match Writer::new(mem, chain) {
                Ok(w) if w.available_bytes() >= HDR_LEN => w,
                _ => {
                    bad_buffer(mem, queue, head, counters, used)?;
                    continue;
                }
            };
            if w.available_bytes() < len {
                queue.go_to_previous_position();
                return Ok(Delivery::Dropped);
            }
            let written = write_into(&mut w, &self.buf[..len]);
            add_used(mem, queue, head, written, used)?;
            return Ok(Delivery::Done);
        }
    }

    /// With MRG_RXBUF: gather chains until they hold the frame, then fill
    /// them in order; the header's `num_buffers` says how many it took.
    fn deliver_merged(
        &mut self,
        mem: &GuestMemory,
        queue: &mut Queue,
        len: usize,
        counters: &NetCounters,
        used: &mut bool,
    ) -> Result<Delivery, String> {
        let mut chains: Vec<(u16, Writer<'_>)> = Vec::new();
        let mut room = 0usize;
        while room < len {
            let Some(chain) = next_chain(mem, queue)? else {
                self.seen_avail = queue.next_avail();
                // Give the gathered chains back for the next attempt.
                for _ in 0..chains.len() {
                    queue.go_to_previous_position();
                }
                // With every descriptor of the ring gathered, more buffers
                // cannot come: the frame can never fit.
                if chains.len() >= usize::from(queue.size()) {
                    return Ok(Delivery::Dropped);
                }
                return Ok(Delivery::NoBuffers);
            };
            let head = chain.head_index();
            let min = if chains.is_empty() { HDR_LEN } else { 1 };
            match Writer::new(mem, chain) {
                Ok(w) if w.available_bytes() >= min => {
                    room = room.saturating_add(w.available_bytes());
                    chains.push((head, w));
                }
                _ => {
                    // Used entries go in ring order: the chains gathered so
                    // far are returned empty before this one, and the frame
                    // is dropped (only a broken driver gets here).
                    let gathered = chains.len() as u64;
                    for (h, _) in chains.drain(..) {
                        add_used(mem, queue, h, 0, used)?;
                    }
                    add(&counters.rx_bad_buffers, gathered);
                    bad_buffer(mem, queue, head, counters, used)?;
                    if gathered > 0 {
                        return Ok(Delivery::Dropped);
                    }
                    room = 0;
                }
            }
        }
        // At most the queue size (≤ 256) chains, so this fits.
        let Ok(count) = u16::try_from(chains.len()) else {
            return Err("more RX chains than the queue holds".into());
        };
        if !self.fit_header(count) {
            for _ in 0..chains.len() {
                queue.go_to_previous_position();
            }
            return Ok(Delivery::Dropped);
        }
        let mut offset = 0;
        for (head, mut w) in chains {
            let n = w.available_bytes().min(len - offset);
            let written = write_into(&mut w, &self.buf[offset..offset + n]);
            offset += n;
            add_used(mem, queue, head, written, used)?;
        }
        Ok(Delivery::Done)
    }
}

/// The next available chain, if any; an error if the ring is broken.
fn next_chain<'m>(
    mem: &'m GuestMemory,
    queue: &mut Queue,
) -> Result<Option<virtio_queue::DescriptorChain<&'m GuestMemory>>, String> {
    match queue.iter(mem) {
        Ok(mut it) => Ok(it.next()),
        Err(e) => Err(format!("RX queue: {e}")),
    }
}

/// Writes `data` into the chain; returns the bytes that went in.
fn write_into(w: &mut Writer<'_>, data: &[u8]) -> usize {
    if let Err(e) = w.write_all(data) {
        // The chain's memory was checked by Writer::new; this is unexpected.
        debug!("net: writing an RX buffer failed: {e}");
    }
    w.bytes_written()
}

fn add_used(
    mem: &GuestMemory,
    queue: &mut Queue,
    head: u16,
    len: usize,
    used: &mut bool,
) -> Result<(), String> {
    // len ≤ MAX_BUFFER, far below u32::MAX.
    let len = u32::try_from(len).map_err(|_| "RX length overflow".to_string())?;
    queue
        .add_used(mem, head, len)
        .map_err(|e| format!("RX used ring: {e}"))?;
    *used = true;
    Ok(())
}

/// Returns an unusable chain to the guest empty.
fn bad_buffer(
    mem: &GuestMemory,
    queue: &mut Queue,
    head: u16,
    counters: &NetCounters,
    used: &mut bool,
) -> Result<(), String> {
    debug!(head, "net: unusable RX buffer returned empty");
    add(&counters.rx_bad_buffers, 1);
    add_used(mem, queue, head, 0, used)
}
