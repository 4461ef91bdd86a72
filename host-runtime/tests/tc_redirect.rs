//! The tap ⇄ CNI veth join (net::tc) on the real kernel, without a VM: in a
//! pod netns, a veth whose peer sits in a second netns, and a tap; the test
//! plays the guest on the tap's file descriptor (answers ARP and ICMP echo).
//! A ping from the peer netns only succeeds if frames go veth → tap and tap
//! → veth. Removing the join leaves no qdisc. Needs root and /dev/net/tun;
//! skips without them (fails in CI). A guard deletes both namespaces (with
//! the links in them) even if an assertion fails.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vessel_host_runtime::net::{netns, tap, tc, NetError, Netns};

const POD_IP: [u8; 4] = [10, 77, 0, 2];
const GUEST_MAC: [u8; 6] = [0x02, 0x76, 0x73, 0x00, 0x00, 0x02];

nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("run a tool");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Undoes everything, whatever happened: the ping, the tap's fd, the tap,
/// the namespaces (their veths go with them).
struct Cleanup {
    ping: Option<Child>,
    tap_fd: Option<File>,
    pod: Option<Netns>,
    peer: Option<Netns>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.ping.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.tap_fd = None;
        if let Some(pod) = self.pod.take() {
            let _ = tap::delete(pod.path(), "tap0");
            let _ = pod.delete();
        }
        if let Some(peer) = self.peer.take() {
            let _ = peer.delete();
        }
    }
}

/// Attaches to the persistent tap `name` (it must be opened inside its netns).
fn open_tap(name: &str) -> Result<File, NetError> {
    let io = |e: std::io::Error| NetError::Sys {
        what: "opening the tap".into(),
        source: e,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(io)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // Plain frames: no packet info, no virtio-net header.
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq that lives across the call.
    unsafe { tun_set_iff(file.as_raw_fd(), &ifr) }.map_err(|e| io(e.into()))?;
    // SAFETY: fcntl on an fd we own.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    Ok(file)
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The guest's answer to `frame`, if it is an ARP request or an ICMP echo
/// request for [`POD_IP`]; and which of the two it was.
fn answer(frame: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    if frame.len() < 42 {
        return None;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let mut reply = frame.to_vec();
    reply[0..6].copy_from_slice(&frame[6..12]);
    reply[6..12].copy_from_slice(&GUEST_MAC);
    match ethertype {
        0x0806 if frame[21] == 1 && frame[38..42] == POD_IP => {
            reply[21] = 2;
            reply[22..28].copy_from_slice(&GUEST_MAC);
            reply[28..32].copy_from_slice(&POD_IP);
            reply[32..38].copy_from_slice(&frame[22..28]);
            reply[38..42].copy_from_slice(&frame[28..32]);
            Some((reply, "arp"))
        }
        0x0800 => {
            let ihl = usize::from(frame[14] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
            let icmp = 14 + ihl;
            if frame[23] != 1 || frame[30..34] != POD_IP || frame.len() < 14 + total {
                return None;
            }
            if frame[icmp] != 8 {
                return None;
            }
            reply[26..30].copy_from_slice(&frame[30..34]);
            reply[30..34].copy_from_slice(&frame[26..30]);
            reply[icmp] = 0;
            reply[icmp + 2] = 0;
            reply[icmp + 3] = 0;
            let sum = checksum(&reply[icmp..14 + total]);
            reply[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
            Some((reply, "icmp"))
        }
        _ => None,
    }
}

#[test]
fn a_tap_and_a_veth_joined_both_ways_carry_a_ping() {
    if !common::root_and_tun("tc_redirect") {
        return;
    }
    let pid = std::process::id();
    let pod_name = format!("vessel-tctest-{pid}-pod");
    let peer_name = format!("vessel-tctest-{pid}-peer");
    let mut cleanup = Cleanup {
        ping: None,
        tap_fd: None,
        pod: Some(Netns::create(&pod_name).expect("pod netns")),
        peer: Some(Netns::create(&peer_name).expect("peer netns")),
    };
    let pod_path = cleanup.pod.as_ref().unwrap().path().to_path_buf();

    // What CNI would have made: a veth in the pod, its peer outside.
    run(
        "ip",
        &[
            "-n", &pod_name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
            "netns", &peer_name,
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &peer_name,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            "peer0",
        ],
    );
    run("ip", &["-n", &peer_name, "link", "set", "peer0", "up"]);
    run("ip", &["-n", &pod_name, "link", "set", "eth0", "up"]);
    tap::create_unaddressed(&pod_path, "tap0").expect("tap");

    tc::redirect_both_ways(&pod_path, "eth0", "tap0").expect("redirects");
    for (from, to) in [("eth0", "tap0"), ("tap0", "eth0")] {
        let qdiscs = run("tc", &["-n", &pod_name, "qdisc", "show", "dev", from]);
        assert!(qdiscs.contains("qdisc ingress ffff:"), "{qdiscs}");
        let filters = run(
            "tc",
            &["-n", &pod_name, "filter", "show", "dev", from, "ingress"],
        );
        assert!(
            filters.contains("protocol all")
                && filters.contains("mirred")
                && filters.contains(&format!("Redirect to device {to}")),
            "{filters}"
        );
    }
    // Joining twice is an error (the qdisc exists) and undoes nothing of the first.
    assert!(tc::redirect_both_ways(&pod_path, "eth0", "tap0").is_err());
    assert!(run("tc", &["-n", &pod_name, "qdisc", "show", "dev", "tap0"]).contains("ingress"));
    // A missing link is named.
    assert!(matches!(
        tc::redirect_both_ways(&pod_path, "eth0", "nope0"),
        Err(NetError::NoLink { name, .. }) if name == "nope0"
    ));

    // The test plays the guest on the tap.
    let tap_fd = netns::run_in(&pod_path, || open_tap("tap0")).expect("tap fd");
    cleanup.tap_fd = Some(tap_fd);
    cleanup.ping = Some(
        Command::new("ip")
            .args([
                "netns", "exec", &peer_name, "busybox", "ping", "-c", "2", "-W", "3",
            ])
            .arg("10.77.0.2")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ping"),
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 65536];
    let status = loop {
        if let Some(status) = cleanup.ping.as_mut().unwrap().try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "ping did not finish");
        let fd = cleanup.tap_fd.as_mut().unwrap();
        match fd.read(&mut buf) {
            Ok(n) => {
                if let Some((reply, kind)) = answer(&buf[..n]) {
                    fd.write_all(&reply).expect("guest reply");
                    seen.push(kind);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("reading the tap: {e}"),
        }
    };
    let output = cleanup
        .ping
        .take()
        .unwrap()
        .wait_with_output()
        .expect("ping output");
    assert!(
        status.success(),
        "ping through the join failed (guest saw {seen:?}): {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(seen.contains(&"arp") && seen.contains(&"icmp"), "{seen:?}");

    tc::remove_redirects(&pod_path, "eth0", "tap0").expect("removed");
    for link in ["eth0", "tap0"] {
        let qdiscs = run("tc", &["-n", &pod_name, "qdisc", "show", "dev", link]);
        assert!(!qdiscs.contains("ingress"), "{qdiscs}");
    }
    // Removing twice, or with a link gone, is fine (rollback may retry).
    tc::remove_redirects(&pod_path, "eth0", "gone0").expect("removed again");

    drop(cleanup);
    assert!(!netns_exists(&pod_name) && !netns_exists(&peer_name));
}

fn netns_exists(name: &str) -> bool {
    vessel_host_runtime::net::netns_exists(name)
}
