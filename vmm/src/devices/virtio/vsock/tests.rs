//! The vsock device driven from a test "guest": real virtqueues in guest
//! memory, the real worker thread, real Unix sockets on the host side.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::connection::CONN_TX_BUF_SIZE;
use super::packet::{Header, Op, HDR_SIZE, HOST_CID, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_WRITE};
use crate::devices::virtio::GuestMemory;

const CID: u64 = 3;
const MEM_SIZE: usize = 16 << 20;
const BUF_BASE: u64 = 0x10_0000;
const TIMEOUT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);
const RX_DATA: u32 = 4096;
const GUEST_BUF_ALLOC: u32 = 64 * 1024;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vessel-vsock-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The guest side: its memory, its three queues, and the device under test.
struct Guest {
    mem: GuestMemory,
    rx: TestQueue,
    tx: TestQueue,
    evts: Vec<EventFd>,
    irq: Arc<TestInterrupt>,
    dev: Vsock,
    uds: PathBuf,
    next_buf: u64,
    rx_bufs: HashMap<u32, (u64, u64)>,
    tx_published: u16,
    _dir: TempDir,
}

impl Guest {
    fn new(name: &str) -> Guest {
        let dir = TempDir::new(name);
        let uds = dir.0.join("v.sock");
        let dev = Vsock::new(CID, &uds).unwrap();
        Self::with_device(dev, uds, dir)
    }

    /// A guest whose driver negotiated EVENT_IDX (or not) and posted only
    /// `rx_buffers` RX buffers.
    fn with_notifications(name: &str, event_idx: bool, rx_buffers: usize) -> Guest {
        let dir = TempDir::new(name);
        let uds = dir.0.join("v.sock");
        let dev = Vsock::new(CID, &uds).unwrap();
        Self::build(dev, uds, dir, event_idx, rx_buffers)
    }

    fn with_device(dev: Vsock, uds: PathBuf, dir: TempDir) -> Guest {
        Self::build(dev, uds, dir, false, 32)
    }

    fn build(
        mut dev: Vsock,
        uds: PathBuf,
        dir: TempDir,
        event_idx: bool,
        rx_buffers: usize,
    ) -> Guest {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let rx = TestQueue::new(&mem, 0x1_0000, 256);
        let tx = TestQueue::new(&mem, 0x2_0000, 256);
        let ev = TestQueue::new(&mem, 0x3_0000, 256);
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let irq = Arc::new(TestInterrupt::default());
        let mut act = activation(&mem, &irq, &[&rx, &tx, &ev], &evts);
        for q in &mut act.queues {
            q.set_event_idx(event_idx);
        }
        dev.activate(act).unwrap();
        let mut g = Guest {
            mem,
            rx,
            tx,
            evts,
            irq,
            dev,
            uds,
            next_buf: BUF_BASE,
            rx_bufs: HashMap::new(),
            tx_published: 0,
            _dir: dir,
        };
        g.post_rx(rx_buffers);
        g
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_buf;
        self.next_buf = (a + len as u64 + 15) & !15;
        assert!(self.next_buf <= MEM_SIZE as u64, "test guest out of memory");
        a
    }

    /// A guest → host header on guest port `src` to host port `dst`.
    fn hdr(&self, op: Op, src: u32, dst: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port: src,
            dst_port: dst,
            type_: TYPE_STREAM,
            op: op as u16,
            buf_alloc: GUEST_BUF_ALLOC,
            ..Header::default()
        }
    }

    /// The guest's answer to a packet from the host.
    fn answer(&self, to: &Header, op: Op) -> Header {
        self.hdr(op, to.dst_port, to.src_port)
    }

    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let h = self.alloc(HDR_SIZE);
            let d = self.alloc(RX_DATA as usize);
            let head = self
                .rx
                .add_chain(&[(h, HDR_SIZE as u32, F_WRITE), (d, RX_DATA, F_WRITE)]);
            self.rx_bufs.insert(u32::from(head), (h, d));
            self.rx.publish(head);
        }
        self.evts[0].write(1).unwrap();
    }

    fn send_chain(&mut self, bufs: &[(u64, u32, u16)]) {
        let head = self.tx.add_chain(bufs);
        self.tx.publish(head);
        self.tx_published = self.tx_published.wrapping_add(1);
        self.evts[1].write(1).unwrap();
    }

    fn send(&mut self, hdr: Header, data: &[u8]) {
        let mut hdr = hdr;
        hdr.len = data.len() as u32;
        let h = self.alloc(HDR_SIZE);
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(h))
            .unwrap();
        if data.is_empty() {
            self.send_chain(&[(h, HDR_SIZE as u32, 0)]);
        } else {
            let d = self.alloc(data.len());
            self.mem.write_slice(data, GuestAddress(d)).unwrap();
            self.send_chain(&[(h, HDR_SIZE as u32, 0), (d, data.len() as u32, 0)]);
        }
    }

    fn wait_tx_consumed(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.tx.used_idx() != self.tx_published {
            assert!(Instant::now() < deadline, "device did not consume TX");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn try_recv(&mut self, wait: Duration) -> Option<(Header, Vec<u8>)> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some((head, len)) = self.rx.pop_used() {
                let (h, d) = self.rx_bufs[&head];
                let mut raw = [0u8; HDR_SIZE];
                self.mem.read_slice(&mut raw, GuestAddress(h)).unwrap();
                let hdr = Header::from_bytes(&raw);
                let n = len as usize - HDR_SIZE;
                assert_eq!(n, hdr.len as usize, "used len must match header len");
                let mut data = vec![0u8; n];
                self.mem.read_slice(&mut data, GuestAddress(d)).unwrap();
                // Keep the RX queue stocked, reusing the memory.
                let head = self
                    .rx
                    .add_chain(&[(h, HDR_SIZE as u32, F_WRITE), (d, RX_DATA, F_WRITE)]);
                self.rx_bufs.insert(u32::from(head), (h, d));
                self.rx.publish(head);
                self.evts[0].write(1).unwrap();
                return Some((hdr, data));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn recv(&mut self) -> (Header, Vec<u8>) {
        self.try_recv(TIMEOUT)
            .expect("no packet from the device in time")
    }

    fn recv_op(&mut self, op: Op) -> (Header, Vec<u8>) {
        let (h, d) = self.recv();
        assert_eq!(h.op, op as u16, "expected {op:?}, got {h:?}");
        assert_eq!(
            (h.src_cid, h.dst_cid, h.type_),
            (HOST_CID, CID, TYPE_STREAM)
        );
        (h, d)
    }

    fn assert_quiet(&mut self) {
        if let Some(p) = self.try_recv(QUIET) {
            panic!("unexpected packet {p:?}");
        }
    }

    fn wait_needs_reset(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.irq.needs_reset() {
            assert!(Instant::now() < deadline, "device did not ask for a reset");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A host client runs the handshake for guest port `port` and the guest
    /// accepts; returns the client and the host-side port.
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let mut s = UnixStream::connect(&self.uds).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        let (req, _) = self.recv_op(Op::Request);
        assert_eq!(req.dst_port, port);
        assert!(req.src_port >= 1 << 30);
        assert_eq!(req.buf_alloc, CONN_TX_BUF_SIZE);
        let resp = self.answer(&req, Op::Response);
        self.send(resp, &[]);
        assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
        (s, req.src_port)
    }
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF before newline");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

fn read_exact_timeout(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

/// Whether the host client was closed by the device (EOF or reset).
fn closed_within(s: &mut UnixStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

// ---- Device basics ----

#[test]
fn device_identity_and_config() {
    let dir = TempDir::new("config");
    let dev = Vsock::new(0x1234_5678, &dir.0.join("v.sock")).unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    // VIRTIO_F_VERSION_1 and VIRTIO_RING_F_EVENT_IDX.
    assert_eq!(dev.features(), (1 << 32) | (1 << 29));
    assert_eq!(dev.guest_cid(), 0x1234_5678);
    let mut b = [0xffu8; 8];
    dev.read_config(0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x1234_5678);
    let mut b = [0xffu8; 4];
    dev.read_config(4, &mut b);
    assert_eq!(b, [0; 4]);
    dev.read_config(2, &mut b);
    assert_eq!(b, [0x34, 0x12, 0, 0]);
    dev.read_config(6, &mut b);
    assert_eq!(b, [0; 4]);
    dev.read_config(u64::MAX, &mut b);
    assert_eq!(b, [0; 4]);
}

#[test]
fn invalid_cids_rejected() {
    let dir = TempDir::new("cid");
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
        let e = Vsock::new(cid, &dir.0.join("v.sock")).err().unwrap();
        assert!(matches!(e, VsockError::InvalidCid(c) if c == cid));
    }
}

#[test]
fn busy_socket_path_is_an_error() {
    let dir = TempDir::new("busy");
    let path = dir.0.join("v.sock");
    let _other = UnixListener::bind(&path).unwrap();
    let e = Vsock::new(3, &path).err().unwrap();
    assert!(matches!(e, VsockError::InUse(_)));
    assert_eq!(
        e.to_string(),
        format!(
            "vsock socket {} is in use by another process",
            path.display()
        )
    );
    // A second device on a path a live device holds is refused too.
    let path2 = dir.0.join("w.sock");
    let _dev = Vsock::new(3, &path2).unwrap();
    assert!(matches!(
        Vsock::new(4, &path2).err().unwrap(),
        VsockError::InUse(_)
    ));
}

#[test]
fn stale_socket_path_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("v.sock");
    crate::test_sockets::stale_socket(&path);
    assert!(path.exists());
    let dev = Vsock::new(3, &path).unwrap();
    // The new socket accepts connections (they queue until activation).
    UnixStream::connect(&path).unwrap();
    // Dropping the device removes its socket file.
    drop(dev);
    assert!(!path.exists());
}

#[test]
fn non_socket_path_is_an_error() {
    let dir = TempDir::new("file");
    let path = dir.0.join("v.sock");
    std::fs::write(&path, b"precious").unwrap();
    let e = Vsock::new(3, &path).err().unwrap();
    assert!(matches!(e, VsockError::NotASocket(_)));
    assert!(e.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn activate_validates_queues_and_reset_reactivates() {
    let dir = TempDir::new("reset");
    let uds = dir.0.join("v.sock");
    let mut dev = Vsock::new(CID, &uds).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let irq = Arc::new(TestInterrupt::default());
    let e = dev.activate(activation(&mem, &irq, &[], &[]));
    assert!(matches!(e, Err(ActivateError::BadQueues(_))));

    let mut g = Guest::with_device(dev, uds, dir);
    let (mut s, _) = g.host_connect(1024);
    assert!(g.dev.reset());
    // The reset closed every connection; the listener survives it.
    assert!(closed_within(&mut s, TIMEOUT));
    assert!(g.dev.reset());
    let Guest { dev, uds, _dir, .. } = g;
    let mut g = Guest::with_device(dev, uds, _dir);
    g.host_connect(1024);
}

// ---- Host-initiated connections ----

#[test]
fn host_connect_then_data_both_ways() {
    let mut g = Guest::new("hostconn");
    let mut s = UnixStream::connect(&g.uds).unwrap();
    // Payload pipelined right behind the handshake must not be lost.
    s.write_all(b"CONNECT 1024\nearly").unwrap();
    let (req, _) = g.recv_op(Op::Request);
    assert_eq!(req.dst_port, 1024);
    g.assert_quiet();
    let resp = g.answer(&req, Op::Response);
    g.send(resp, &[]);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
    // The boot timeline's last phase: the guest accepted a host connection.
    use crate::control::timeline::{global, Phase};
    assert!(global().at(Phase::FirstVsockConnection).is_some());
    let (rw, data) = g.recv_op(Op::Rw);
    assert_eq!((rw.src_port, rw.dst_port), (req.src_port, 1024));
    assert_eq!(data, b"early");

    s.write_all(b"ping").unwrap();
    let (_, data) = g.recv_op(Op::Rw);
    assert_eq!(data, b"ping");
    let rw = g.answer(&req, Op::Rw);
    g.send(rw, b"pong");
    assert_eq!(read_exact_timeout(&mut s, 4), b"pong");

    // A second client gets its own host port.
    let (_s2, port2) = g.host_connect(1024);
    assert_ne!(port2, req.src_port);
    assert!(g.irq.count.load(Ordering::SeqCst) > 0);
}

#[test]
fn host_connect_refused_by_guest() {
    let mut g = Guest::new("hostrst");
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 9\n").unwrap();
    let (req, _) = g.recv_op(Op::Request);
    let rst = g.answer(&req, Op::Rst);
    g.send(rst, &[]);
    assert!(closed_within(&mut s, TIMEOUT));
    g.assert_quiet();
}

#[test]
fn bad_handshakes_close_the_client() {
    let mut g = Guest::new("badhs");
    let long = format!("CONNECT {}\n", "1".repeat(40));
    let bad: [&[u8]; 7] = [
        b"connect 1024\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"CONNECT 1024\r\n",
        b"CONNECT 4294967296\n",
        b"CONNECT \n",
        long.as_bytes(),
        &[0u8; 64],
    ];
    for line in bad {
        let mut s = UnixStream::connect(&g.uds).unwrap();
        let _ = s.write_all(line);
        assert!(closed_within(&mut s, TIMEOUT), "{line:?} not rejected");
    }
    g.assert_quiet();
    // The device still works.
    g.host_connect(5);
}

#[test]
fn slow_handshake_is_dropped_after_deadline() {
    let mut g = Guest::new("slowhs");
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.write_all(b"CONNECT 10").unwrap();
    let silent = UnixStream::connect(&g.uds).unwrap();
    let start = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    let mut silent = silent;
    assert!(closed_within(&mut silent, Duration::from_secs(2)));
    g.assert_quiet();
}

#[test]
fn host_credit_is_respected() {
    let mut g = Guest::new("hostcredit");
    let mut s = UnixStream::connect(&g.uds).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"CONNECT 77\n").unwrap();
    let (req, _) = g.recv_op(Op::Request);
    let mut resp = g.answer(&req, Op::Response);
    resp.buf_alloc = 1000;
    g.send(resp, &[]);
    read_line(&mut s);
    let payload: Vec<u8> = (0..5000).map(pattern).collect();
    s.write_all(&payload).unwrap();

    let mut got = Vec::new();
    while got.len() < 1000 {
        let (h, d) = g.recv_op(Op::Rw);
        assert!(h.len > 0);
        got.extend_from_slice(&d);
    }
    assert_eq!(got.len(), 1000, "the device overran the guest's credit");
    // Out of credit: the device asks once and then waits.
    g.recv_op(Op::CreditRequest);
    g.assert_quiet();

    let mut upd = g.answer(&req, Op::CreditUpdate);
    upd.buf_alloc = 1000;
    upd.fwd_cnt = 1000;
    g.send(upd, &[]);
    while got.len() < 2000 {
        let (_, d) = g.recv_op(Op::Rw);
        got.extend_from_slice(&d);
    }
    assert_eq!(got.len(), 2000);
    assert_eq!(got, payload[..2000]);
    g.recv_op(Op::CreditRequest);
    g.assert_quiet();
}

#[test]
fn credit_request_is_answered() {
    let mut g = Guest::new("creditreq");
    let (_s, port) = g.host_connect(80);
    let req = g.hdr(Op::CreditRequest, 80, port);
    g.send(req, &[]);
    let (h, _) = g.recv_op(Op::CreditUpdate);
    assert_eq!((h.buf_alloc, h.fwd_cnt), (CONN_TX_BUF_SIZE, 0));
    assert_eq!((h.src_port, h.dst_port), (port, 80));
}

#[test]
fn host_close_shuts_down_then_guest_rst() {
    let mut g = Guest::new("hostclose");
    let (mut s, port) = g.host_connect(81);
    s.write_all(b"last words").unwrap();
    drop(s);
    let (_, d) = g.recv_op(Op::Rw);
    assert_eq!(d, b"last words");
    let (h, _) = g.recv_op(Op::Shutdown);
    // A read can meet EOF before epoll reports the hang-up: then SEND comes
    // alone first, and RCV|SEND follows once the hang-up is seen.
    if h.flags == SHUTDOWN_SEND {
        let (h, _) = g.recv_op(Op::Shutdown);
        assert_eq!(h.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    } else {
        assert_eq!(h.flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    }
    let rst = g.hdr(Op::Rst, 81, port);
    g.send(rst, &[]);
    g.wait_tx_consumed();
    // The connection is gone: data for it is answered with RST.
    let rw = g.hdr(Op::Rw, 81, port);
    g.send(rw, b"x");
    g.recv_op(Op::Rst);
}

#[test]
fn host_half_close_keeps_the_other_direction() {
    let mut g = Guest::new("halfclose");
    let (mut s, port) = g.host_connect(82);
    s.write_all(b"request").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (_, d) = g.recv_op(Op::Rw);
    assert_eq!(d, b"request");
    let (h, _) = g.recv_op(Op::Shutdown);
    assert_eq!(h.flags, SHUTDOWN_SEND);
    let rw = g.hdr(Op::Rw, 82, port);
    g.send(rw, b"reply");
    assert_eq!(read_exact_timeout(&mut s, 5), b"reply");
    // The guest closes: RST, and the host sees EOF.
    let mut sd = g.hdr(Op::Shutdown, 82, port);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(sd, &[]);
    g.recv_op(Op::Rst);
    assert!(closed_within(&mut s, TIMEOUT));
}

#[test]
fn guest_rst_closes_host_socket() {
    let mut g = Guest::new("guestrst");
    let (mut s, port) = g.host_connect(83);
    let rst = g.hdr(Op::Rst, 83, port);
    g.send(rst, &[]);
    assert!(closed_within(&mut s, TIMEOUT));
    g.assert_quiet();
}

// ---- Guest-initiated connections ----

#[test]
fn guest_connect_to_host_listener() {
    let mut g = Guest::new("guestconn");
    let listener = UnixListener::bind(format!("{}_1234", g.uds.display())).unwrap();
    let req = g.hdr(Op::Request, 5000, 1234);
    g.send(req, &[]);
    let (resp, _) = g.recv_op(Op::Response);
    assert_eq!((resp.src_port, resp.dst_port), (1234, 5000));
    assert_eq!(resp.buf_alloc, CONN_TX_BUF_SIZE);
    let (mut host, _) = listener.accept().unwrap();

    let rw = g.hdr(Op::Rw, 5000, 1234);
    g.send(rw, b"hello host");
    assert_eq!(read_exact_timeout(&mut host, 10), b"hello host");
    host.write_all(b"hello guest").unwrap();
    let (h, d) = g.recv_op(Op::Rw);
    assert_eq!(
        (h.src_port, h.dst_port, d.as_slice()),
        (1234, 5000, &b"hello guest"[..])
    );

    // Guest shuts down both ways: RST back, host sees the data then EOF.
    let rw = g.hdr(Op::Rw, 5000, 1234);
    g.send(rw, b"bye");
    let mut sd = g.hdr(Op::Shutdown, 5000, 1234);
    sd.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    g.send(sd, &[]);
    g.recv_op(Op::Rst);
    assert_eq!(read_exact_timeout(&mut host, 3), b"bye");
    assert!(closed_within(&mut host, TIMEOUT));
}

#[test]
fn guest_connect_without_listener_gets_rst() {
    let mut g = Guest::new("nolistener");
    let req = g.hdr(Op::Request, 5001, 4321);
    g.send(req, &[]);
    let (h, _) = g.recv_op(Op::Rst);
    assert_eq!((h.src_port, h.dst_port), (4321, 5001));
    // A stale socket file with nobody listening is refused the same way.
    crate::test_sockets::stale_socket(format!("{}_4322", g.uds.display()));
    let req = g.hdr(Op::Request, 5002, 4322);
    g.send(req, &[]);
    g.recv_op(Op::Rst);
}

#[test]
fn guest_tx_stops_at_the_buffer_bound_when_host_does_not_read() {
    let mut g = Guest::new("backpressure");
    let listener = UnixListener::bind(format!("{}_2000", g.uds.display())).unwrap();
    let req = g.hdr(Op::Request, 6000, 2000);
    g.send(req, &[]);
    g.recv_op(Op::Response);
    let (mut host, _) = listener.accept().unwrap();

    // A hostile guest ignores its credit and sends 2.5 MiB at once.
    const PKT: usize = 64 * 1024;
    const N: usize = 40;
    let stream: Vec<u8> = (0..PKT * N).map(pattern).collect();
    for chunk in stream.chunks(PKT) {
        let rw = g.hdr(Op::Rw, 6000, 2000);
        g.send(rw, chunk);
    }
    // Wait until the device stops taking packets.
    let mut last = g.tx.used_idx();
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(20));
        let now = g.tx.used_idx();
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    let consumed = usize::from(last) - 1; // minus the REQUEST
    assert!(consumed < N, "device consumed everything");
    // What it took is what the host socket queued plus at most its bound.
    let mut inq: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the valid pointer.
    let rc = unsafe { libc::ioctl(host.as_raw_fd(), libc::FIONREAD, &mut inq) };
    assert_eq!(rc, 0);
    let held = consumed * PKT - inq as usize;
    assert!(
        held <= CONN_TX_BUF_SIZE as usize,
        "device holds {held} bytes"
    );
    assert!(
        held + PKT > CONN_TX_BUF_SIZE as usize,
        "stopped early at {held}"
    );

    // The host reads everything: the device resumes and nothing is lost.
    let got = read_exact_timeout(&mut host, PKT * N);
    assert!(got == stream, "data corrupted or reordered");
    g.wait_tx_consumed();
    // The guest was told about the freed space.
    let mut max_fwd = 0;
    while let Some((h, _)) = g.try_recv(QUIET) {
        assert_eq!(h.op, Op::CreditUpdate as u16);
        max_fwd = max_fwd.max(h.fwd_cnt);
    }
    assert!(max_fwd > 0);
}

// ---- Notification suppression (every kick is a VM exit) ----

/// Polls `cond` until it holds or [`TIMEOUT`] passes.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

const NO_NOTIFY: u16 = 1;

#[test]
fn tx_kicks_are_rearmed_once_the_queue_is_drained() {
    for event_idx in [false, true] {
        let mut g = Guest::with_notifications("txkick", event_idx, 32);
        let _listener = UnixListener::bind(format!("{}_2000", g.uds.display())).unwrap();
        for port in 6000..6003 {
            g.send(g.hdr(Op::Request, port, 2000), &[]);
        }
        g.wait_tx_consumed();
        if event_idx {
            // The next packet, the 4th, must kick.
            eventually("avail_event not moved to the next packet", || {
                g.tx.avail_event() == g.tx.avail_idx()
            });
        } else {
            eventually("TX kicks left off", || g.tx.used_flags() & NO_NOTIFY == 0);
        }
    }
}

#[test]
fn rx_asks_for_a_kick_only_when_out_of_buffers() {
    for event_idx in [false, true] {
        let mut g = Guest::with_notifications("rxkick", event_idx, 2);
        // Buffers left and nothing to send: refills need no kick.
        let (mut host, _) = g.host_connect(1024);
        if !event_idx {
            eventually("RX kicks not turned off", || {
                g.rx.used_flags() & NO_NOTIFY != 0
            });
        }
        // More packets than the guest has buffers for: the device waits
        // for a refill and asks to be kicked for it.
        let data: Vec<u8> = (0..4 * RX_DATA as usize).map(pattern).collect();
        host.write_all(&data).unwrap();
        let ask = || {
            if event_idx {
                g.rx.avail_event() == g.rx.avail_idx()
            } else {
                g.rx.used_flags() & NO_NOTIFY == 0
            }
        };
        eventually("out of RX buffers, no kick asked for", ask);
        // try_recv refills (and kicks) as it goes: every byte arrives.
        let mut got = Vec::new();
        while got.len() < data.len() {
            let (h, d) = g.recv();
            if h.op == Op::Rw as u16 {
                got.extend_from_slice(&d);
            }
        }
        assert!(got == data, "data corrupted or reordered");
    }
}

// ---- Malformed input ----

#[test]
fn unknown_connections_get_rst() {
    let mut g = Guest::new("unknown");
    let rw = g.hdr(Op::Rw, 7000, 7001);
    g.send(rw, b"data");
    let (h, _) = g.recv_op(Op::Rst);
    assert_eq!((h.src_port, h.dst_port, h.len), (7001, 7000, 0));
    for op in [
        Op::Response,
        Op::Shutdown,
        Op::CreditUpdate,
        Op::CreditRequest,
    ] {
        let p = g.hdr(op, 7000, 7001);
        g.send(p, &[]);
        g.recv_op(Op::Rst);
    }
    // Never answer a RST with a RST.
    let rst = g.hdr(Op::Rst, 7000, 7001);
    g.send(rst, &[]);
    g.wait_tx_consumed();
    g.assert_quiet();
}

#[test]
fn bad_cids_dropped_bad_type_or_op_reset() {
    let mut g = Guest::new("badhdr");
    let (mut s, port) = g.host_connect(90);
    let mut p = g.hdr(Op::Rw, 90, port);
    p.dst_cid = 5;
    g.send(p, b"nope");
    let mut p = g.hdr(Op::Rw, 90, port);
    p.src_cid = 4;
    g.send(p, b"nope");
    let mut p = g.hdr(Op::Rw, 90, port);
    p.src_cid = CID | 1 << 40;
    g.send(p, b"nope");
    g.wait_tx_consumed();
    g.assert_quiet();
    // Nothing reached the host.
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap_err().kind(), ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();

    // SEQPACKET on a live connection resets it.
    let mut p = g.hdr(Op::Rw, 90, port);
    p.type_ = 2;
    g.send(p, b"x");
    g.recv_op(Op::Rst);
    assert!(closed_within(&mut s, TIMEOUT));
    // Unknown op: RST too.
    let (mut s, port) = g.host_connect(91);
    let mut p = g.hdr(Op::Rw, 91, port);
    p.op = 99;
    g.send(p, &[]);
    g.recv_op(Op::Rst);
    assert!(closed_within(&mut s, TIMEOUT));
}

#[test]
fn garbage_tx_descriptors_are_dropped() {
    let mut g = Guest::new("garbage");
    let zeros = g.alloc(HDR_SIZE * 2);
    let long = {
        let mut h = g.hdr(Op::Rw, 1, 2);
        h.len = 1 << 20;
        h
    };
    let long_at = g.alloc(HDR_SIZE + 64);
    g.mem
        .write_slice(&long.to_bytes(), GuestAddress(long_at))
        .unwrap();
    let trunc = {
        let mut h = g.hdr(Op::Rw, 1, 2);
        h.len = 100;
        h
    };
    let trunc_at = g.alloc(HDR_SIZE + 50);
    g.mem
        .write_slice(&trunc.to_bytes(), GuestAddress(trunc_at))
        .unwrap();

    // Outside guest memory, wrapping around the address space.
    g.send_chain(&[(0xffff_ffff_f000, HDR_SIZE as u32, 0)]);
    g.send_chain(&[(u64::MAX - 10, HDR_SIZE as u32, 0)]);
    g.send_chain(&[(zeros, u32::MAX, 0)]);
    // Zero-length and too short for a header.
    g.send_chain(&[(zeros, 0, 0)]);
    g.send_chain(&[(zeros, 20, 0)]);
    // Device-writable only.
    g.send_chain(&[(zeros, HDR_SIZE as u32, F_WRITE)]);
    // len above the cap, and len beyond the chain.
    g.send_chain(&[(long_at, (HDR_SIZE + 64) as u32, 0)]);
    g.send_chain(&[(trunc_at, HDR_SIZE as u32, 0), (trunc_at + 44, 50, 0)]);
    // Broken indirect table.
    g.send_chain(&[(zeros, 7, 4)]);
    // A descriptor that points to itself.
    let head = g.tx.add_chain(&[(zeros, HDR_SIZE as u32, 0)]);
    g.tx.write_desc(head, zeros, HDR_SIZE as u32, 1, head);
    g.tx.publish(head);
    g.tx_published = g.tx_published.wrapping_add(1);
    g.evts[1].write(1).unwrap();
    g.wait_tx_consumed();
    g.assert_quiet();
    assert!(!g.irq.needs_reset());

    // A valid packet split across odd descriptors still works.
    let rw = g.hdr(Op::Rw, 7100, 7101);
    let mut h = rw;
    h.len = 5;
    let at = g.alloc(64);
    g.mem.write_slice(&h.to_bytes(), GuestAddress(at)).unwrap();
    g.mem.write_slice(b"hello", GuestAddress(at + 44)).unwrap();
    g.send_chain(&[(at, 20, 0), (at + 20, 26, 0), (at + 46, 3, 0)]);
    let (h, _) = g.recv_op(Op::Rst);
    assert_eq!((h.src_port, h.dst_port), (7101, 7100));
}

#[test]
fn garbage_avail_index_needs_reset() {
    let g = Guest::new("availidx");
    g.tx.set_avail_idx(1000);
    g.evts[1].write(1).unwrap();
    g.wait_needs_reset();
}

#[test]
fn out_of_range_head_needs_reset() {
    let g = Guest::new("head");
    // Published head index beyond the queue size.
    let slot_addr = g.tx.avail_addr() + 4;
    g.mem
        .write_obj(300u16.to_le(), GuestAddress(slot_addr))
        .unwrap();
    g.tx.set_avail_idx(1);
    g.evts[1].write(1).unwrap();
    g.wait_needs_reset();
}

#[test]
fn short_rx_buffer_needs_reset() {
    let dir = TempDir::new("shortrx");
    let uds = dir.0.join("v.sock");
    let dev = Vsock::new(CID, &uds).unwrap();
    let mut g = Guest::with_device(dev, uds, dir);
    // Use up the good buffers with RSTs, then offer a too-short one.
    for i in 0..32 {
        let rw = g.hdr(Op::Rw, 8000 + i, 8000);
        g.send(rw, &[]);
    }
    g.wait_tx_consumed();
    let deadline = Instant::now() + TIMEOUT;
    while g.rx.used_idx() < 32 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let a = g.alloc(16);
    let head = g.rx.add_chain(&[(a, 16, F_WRITE)]);
    g.rx.publish(head);
    let rw = g.hdr(Op::Rw, 9000, 8000);
    g.send(rw, &[]);
    g.wait_needs_reset();
    assert!(g.dev.reset());
}

#[test]
fn read_only_rx_buffer_needs_reset() {
    let dir = TempDir::new("rorx");
    let uds = dir.0.join("v.sock");
    let dev = Vsock::new(CID, &uds).unwrap();
    let mut g = Guest::with_device(dev, uds, dir);
    for i in 0..32 {
        let rw = g.hdr(Op::Rw, 8000 + i, 8000);
        g.send(rw, &[]);
    }
    let deadline = Instant::now() + TIMEOUT;
    while g.rx.used_idx() < 32 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let a = g.alloc(4096);
    let head = g.rx.add_chain(&[(a, 4096, 0)]);
    g.rx.publish(head);
    let rw = g.hdr(Op::Rw, 9000, 8000);
    g.send(rw, &[]);
    g.wait_needs_reset();
}

#[test]
fn connection_table_is_bounded() {
    use super::muxer::{Muxer, TOKEN_LISTENER};
    use vmm_sys_util::epoll::EventSet;

    let dir = TempDir::new("bounded");
    let path = dir.0.join("v.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut m = Muxer::new(CID, path.clone(), listener).unwrap();
    m.set_max_connections(2);
    let _c1 = UnixStream::connect(&path).unwrap();
    let _c2 = UnixStream::connect(&path).unwrap();
    let mut c3 = UnixStream::connect(&path).unwrap();
    m.handle_event(TOKEN_LISTENER, EventSet::IN);
    assert_eq!(m.connection_count(), 2);
    assert!(closed_within(&mut c3, TIMEOUT));

    // A guest connection beyond the bound is refused even with a listener.
    let _l = UnixListener::bind(format!("{}_5", path.display())).unwrap();
    let req = Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: 99,
        dst_port: 5,
        type_: TYPE_STREAM,
        op: Op::Request as u16,
        ..Header::default()
    };
    m.handle_tx(&req, &[]);
    assert_eq!(m.connection_count(), 2);
    let mut buf = [0u8; 16];
    let (h, _) = m.next_rx_packet(&mut buf).unwrap();
    assert_eq!((h.op, h.src_port, h.dst_port), (Op::Rst as u16, 5, 99));
    assert!(m.next_rx_packet(&mut buf).is_none());
    assert!(!m.has_rx_work());
}

/// A guest (another vCPU, here a thread) that refills the TX queue as fast
/// as the device empties it cannot keep the worker from its stop request:
/// TX is drained one budget at a time between looks at the stop event.
#[test]
fn a_flooding_guest_cannot_keep_the_worker_from_stopping() {
    use std::sync::atomic::AtomicBool;
    let mut g = Guest::new("flood");
    let h = g.alloc(HDR_SIZE);
    // Dropped by the device without an answer (wrong source CID), so only
    // TX is busy.
    let mut p = g.hdr(Op::Rw, 1000, 2000);
    p.src_cid = 4;
    g.mem.write_slice(&p.to_bytes(), GuestAddress(h)).unwrap();
    let spare = TestQueue::new(&g.mem, 0x4_0000, 256);
    let mut tx = std::mem::replace(&mut g.tx, spare);
    let kick = g.evts[1].try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = {
        let (done, sent) = (done.clone(), sent.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                // Every free slot at once, as a guest with a deep queue does.
                let free = 256 - tx.avail_idx().wrapping_sub(tx.used_idx());
                for _ in 0..free {
                    let head = tx.add_chain(&[(h, HDR_SIZE as u32, 0)]);
                    tx.publish(head);
                }
                if free > 0 {
                    sent.fetch_add(usize::from(free), Ordering::Relaxed);
                    let _ = kick.write(1);
                }
            }
        })
    };
    eventually("the flood to be under way", || {
        sent.load(Ordering::Relaxed) > 20_000
    });
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let clean = g.dev.reset();
        let _ = stopped_tx.send(clean);
        drop(g);
    });
    let result = stopped.recv_timeout(TIMEOUT);
    done.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    assert_eq!(result, Ok(true), "the worker did not stop under a TX flood");
}
