//! The hybrid-vsock connection table (muxer + connections) with real Unix
//! sockets around it, for the `vsock_muxer` fuzz target: the guest's
//! packets, the host clients' bytes and hang-ups, epoll events and time are
//! interleaved in any order, and the muxer's promises are checked after
//! every step.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EpollEvent;

use crate::devices::virtio::vsock::muxer::{
    Muxer, MAX_CONNECTIONS, MAX_TOTAL_BUFFERED, TOKEN_LISTENER,
};
use crate::devices::virtio::vsock::packet::{
    Header, Op, HDR_SIZE, HOST_CID, MAX_PKT_DATA, TYPE_STREAM,
};
use crate::devices::virtio::vsock::uds::port_path;

/// The guest's CID in the harness.
pub const GUEST_CID: u64 = 3;
/// Most host clients and host listeners the harness keeps open at once.
const MAX_HOST_SOCKETS: usize = 8;

/// A muxer on a listener in its own temporary directory, the host clients
/// connected to it, and host listeners for guest-initiated connections.
pub struct MuxerHarness {
    dir: PathBuf,
    muxer: Muxer,
    clients: Vec<UnixStream>,
    listeners: Vec<UnixListener>,
    /// How far the harness's clock is ahead of the real one.
    skew: Duration,
    rx_buf: Vec<u8>,
}

impl MuxerHarness {
    /// A fresh muxer with no connections.
    pub fn new() -> std::io::Result<MuxerHarness> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vessel-fuzz-vsock-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let uds = dir.join("v.sock");
        let listener = UnixListener::bind(&uds)?;
        listener.set_nonblocking(true)?;
        let muxer = Muxer::new(GUEST_CID, uds, listener)?;
        Ok(MuxerHarness {
            dir,
            muxer,
            clients: Vec::new(),
            listeners: Vec::new(),
            skew: Duration::ZERO,
            rx_buf: vec![0; MAX_PKT_DATA],
        })
    }

    /// A packet from the guest: `raw` is its header (CIDs, type and op are
    /// made valid when `well_formed`, to get past the first checks more
    /// often), `data` its payload (cut to the header's length).
    pub fn guest_tx(&mut self, raw: &[u8; HDR_SIZE], well_formed: bool, data: &[u8]) {
        let mut hdr = Header::from_bytes(raw);
        if well_formed {
            hdr.src_cid = GUEST_CID;
            hdr.dst_cid = HOST_CID;
            hdr.type_ = TYPE_STREAM;
            hdr.op = (hdr.op % 7) + 1;
        }
        // The TX parser caps the payload at MAX_PKT_DATA and the length
        // field at what the chain holds.
        let len = (hdr.len as usize).min(data.len()).min(MAX_PKT_DATA);
        hdr.len = len as u32;
        // The worker leaves a packet that would block in the queue.
        if !self.muxer.tx_would_block(&hdr) {
            self.muxer.handle_tx(&hdr, &data[..len]);
        }
        self.check();
    }

    /// A host client connects to the vsock socket.
    pub fn host_connect(&mut self) {
        if self.clients.len() >= MAX_HOST_SOCKETS {
            return;
        }
        if let Ok(s) = UnixStream::connect(self.dir.join("v.sock")) {
            if s.set_nonblocking(true).is_ok() {
                self.clients.push(s);
            }
        }
    }

    /// Host client `i` (modulo their number) writes `data`.
    pub fn host_write(&mut self, i: usize, data: &[u8]) {
        if let Some(mut s) = self.client(i) {
            let _ = s.write(data);
        }
    }

    /// Host client `i` reads what is there.
    pub fn host_read(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        if let Some(mut s) = self.client(i) {
            let _ = s.read(&mut buf);
        }
    }

    /// Host client `i` closes (`full`) or shuts down its write side.
    pub fn host_close(&mut self, i: usize, full: bool) {
        if self.clients.is_empty() {
            return;
        }
        let i = i % self.clients.len();
        if full {
            self.clients.swap_remove(i);
        } else {
            let _ = self.clients[i].shutdown(std::net::Shutdown::Write);
        }
    }

    /// A host program listens on `port` for the guest's connections.
    pub fn host_listen(&mut self, port: u32) {
        if self.listeners.len() >= MAX_HOST_SOCKETS {
            return;
        }
        let path = port_path(&self.dir.join("v.sock"), port);
        if let Ok(l) = UnixListener::bind(path) {
            if l.set_nonblocking(true).is_ok() {
                self.listeners.push(l);
            }
        }
    }

    /// The host listeners accept what the guest connected, as clients.
    pub fn host_accept(&mut self) {
        for l in &self.listeners {
            while self.clients.len() < MAX_HOST_SOCKETS {
                match l.accept() {
                    Ok((s, _)) if s.set_nonblocking(true).is_ok() => self.clients.push(s),
                    _ => break,
                }
            }
        }
    }

    fn client(&self, i: usize) -> Option<&UnixStream> {
        (!self.clients.is_empty()).then(|| &self.clients[i % self.clients.len()])
    }

    /// Delivers the ready epoll events to the muxer, as its worker does.
    pub fn poll(&mut self) {
        let mut events = [EpollEvent::default(); 64];
        let n = self.muxer.epoll().wait(0, &mut events).unwrap_or(0);
        for ev in &events[..n] {
            if ev.data() >= TOKEN_LISTENER {
                self.muxer.handle_event(ev.data(), ev.event_set());
            }
        }
        self.check();
    }

    /// The guest takes up to `count` packets with RX buffers of `capacity`
    /// payload bytes; every packet must be well-formed.
    pub fn guest_rx(&mut self, count: usize, capacity: usize) {
        let capacity = capacity.clamp(1, MAX_PKT_DATA);
        for _ in 0..count {
            let Some((hdr, n)) = self.muxer.next_rx_packet(&mut self.rx_buf[..capacity]) else {
                break;
            };
            assert_eq!(hdr.src_cid, HOST_CID, "{hdr:?}");
            assert_eq!(hdr.dst_cid, GUEST_CID, "{hdr:?}");
            assert_eq!(hdr.type_, TYPE_STREAM, "{hdr:?}");
            assert!(Op::from_u16(hdr.op).is_some(), "{hdr:?}");
            assert!(n <= capacity, "{n} > {capacity}");
            assert_eq!(hdr.len as usize, n, "{hdr:?}");
        }
        self.check();
    }

    /// Time passes by `ms` milliseconds; deadlines expire.
    pub fn advance(&mut self, ms: u64) {
        self.skew += Duration::from_millis(ms);
        self.muxer.handle_timeouts(Instant::now() + self.skew);
        self.check();
    }

    /// The bounds the muxer promises.
    fn check(&self) {
        assert!(self.muxer.connection_count() <= MAX_CONNECTIONS);
        assert!(self.muxer.total_buffered() <= MAX_TOTAL_BUFFERED);
        let _ = self.muxer.timeout_ms(Instant::now() + self.skew);
    }
}

impl Drop for MuxerHarness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
