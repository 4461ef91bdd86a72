//! The hybrid-vsock connection table: host clients arriving on the Unix
//! listener, guest connections forwarded to `<uds_path>_<port>`, and the
//! routing of packets between them.
//!
//! Firecracker's muxer, which defines this protocol, is not a published
//! crate, so this is written here. Everything is bounded: connections
//! ([`MAX_CONNECTIONS`]), buffered guest data per connection and in total,
//! queued control packets, and how long a peer may keep us waiting.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::debug;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, State};
use super::handshake::{HandshakeParser, MAX_LINE};
use super::packet::{Header, Op, HOST_CID, TYPE_STREAM};
use super::uds::{connect_nonblocking, port_path};

/// Most connections (pending handshakes and closing ones included).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most guest data held for all host sockets together.
pub const MAX_TOTAL_BUFFERED: usize = 32 << 20;
/// How long a host client may take to send its `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest may take to answer our REQUEST.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may take to RST after our full SHUTDOWN.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a closed connection may take to flush to a slow host peer.
const CLOSING_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to stop accepting after accept() fails (e.g. EMFILE), so a
/// level-triggered listener does not spin the loop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Most control packets waiting for RX buffers; beyond it they are dropped
/// (the guest is not reading its RX queue).
const MAX_CTRL_QUEUE: usize = 2 * MAX_CONNECTIONS;
/// Host-side ports for host-initiated connections start here.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// Accepts per listener wake-up, for fairness.
const ACCEPT_BATCH: usize = 64;

/// Epoll token of the Unix listener. Tokens below [`FIRST_CONN_TOKEN`] are
/// reserved for the worker.
pub const TOKEN_LISTENER: u64 = 4;
const FIRST_CONN_TOKEN: u64 = 16;

/// A host client that has not finished its `CONNECT <port>\n` line.
struct PendingClient {
    stream: UnixStream,
    parser: HandshakeParser,
    deadline: Instant,
}

/// Routes packets between guest ports and host Unix sockets.
pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    listener_paused_until: Option<Instant>,
    epoll: Epoll,
    conns: HashMap<u64, Connection>,
    keys: HashMap<(u32, u32), u64>,
    pending: HashMap<u64, PendingClient>,
    closing: HashMap<u64, Connection>,
    rx_queue: VecDeque<u64>,
    ctrl: VecDeque<Header>,
    next_token: u64,
    next_local_port: u32,
    max_conns: usize,
}

impl Muxer {
    /// A muxer for the guest `guest_cid`, accepting host clients on `listener`
    /// (bound at `uds_path`, non-blocking).
    pub fn new(guest_cid: u64, uds_path: PathBuf, listener: UnixListener) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        )?;
        Ok(Muxer {
            guest_cid,
            uds_path,
            listener,
            listener_paused_until: None,
            epoll,
            conns: HashMap::new(),
            keys: HashMap::new(),
            pending: HashMap::new(),
            closing: HashMap::new(),
            rx_queue: VecDeque::new(),
            ctrl: VecDeque::new(),
            next_token: FIRST_CONN_TOKEN,
            next_local_port: LOCAL_PORT_BASE,
            max_conns: MAX_CONNECTIONS,
        })
    }

    /// The epoll set; the worker adds its own fds with tokens below 16.
    pub fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Lowers the connection bound, so tests need not open 1024 sockets.
    #[cfg(test)]
    pub fn set_max_connections(&mut self, n: usize) {
        self.max_conns = n;
    }

    /// Connections of every kind, for the table bound.
    pub fn connection_count(&self) -> usize {
        self.conns.len() + self.pending.len() + self.closing.len()
    }

    /// Guest data buffered for host sockets, all connections together.
    pub fn total_buffered(&self) -> usize {
        self.conns
            .values()
            .chain(self.closing.values())
            .map(Connection::buffered)
            .sum()
    }

    fn alloc_token(&mut self) -> u64 {
        let t = self.next_token;
        // 2^64 tokens never run out in practice; stay clear of reserved ones.
        self.next_token = self.next_token.checked_add(1).unwrap_or(FIRST_CONN_TOKEN);
        t
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=self.max_conns {
            let p = self.next_local_port;
            // Skip u32::MAX: it is VMADDR_PORT_ANY.
            self.next_local_port = if p >= u32::MAX - 1 {
                LOCAL_PORT_BASE
            } else {
                p + 1
            };
            if !self.keys.contains_key(&(p, peer_port)) {
                return Some(p);
            }
        }
        None
    }

    fn push_ctrl(&mut self, hdr: Header) {
        if self.ctrl.len() >= MAX_CTRL_QUEUE {
            debug!("vsock: control queue full, dropping a packet for the guest");
            return;
        }
        self.ctrl.push_back(hdr);
    }

    // ---- Events from the host side ----

    /// Handles an epoll event for a token at or above [`TOKEN_LISTENER`].
    pub fn handle_event(&mut self, token: u64, events: EventSet) {
        if token == TOKEN_LISTENER {
            self.accept_clients();
        } else if self.pending.contains_key(&token) {
            self.handshake_step(token);
        } else if let Some(conn) = self.conns.get_mut(&token) {
            if events.contains(EventSet::ERROR) {
                conn.broken = true;
            } else if events.contains(EventSet::HANG_UP) {
                conn.on_host_hup();
            }
            if events.contains(EventSet::IN) {
                conn.on_host_readable();
            }
            if events.contains(EventSet::OUT) {
                conn.flush();
            }
            self.refresh(token);
        } else if let Some(conn) = self.closing.get_mut(&token) {
            if events.intersects(EventSet::OUT) {
                conn.flush();
            }
            let done = conn.broken
                || !conn.has_unflushed()
                || events.intersects(EventSet::ERROR | EventSet::HANG_UP);
            if done {
                self.drop_closing(token);
            }
        }
    }

    fn accept_clients(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    crate::guest_warn!("vsock: accept failed, pausing the listener: {e}");
                    self.pause_listener();
                    return;
                }
            };
            if self.connection_count() >= self.max_conns {
                crate::guest_warn!("vsock: connection table full, refusing a host client");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                crate::guest_warn!("vsock: cannot make a client socket non-blocking: {e}");
                continue;
            }
            let token = self.alloc_token();
            if let Err(e) = self.epoll.ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            ) {
                crate::guest_warn!("vsock: cannot watch a client socket: {e}");
                continue;
            }
            self.pending.insert(
                token,
                PendingClient {
                    stream,
                    parser: HandshakeParser::new(),
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                },
            );
        }
    }

    fn pause_listener(&mut self) {
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            self.listener.as_raw_fd(),
            EpollEvent::default(),
        );
        self.listener_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
    }

    fn resume_listener(&mut self) {
        self.listener_paused_until = None;
        if let Err(e) = self.epoll.ctl(
            ControlOperation::Add,
            self.listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        ) {
            crate::guest_warn!("vsock: cannot watch the listener again: {e}");
            self.pause_listener();
        }
    }

    /// Reads the handshake one byte at a time, so that payload the client
    /// sent right behind the line stays in the socket for the guest.
    fn handshake_step(&mut self, token: u64) {
        let Some(pc) = self.pending.get_mut(&token) else {
            return;
        };
        let mut outcome: Option<Result<u32, String>> = None;
        for _ in 0..=MAX_LINE {
            let mut b = [0u8; 1];
            match (&pc.stream).read(&mut b) {
                Ok(0) => outcome = Some(Err("client closed".into())),
                Ok(_) => match pc.parser.feed(&b) {
                    Ok(None) => continue,
                    Ok(Some((port, _))) => outcome = Some(Ok(port)),
                    Err(e) => outcome = Some(Err(e.to_string())),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => outcome = Some(Err(e.to_string())),
            }
            break;
        }
        match outcome {
            None => {}
            Some(Err(why)) => {
                debug!("vsock: dropping host client: {why}");
                self.drop_pending(token);
            }
            Some(Ok(port)) => self.promote(token, port),
        }
    }

    fn drop_pending(&mut self, token: u64) {
        if let Some(pc) = self.pending.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                pc.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    /// A host client completed `CONNECT <port>`: ask the guest.
    fn promote(&mut self, token: u64, peer_port: u32) {
        let Some(local_port) = self.alloc_local_port(peer_port) else {
            crate::guest_warn!(
                "vsock: no free host port for a connection to guest port {peer_port}"
            );
            self.drop_pending(token);
            return;
        };
        let Some(pc) = self.pending.remove(&token) else {
            return;
        };
        let mut conn = Connection::new_local(pc.stream, local_port, peer_port, self.guest_cid);
        conn.registered = true;
        conn.interest = EventSet::IN;
        conn.deadline = Some(Instant::now() + RESPONSE_TIMEOUT);
        debug!(local_port, peer_port, "vsock: host client connecting");
        self.keys.insert((local_port, peer_port), token);
        self.conns.insert(token, conn);
        self.refresh(token);
    }

    // ---- Packets from the guest ----

    /// Whether an RW packet must wait because the buffers it would land in
    /// are full; the worker then leaves it in the TX queue.
    pub fn tx_would_block(&self, hdr: &Header) -> bool {
        if hdr.op != Op::Rw as u16 || hdr.len == 0 {
            return false;
        }
        let Some(conn) = self
            .keys
            .get(&(hdr.dst_port, hdr.src_port))
            .and_then(|t| self.conns.get(t))
        else {
            return false;
        };
        if conn.state != State::Established || conn.host_hup() {
            return false;
        }
        let len = hdr.len as usize;
        conn.tx_space() < len || self.total_buffered() + len > MAX_TOTAL_BUFFERED
    }

    /// Handles one TX packet from the guest (header checked for size by the
    /// parser; `data` is its payload).
    pub fn handle_tx(&mut self, hdr: &Header, data: &[u8]) {
        if hdr.dst_cid != HOST_CID || hdr.src_cid != self.guest_cid {
            debug!(
                src = hdr.src_cid,
                dst = hdr.dst_cid,
                "vsock: dropping packet with bad CIDs"
            );
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        let token = self.keys.get(&key).copied();
        let op = Op::from_u16(hdr.op);
        let Some(op) = op.filter(|_| hdr.type_ == TYPE_STREAM) else {
            debug!(
                op = hdr.op,
                type_ = hdr.type_,
                "vsock: bad packet type or op"
            );
            match token {
                Some(t) => self.remove_conn(t, true),
                None if hdr.op != Op::Rst as u16 => self.push_ctrl(hdr.reply(Op::Rst)),
                None => {}
            }
            return;
        };
        let Some(token) = token else {
            match op {
                Op::Request => self.guest_connect(hdr),
                Op::Rst => {}
                _ => self.push_ctrl(hdr.reply(Op::Rst)),
            }
            return;
        };
        if matches!(op, Op::Request | Op::Rst) {
            // A REQUEST for a live connection means the guest lost track of
            // it; a RST ends it. Either way it is gone.
            self.remove_conn(token, op == Op::Request);
            return;
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.update_peer_credit(hdr);
        match op {
            Op::Response => conn.on_response(),
            Op::Rw => conn.on_rw(data),
            Op::Shutdown => conn.on_shutdown(hdr.flags),
            Op::CreditRequest => conn.on_credit_request(),
            Op::CreditUpdate | Op::Request | Op::Rst => {}
        }
        self.refresh(token);
    }

    /// The guest connects to host port `hdr.dst_port`: forward to
    /// `<uds_path>_<port>`, or refuse with RST.
    fn guest_connect(&mut self, hdr: &Header) {
        if self.connection_count() >= self.max_conns {
            // debug, not warn: the guest could flood the log.
            debug!("vsock: connection table full, refusing a guest connection");
            self.push_ctrl(hdr.reply(Op::Rst));
            return;
        }
        let path = port_path(&self.uds_path, hdr.dst_port);
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                debug!(path = %path.display(), "vsock: guest connection refused: {e}");
                self.push_ctrl(hdr.reply(Op::Rst));
                return;
            }
        };
        let token = self.alloc_token();
        debug!(
            port = hdr.dst_port,
            peer = hdr.src_port,
            "vsock: guest connected"
        );
        self.keys.insert((hdr.dst_port, hdr.src_port), token);
        self.conns
            .insert(token, Connection::new_peer(stream, hdr, self.guest_cid));
        self.refresh(token);
    }

    // ---- Bookkeeping ----

    /// Re-evaluates a connection after anything happened to it: remove it,
    /// hand it to the closing set, fix its epoll interest, queue it for RX.
    fn refresh(&mut self, token: u64) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.tick();
        if conn.broken {
            self.remove_conn(token, true);
            return;
        }
        if conn.guest_closed() {
            self.close_by_guest(token);
            return;
        }
        if conn.awaiting_rst && conn.deadline.is_none() {
            conn.deadline = Some(Instant::now() + SHUTDOWN_TIMEOUT);
        }
        if let Err(e) = update_interest(&self.epoll, token, conn) {
            crate::guest_warn!("vsock: cannot update epoll interest: {e}");
            self.remove_conn(token, true);
            return;
        }
        if conn.has_rx_work() && !conn.in_rx_queue {
            conn.in_rx_queue = true;
            self.rx_queue.push_back(token);
        }
    }

    /// Forgets a connection, closing its host socket; optionally RSTs the guest.
    fn remove_conn(&mut self, token: u64, rst: bool) {
        let Some(conn) = self.conns.remove(&token) else {
            return;
        };
        self.keys.remove(&(conn.local_port, conn.peer_port));
        if conn.in_rx_queue {
            self.rx_queue.retain(|t| *t != token);
        }
        if conn.registered {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        debug!(
            local = conn.local_port,
            peer = conn.peer_port,
            rst,
            "vsock: connection removed"
        );
        if rst {
            self.push_ctrl(conn.header(Op::Rst));
        }
    }

    /// The guest closed its socket: acknowledge with RST (§5.10.6.5) right
    /// away, but keep flushing what it sent to the host for a while.
    fn close_by_guest(&mut self, token: u64) {
        let Some(conn) = self.conns.get(&token) else {
            return;
        };
        if !conn.has_unflushed() || conn.host_hup() {
            self.remove_conn(token, true);
            return;
        }
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        self.keys.remove(&(conn.local_port, conn.peer_port));
        if conn.in_rx_queue {
            self.rx_queue.retain(|t| *t != token);
        }
        self.push_ctrl(conn.header(Op::Rst));
        conn.deadline = Some(Instant::now() + CLOSING_FLUSH_TIMEOUT);
        let ev = EpollEvent::new(EventSet::OUT, token);
        let op = if conn.registered {
            ControlOperation::Modify
        } else {
            ControlOperation::Add
        };
        if self.epoll.ctl(op, conn.stream.as_raw_fd(), ev).is_ok() {
            conn.registered = true;
            self.closing.insert(token, conn);
        }
    }

    fn drop_closing(&mut self, token: u64) {
        if let Some(conn) = self.closing.remove(&token) {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
    }

    // ---- Packets for the guest ----

    /// Whether anything may be waiting to go to the guest.
    pub fn has_rx_work(&self) -> bool {
        !self.ctrl.is_empty() || !self.rx_queue.is_empty()
    }

    /// The next packet for the guest, its payload read into `buf` (sized to
    /// the RX buffer at hand). Control packets go first, then connections
    /// round-robin.
    pub fn next_rx_packet(&mut self, buf: &mut [u8]) -> Option<(Header, usize)> {
        for _ in 0..=self.rx_queue.len() {
            if let Some(h) = self.ctrl.pop_front() {
                return Some((h, 0));
            }
            let token = self.rx_queue.pop_front()?;
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            conn.in_rx_queue = false;
            let pkt = conn.next_rx_packet(buf);
            self.refresh(token);
            if pkt.is_some() {
                return pkt;
            }
        }
        self.ctrl.pop_front().map(|h| (h, 0))
    }

    // ---- Time ----

    /// Milliseconds until the next deadline, or -1 (wait forever).
    pub fn timeout_ms(&self, now: Instant) -> i32 {
        let next = self
            .pending
            .values()
            .map(|p| p.deadline)
            .chain(self.conns.values().filter_map(|c| c.deadline))
            .chain(self.closing.values().filter_map(|c| c.deadline))
            .chain(self.listener_paused_until)
            .min();
        match next {
            None => -1,
            Some(t) => {
                let d = t.saturating_duration_since(now);
                // Round up so we never wake just before the deadline.
                let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
        }
    }

    /// Expires handshakes, unanswered requests and shutdowns, slow flushes.
    pub fn handle_timeouts(&mut self, now: Instant) {
        if self.listener_paused_until.is_some_and(|t| t <= now) {
            self.resume_listener();
        }
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            debug!("vsock: host client handshake timed out");
            self.drop_pending(t);
        }
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            debug!("vsock: guest did not answer in time, resetting");
            self.remove_conn(t, true);
        }
        let expired: Vec<u64> = self
            .closing
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            debug!("vsock: host peer too slow to take the last data");
            self.drop_closing(t);
        }
    }
}

/// Registers or modifies `conn`'s socket in epoll to match what it needs;
/// a socket whose peer hung up leaves epoll for good (it would report
/// EPOLLHUP forever).
fn update_interest(epoll: &Epoll, token: u64, conn: &mut Connection) -> io::Result<()> {
    if conn.host_hup() {
        if conn.registered {
            conn.registered = false;
            epoll.ctl(
                ControlOperation::Delete,
                conn.stream.as_raw_fd(),
                EpollEvent::default(),
            )?;
        }
        return Ok(());
    }
    let want = conn.desired_interest();
    if conn.registered && conn.interest == want {
        return Ok(());
    }
    let op = if conn.registered {
        ControlOperation::Modify
    } else {
        ControlOperation::Add
    };
    epoll.ctl(op, conn.stream.as_raw_fd(), EpollEvent::new(want, token))?;
    conn.registered = true;
    conn.interest = want;
    Ok(())
}
