//! A network namespace holding a tap device with an address: the host side of
//! a guest NIC, as vesseld will set it up for a pod (without CNI here).

use std::path::PathBuf;
use std::process::Command;

/// A named netns with `tap0` in it, deleted (with the tap) on drop.
#[derive(Debug)]
pub struct NetnsTap {
    /// Name of the namespace (`ip netns` name).
    pub name: String,
    /// Name of the tap device inside it.
    pub tap: String,
    /// The tap's address, the guest's peer.
    pub host_ip: String,
    /// The address the guest is given.
    pub guest_ip: String,
    /// Prefix length of both.
    pub prefix: u8,
    /// The MAC the guest NIC gets.
    pub guest_mac: String,
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NetnsTap {
    /// Creates namespace `name` with a tap at `10.77.<index>.1/24`; the guest
    /// gets `.2` and MAC `02:77:00:00:<index>:02`.
    pub fn create(name: &str, index: u8) -> Self {
        let name = format!("{name}-{}", std::process::id());
        // A leftover of an aborted run would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let this = Self {
            tap: "tap0".into(),
            host_ip: format!("10.77.{index}.1"),
            guest_ip: format!("10.77.{index}.2"),
            prefix: 24,
            guest_mac: format!("02:77:00:00:{index:02x}:02"),
            name,
        };
        let ns = this.name.as_str();
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "tuntap", "add", "dev", &this.tap, "mode", "tap"]);
        let cidr = format!("{}/{}", this.host_ip, this.prefix);
        ip(&["-n", ns, "addr", "add", &cidr, "dev", &this.tap]);
        ip(&["-n", ns, "link", "set", &this.tap, "up"]);
        this
    }

    /// Path of the namespace, for `--net ...,netns=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// The tap's RX/TX packet counters: (rx_packets, tx_packets).
    pub fn tap_packets(&self) -> (u64, u64) {
        let stat = |which: &str| {
            let path = format!("/sys/class/net/{}/statistics/{which}", self.tap);
            let out = ip(&["netns", "exec", &self.name, "cat", &path]);
            out.trim().parse::<u64>().unwrap_or(0)
        };
        (stat("rx_packets"), stat("tx_packets"))
    }
}

impl Drop for NetnsTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Whether a netns of this name exists (for leak checks).
pub fn netns_exists(name: &str) -> bool {
    PathBuf::from("/var/run/netns").join(name).exists()
}

/// Connects a TCP socket to `addr` from inside the network namespace at
/// `netns` (a socket keeps the namespace it was created in, so only the
/// connecting thread has to enter it).
pub fn connect_in_netns(
    netns: &std::path::Path,
    addr: std::net::SocketAddr,
) -> std::net::TcpStream {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let ns =
            std::fs::File::open(&netns).unwrap_or_else(|e| panic!("open {}: {e}", netns.display()));
        // SAFETY: setns on an fd we own; it changes only this short-lived thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns {}: {}",
            netns.display(),
            std::io::Error::last_os_error()
        );
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {addr} in {}: {e}", netns.display()))
    })
    .join()
    .expect("netns connect thread")
}
