//! One vsock stream between a host Unix socket and a guest port: its state
//! machine and credit accounting (virtio 1.2 §5.10.6.3).
//!
//! Guest → host bytes land in a bounded buffer ([`CONN_TX_BUF_SIZE`], the
//! `buf_alloc` we advertise) and `fwd_cnt` counts what reached the host
//! socket. Host → guest bytes are read from the socket straight into RX
//! buffers, never more than the guest's credit, so that direction needs no
//! buffer at all.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use tracing::debug;
use vmm_sys_util::epoll::EventSet;

use super::packet::{Header, Op, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::uds::send_nosignal;

/// Receive buffer we advertise per connection (`buf_alloc`) and the most
/// guest data we ever hold for one connection.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Send a CREDIT_UPDATE once the guest believes less than this is free.
const CREDIT_UPDATE_THRESHOLD: u32 = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host client asked for a guest port; waiting for the guest's RESPONSE.
    LocalInit,
    /// Both ends are connected.
    Established,
}

/// A host-socket ⇄ guest-port stream.
pub struct Connection {
    /// The host end.
    pub stream: UnixStream,
    /// Port on the host side (CID 2).
    pub local_port: u32,
    /// Port on the guest side.
    pub peer_port: u32,
    /// Lifecycle state.
    pub state: State,
    guest_cid: u64,

    // Control packets owed to the guest.
    send_request: bool,
    request_sent: bool,
    send_response: bool,
    send_shutdown: u32,
    send_credit_update: bool,
    credit_request_sent: bool,

    // Host → guest: the guest's credit and what we sent.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    rx_cnt: u32,
    host_readable: bool,
    host_eof: bool,
    host_hup: bool,
    guest_shut_rcv: bool,

    // Guest → host: our buffer and what we forwarded.
    reply: Vec<u8>,
    tx_buf: VecDeque<u8>,
    recv_cnt: u32,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    guest_shut_send: bool,
    host_write_shut: bool,

    /// A fatal error or protocol violation: reset the connection.
    pub broken: bool,
    /// We sent SHUTDOWN with both flags and wait for the guest's RST.
    pub awaiting_rst: bool,
    /// When the current wait (RESPONSE, RST, flush) gives up.
    pub deadline: Option<Instant>,
    /// Whether the socket is in the epoll set, and with which events.
    pub registered: bool,
    /// Events currently registered.
    pub interest: EventSet,
    /// Whether the connection is queued for RX processing.
    pub in_rx_queue: bool,
}

impl Connection {
    fn new(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state: State::LocalInit,
            guest_cid,
            send_request: false,
            request_sent: false,
            send_response: false,
            send_shutdown: 0,
            send_credit_update: false,
            credit_request_sent: false,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            rx_cnt: 0,
            host_readable: false,
            host_eof: false,
            host_hup: false,
            guest_shut_rcv: false,
            reply: Vec::new(),
            tx_buf: VecDeque::new(),
            recv_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            guest_shut_send: false,
            host_write_shut: false,
            broken: false,
            awaiting_rst: false,
            deadline: None,
            registered: false,
            interest: EventSet::empty(),
            in_rx_queue: false,
        }
    }

    /// A host client's connection to guest port `peer_port`: a REQUEST is owed.
    pub fn new_local(stream: UnixStream, local_port: u32, peer_port: u32, guest_cid: u64) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, guest_cid);
        c.send_request = true;
        c
    }

    /// A guest connection (its REQUEST is `hdr`) we connected on the host: a
    /// RESPONSE is owed.
    pub fn new_peer(stream: UnixStream, hdr: &Header, guest_cid: u64) -> Self {
        let mut c = Self::new(stream, hdr.dst_port, hdr.src_port, guest_cid);
        c.state = State::Established;
        c.send_response = true;
        c.update_peer_credit(hdr);
        c
    }

    /// A header for a packet of this connection, carrying our credit.
    pub fn header(&self, op: Op) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: CONN_TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// How many payload bytes we may still send to the guest.
    pub fn peer_credit(&self) -> u32 {
        // A guest claiming to have consumed more than we sent gets no
        // credit rather than a wrapped-around huge one.
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Records the credit information every guest packet carries.
    pub fn update_peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        if self.peer_credit() > 0 {
            self.credit_request_sent = false;
        }
    }

    /// Guest data held for the host socket.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len()
    }

    /// Room left in the guest → host buffer.
    pub fn tx_space(&self) -> usize {
        (CONN_TX_BUF_SIZE as usize).saturating_sub(self.tx_buf.len())
    }

    /// Whether there is anything left to write to the host socket.
    pub fn has_unflushed(&self) -> bool {
        !self.reply.is_empty() || !self.tx_buf.is_empty()
    }

    /// The guest accepted our REQUEST.
    pub fn on_response(&mut self) {
        if self.state != State::LocalInit || !self.request_sent {
            debug!(port = self.local_port, "vsock: unexpected RESPONSE");
            self.broken = true;
            return;
        }
        self.state = State::Established;
        self.deadline = None;
        crate::control::timeline::mark(crate::control::timeline::Phase::FirstVsockConnection);
        self.reply = format!("OK {}\n", self.local_port).into_bytes();
        self.flush();
    }

    /// Payload from the guest. The caller checked it fits [`Self::tx_space`].
    pub fn on_rw(&mut self, data: &[u8]) {
        if self.state != State::Established || self.guest_shut_send || self.host_hup {
            debug!(
                port = self.local_port,
                "vsock: RW in a state that takes no data"
            );
            self.broken = true;
            return;
        }
        if data.len() > self.tx_space() {
            // The guest sent beyond the credit we gave it.
            debug!(port = self.local_port, "vsock: guest overran its credit");
            self.broken = true;
            return;
        }
        // data.len() <= MAX_PKT_DATA, so this fits a u32.
        self.recv_cnt = self.recv_cnt.wrapping_add(data.len() as u32);
        let mut rest = data;
        if !self.has_unflushed() {
            match send_nosignal(&self.stream, data) {
                Ok(n) => {
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                    rest = &data[n..];
                }
                Err(e) if is_transient(&e) => {}
                Err(e) => {
                    debug!(port = self.local_port, "vsock: host socket write: {e}");
                    self.broken = true;
                    return;
                }
            }
        }
        self.tx_buf.extend(rest);
    }

    /// Writes buffered bytes to the host socket until it would block.
    pub fn flush(&mut self) {
        while !self.reply.is_empty() {
            match send_nosignal(&self.stream, &self.reply) {
                Ok(n) => {
                    self.reply.drain(..n);
                }
                Err(e) if is_transient(&e) => return,
                Err(e) => return self.write_failed(e),
            }
        }
        while !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match send_nosignal(&self.stream, front) {
                Ok(0) => return,
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if is_transient(&e) => return,
                Err(e) => return self.write_failed(e),
            }
        }
        // Idle connections should not keep a bulk transfer's buffer.
        if self.tx_buf.capacity() > 64 * 1024 {
            self.tx_buf.shrink_to_fit();
        }
    }

    fn write_failed(&mut self, e: io::Error) {
        debug!(port = self.local_port, "vsock: host socket write: {e}");
        self.broken = true;
    }

    /// SHUTDOWN from the guest.
    pub fn on_shutdown(&mut self, flags: u32) {
        if flags & SHUTDOWN_RCV != 0 && !self.guest_shut_rcv {
            self.guest_shut_rcv = true;
            // The host peer's further writes now fail with EPIPE.
            let _ = self.stream.shutdown(Shutdown::Read);
        }
        if flags & SHUTDOWN_SEND != 0 {
            self.guest_shut_send = true;
        }
    }

    /// The guest asked for our credit.
    pub fn on_credit_request(&mut self) {
        self.send_credit_update = true;
    }

    /// Whether the guest shut down both directions (it closed its socket).
    pub fn guest_closed(&self) -> bool {
        self.guest_shut_rcv && self.guest_shut_send
    }

    /// The host socket is readable (epoll said so).
    pub fn on_host_readable(&mut self) {
        self.host_readable = true;
    }

    /// The host peer is gone (EPOLLHUP): what it wrote can still be read,
    /// nothing more can be written to it.
    pub fn on_host_hup(&mut self) {
        if self.state != State::Established {
            self.broken = true;
            return;
        }
        self.host_hup = true;
        self.host_readable = true;
        self.reply.clear();
        self.tx_buf.clear();
    }

    /// Whether the host socket is gone from epoll for good.
    pub fn host_hup(&self) -> bool {
        self.host_hup
    }

    /// Housekeeping after any event: half-close the host socket once the
    /// guest's data is flushed, finish a dead host peer, and decide whether
    /// the guest needs a CREDIT_UPDATE.
    pub fn tick(&mut self) {
        if self.guest_shut_send && !self.has_unflushed() && !self.host_write_shut && !self.host_hup
        {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.host_hup
            && (self.host_eof || self.guest_shut_rcv)
            && !self.awaiting_rst
            && self.send_shutdown == 0
        {
            self.send_shutdown = SHUTDOWN_RCV | SHUTDOWN_SEND;
        }
        // What the guest thinks we still hold, given the last fwd_cnt it saw.
        let in_flight = self.recv_cnt.wrapping_sub(self.last_fwd_cnt_sent);
        let guest_view_free = CONN_TX_BUF_SIZE.saturating_sub(in_flight);
        if guest_view_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent {
            self.send_credit_update = true;
        }
    }

    fn can_read_host(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && !self.guest_shut_rcv
    }

    /// Whether [`Self::next_rx_packet`] may have something for the guest.
    pub fn has_rx_work(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_shutdown != 0
            || self.send_credit_update
            || (self.can_read_host() && (self.peer_credit() > 0 || !self.credit_request_sent))
    }

    /// The epoll events this connection needs now.
    pub fn desired_interest(&self) -> EventSet {
        let mut ev = EventSet::empty();
        if self.state == State::Established
            && !self.host_readable
            && !self.host_eof
            && !self.guest_shut_rcv
            && self.peer_credit() > 0
        {
            ev |= EventSet::IN;
        }
        if self.has_unflushed() {
            ev |= EventSet::OUT;
        }
        ev
    }

    /// The next packet for the guest, with payload read into `buf` (which
    /// holds what the RX buffer can take). `None` if nothing is due.
    pub fn next_rx_packet(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        let pkt = if self.send_request {
            self.send_request = false;
            self.request_sent = true;
            (self.header(Op::Request), 0)
        } else if self.send_response {
            self.send_response = false;
            (self.header(Op::Response), 0)
        } else if self.send_shutdown != 0 {
            let mut h = self.header(Op::Shutdown);
            h.flags = std::mem::take(&mut self.send_shutdown);
            if h.flags == SHUTDOWN_RCV | SHUTDOWN_SEND {
                self.awaiting_rst = true;
            }
            (h, 0)
        } else if let Some(pkt) = self.next_data(buf) {
            pkt
        } else if self.send_credit_update {
            (self.header(Op::CreditUpdate), 0)
        } else {
            return None;
        };
        // Every packet carries fwd_cnt, so each one is a credit update.
        self.last_fwd_cnt_sent = self.fwd_cnt;
        self.send_credit_update = false;
        let mut hdr = pkt.0;
        hdr.fwd_cnt = self.fwd_cnt;
        Some((hdr, pkt.1))
    }

    fn next_data(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        if !self.can_read_host() {
            return None;
        }
        let credit = self.peer_credit();
        if credit == 0 {
            if self.credit_request_sent {
                return None;
            }
            self.credit_request_sent = true;
            return Some((self.header(Op::CreditRequest), 0));
        }
        let want = (credit as usize).min(buf.len());
        if want == 0 {
            // An RX buffer with no room for payload; a read of 0 bytes
            // would look like EOF.
            return None;
        }
        match (&self.stream).read(&mut buf[..want]) {
            Ok(0) => {
                self.host_eof = true;
                self.host_readable = false;
                let mut h = self.header(Op::Shutdown);
                h.flags = if self.host_hup {
                    self.awaiting_rst = true;
                    SHUTDOWN_RCV | SHUTDOWN_SEND
                } else {
                    SHUTDOWN_SEND
                };
                Some((h, 0))
            }
            Ok(n) => {
                self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
                let mut h = self.header(Op::Rw);
                h.len = n as u32;
                Some((h, n))
            }
            Err(e) if is_transient(&e) => {
                self.host_readable = false;
                None
            }
            Err(e) => {
                debug!(port = self.local_port, "vsock: host socket read: {e}");
                self.broken = true;
                None
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::vsock::packet::Header;

    fn guest_hdr(op: Op, buf_alloc: u32, fwd_cnt: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1024,
            type_: TYPE_STREAM,
            op: op as u16,
            buf_alloc,
            fwd_cnt,
            ..Header::default()
        }
    }

    #[test]
    fn credit_never_exceeds_guest_buffer() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Connection::new_peer(a, &guest_hdr(Op::Request, 100, 0), 3);
        assert_eq!(c.peer_credit(), 100);
        c.rx_cnt = 60;
        assert_eq!(c.peer_credit(), 40);
        c.update_peer_credit(&guest_hdr(Op::CreditUpdate, 100, 60));
        assert_eq!(c.peer_credit(), 100);
        // A guest claiming to have consumed more than it got earns nothing.
        c.update_peer_credit(&guest_hdr(Op::CreditUpdate, 100, 61));
        assert_eq!(c.peer_credit(), 0);
        // Counters wrap.
        c.rx_cnt = 5;
        c.update_peer_credit(&guest_hdr(Op::CreditUpdate, 100, u32::MAX - 4));
        assert_eq!(c.peer_credit(), 90);
    }

    #[test]
    fn data_read_is_capped_by_credit() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::new_peer(a, &guest_hdr(Op::Request, 10, 0), 3);
        let mut buf = [0u8; 64];
        assert_eq!(
            c.next_rx_packet(&mut buf).unwrap().0.op,
            Op::Response as u16
        );
        send_nosignal(&b, &[7u8; 30]).unwrap();
        c.on_host_readable();
        let (h, n) = c.next_rx_packet(&mut buf).unwrap();
        assert_eq!((h.op, n, h.len), (Op::Rw as u16, 10, 10));
        // Out of credit: one CREDIT_REQUEST, then silence, and no EPOLLIN.
        let (h, _) = c.next_rx_packet(&mut buf).unwrap();
        assert_eq!(h.op, Op::CreditRequest as u16);
        assert!(c.next_rx_packet(&mut buf).is_none());
        assert!(!c.desired_interest().contains(EventSet::IN));
        c.update_peer_credit(&guest_hdr(Op::CreditUpdate, 10, 10));
        let (h, n) = c.next_rx_packet(&mut buf).unwrap();
        assert_eq!((h.op, n), (Op::Rw as u16, 10));
    }

    #[test]
    fn credit_update_when_guest_view_is_low() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = Connection::new_peer(a, &guest_hdr(Op::Request, 1 << 20, 0), 3);
        let mut buf = [0u8; 16];
        c.next_rx_packet(&mut buf).unwrap();
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0usize;
        // The host reads nothing: the buffer fills up to its bound.
        while c.tx_space() >= chunk.len() {
            c.on_rw(&chunk);
            assert!(!c.broken);
            sent += chunk.len();
        }
        assert!(c.buffered() <= CONN_TX_BUF_SIZE as usize);
        // Over the bound is a credit violation.
        let mut over = Connection::new_peer(
            UnixStream::pair().unwrap().0,
            &guest_hdr(Op::Request, 0, 0),
            3,
        );
        over.tx_buf.extend(vec![0u8; CONN_TX_BUF_SIZE as usize]);
        over.on_rw(&[1]);
        assert!(over.broken);
        // The guest's view is low; whatever the kernel took is progress to
        // report. Once reported, no new progress means no new update.
        c.tick();
        if c.send_credit_update {
            let (h, _) = c.next_rx_packet(&mut buf).unwrap();
            assert_eq!(h.op, Op::CreditUpdate as u16);
        }
        c.tick();
        assert!(!c.send_credit_update);
        // The host drains; the guest's view is low, so an update is owed.
        let mut sink = vec![0u8; 1 << 20];
        let mut drained = 0;
        while drained < sent {
            c.flush();
            match (&b).read(&mut sink) {
                Ok(n) => drained += n,
                Err(_) => break,
            }
        }
        c.flush();
        c.tick();
        assert!(c.send_credit_update);
        let (h, _) = c.next_rx_packet(&mut buf).unwrap();
        assert_eq!(h.op, Op::CreditUpdate as u16);
        assert_eq!(h.fwd_cnt as usize, sent - c.buffered());
        assert_eq!(h.buf_alloc, CONN_TX_BUF_SIZE);
    }

    #[test]
    fn host_eof_sends_shutdown_send() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::new_peer(a, &guest_hdr(Op::Request, 100, 0), 3);
        let mut buf = [0u8; 16];
        c.next_rx_packet(&mut buf).unwrap();
        b.shutdown(Shutdown::Write).unwrap();
        c.on_host_readable();
        let (h, _) = c.next_rx_packet(&mut buf).unwrap();
        assert_eq!((h.op, h.flags), (Op::Shutdown as u16, SHUTDOWN_SEND));
        assert!(!c.awaiting_rst);
        assert!(!c.desired_interest().contains(EventSet::IN));
    }
}
