//! The device on a real tap in a private network namespace: the test
//! "guest" sends an ARP request through the tap and must get the host
//! kernel's ARP reply back in its RX buffers. Needs root (CAP_NET_ADMIN
//! and CAP_SYS_ADMIN) and `unshare`, `nsenter` and `ip`; skips without
//! them, except under CI=true where they are a prerequisite.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::header::{NetHeader, HDR_LEN};
use super::spec::NetSpec;
use super::tap::{Tap, TapError};
use super::*;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_WRITE};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x02];
const HOST_IP: [u8; 4] = [10, 77, 0, 1];
const GUEST_IP: [u8; 4] = [10, 77, 0, 2];
const DEADLINE: Duration = Duration::from_secs(20);

/// Skips (prints why) or, under CI=true, fails.
fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("real-tap test prerequisite missing under CI: {reason}");
    }
    eprintln!("skipping the real-tap test: {reason}");
}

/// A process holding a fresh network namespace; killed on drop.
struct Netns(Child);

impl Netns {
    fn new() -> Result<Netns, String> {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "300"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut ns = Netns(child);
        let ours = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        let start = Instant::now();
        // Wait until the child has left our namespace (unshare runs first).
        loop {
            if let Some(status) = ns.0.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("unshare --net failed ({status}); not root?"));
            }
            match std::fs::read_link(ns.path()) {
                Ok(l) if l != ours => return Ok(ns),
                _ if start.elapsed() > DEADLINE => return Err("unshare did not start".into()),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }

    fn ip(&self, args: &[&str]) {
        let net = format!("--net={}", self.path());
        let status = Command::new("nsenter")
            .arg(net)
            .arg("ip")
            .args(args)
            .status()
            .expect("nsenter ip");
        assert!(status.success(), "ip {args:?} failed");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Ethernet frame with an ARP request "who has HOST_IP, tell GUEST_IP".
fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend([0xff; 6]);
    f.extend(GUEST_MAC);
    f.extend([0x08, 0x06]); // ARP
    f.extend([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend(GUEST_MAC);
    f.extend(GUEST_IP);
    f.extend([0; 6]);
    f.extend(HOST_IP);
    f
}

#[test]
fn arp_through_a_real_tap_in_a_netns() {
    for tool in ["unshare", "nsenter", "ip"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return skip(&format!("{tool} is not installed"));
        }
    }
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(e) => return skip(&e),
    };
    let spec: NetSpec = format!("tap=vsltest0,netns={}", ns.path()).parse().unwrap();
    let tap = match Tap::open(&spec) {
        Ok(t) => t,
        Err(e @ TapError::Permission { .. }) => return skip(&e.to_string()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(tap.name(), "vsltest0");
    // The tap lives in the namespace, not here.
    assert!(!std::path::Path::new("/sys/class/net/vsltest0").exists());
    // A second open of the same tap is refused with a clear error.
    let busy = Tap::open(&spec).unwrap_err().to_string();
    assert!(busy.contains("is busy"), "{busy}");
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "vsltest0"]);
    ns.ip(&["link", "set", "vsltest0", "up"]);

    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut dev = Net::new(tap, None);
    dev.ack_features(dev.features());
    let mut rxq = TestQueue::new(&mem, 0x1_0000, QUEUE_SIZE);
    let mut txq = TestQueue::new(&mem, 0x2_0000, QUEUE_SIZE);
    for i in 0..32u64 {
        let h = rxq.add_chain(&[(0x10_0000 + i * 0x1000, 4096, F_WRITE)]);
        rxq.publish(h);
    }
    let evts = [(); 2].map(|()| EventFd::new(EFD_NONBLOCK).unwrap());
    let irq = Arc::new(TestInterrupt::default());
    dev.activate(activation(&mem, &irq, &[&rxq, &txq], &evts))
        .unwrap();

    let mut f = NetHeader::default().to_bytes().to_vec();
    f.extend(arp_request());
    mem.write_slice(&f, GuestAddress(0x8_0000)).unwrap();
    let h = txq.add_chain(&[(0x8_0000, f.len() as u32, 0)]);
    txq.publish(h);
    evts[1].write(1).unwrap();
    assert!(txq.wait_used(DEADLINE).is_some());

    // Other frames (IPv6 neighbour discovery) may come first.
    let start = Instant::now();
    let reply = loop {
        let (id, len) = rxq
            .wait_used(DEADLINE.saturating_sub(start.elapsed()))
            .expect("no ARP reply from the host kernel");
        let addr = 0x10_0000 + u64::from(id) * 0x1000;
        let mut buf = vec![0u8; len as usize];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        let eth = &buf[HDR_LEN..];
        if eth.len() >= 42 && eth[12..14] == [0x08, 0x06] && eth[20..22] == [0, 2] {
            break buf;
        }
    };
    assert_eq!(&reply[HDR_LEN..HDR_LEN + 6], &GUEST_MAC);
    assert_eq!(&reply[HDR_LEN + 28..HDR_LEN + 32], &HOST_IP);
    assert!(dev.reset());
    let s = dev.counters().snapshot();
    assert_eq!(s.tx_packets, 1);
    assert!(s.rx_packets >= 1);
    assert_eq!(s.tx_malformed + s.tx_dropped, 0);
}
