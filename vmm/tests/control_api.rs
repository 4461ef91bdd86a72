//! The control API and the stop signals of the `vessel-vmm` binary, with a
//! tiny hand-made guest that loops writing to an unused I/O port (so every
//! turn is a VM exit to count). Needs /dev/kvm, not a Linux guest; skipped
//! without /dev/kvm. The guest has no keyboard driver, so a stop signal
//! stops it hard at once; a second guest turns the i8042's keyboard
//! interrupt on (as a driver would) but never reads the keys, so a stop
//! signal waits out the grace.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{kvm_available, Scratch};

/// `mov al, 0x41; 1: out 0x80, al; jmp 1b` (same bytes in 32- and 64-bit mode).
const IO_LOOP: [u8; 6] = [0xb0, 0x41, 0xe6, 0x80, 0xeb, 0xfc];
/// Writes the i8042 config byte with the keyboard interrupt on
/// (`mov al, 0x60; out 0x64, al; mov al, 0x05; out 0x60, al`), then IO_LOOP.
const KBD_THEN_IO_LOOP: [u8; 14] = [
    0xb0, 0x60, 0xe6, 0x64, 0xb0, 0x05, 0xe6, 0x60, 0xb0, 0x41, 0xe6, 0x80, 0xeb, 0xfc,
];

struct Vmm {
    child: Child,
    api: PathBuf,
}

impl Vmm {
    fn start(dir: &Scratch, name: &str, cpus: &str) -> Vmm {
        Vmm::start_with(dir, name, &IO_LOOP, &["--cpus", cpus])
    }

    fn start_with(dir: &Scratch, name: &str, code: &[u8], args: &[&str]) -> Vmm {
        let kernel = dir.guest(&format!("{name}.elf"), code, true);
        let api = dir.path(&format!("{name}.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
            .arg("--kernel")
            .arg(&kernel)
            .args(["--memory", "64", "--console", "none"])
            .args(args)
            .arg("--api")
            .arg(&api)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Vmm { child, api }
    }

    fn connect(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = UnixStream::connect(&self.api) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return Client {
                    reader: BufReader::new(s.try_clone().unwrap()),
                    stream: s,
                };
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("vessel-vmm exited early: {status}");
            }
            assert!(Instant::now() < deadline, "API socket never came up");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait(&mut self) -> (i32, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().expect("exited, not killed"), start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("vessel-vmm did not exit within 20 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn send_raw(&mut self, bytes: &[u8]) -> Value {
        self.stream.write_all(bytes).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad response {line:?}: {e}"))
    }

    fn ask(&mut self, op: &str) -> Value {
        self.send_raw(format!("{{\"op\":\"{op}\"}}\n").as_bytes())
    }

    fn exits(&mut self) -> u64 {
        self.ask("counters")["exits"]["io_out"].as_u64().unwrap()
    }
}

fn gone(path: &Path) -> bool {
    !path.exists()
}

#[test]
fn pause_resume_counters_then_sigterm_exits_4() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("api-term");
    let mut vmm = Vmm::start(&dir, "term", "2");
    let mut c = vmm.connect();
    let mode = std::fs::metadata(&vmm.api).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let info = c.ask("info");
    assert_eq!(info["config"]["cpus"], 2, "{info}");
    assert_eq!(info["config"]["memory_mib"], 64);
    assert!(info["config"]["kernel"]
        .as_str()
        .unwrap()
        .ends_with("term.elf"));
    assert_eq!(info["devices"][0]["type"], "serial");
    assert_eq!(info["state"], "running");

    // The guest runs: its exits are counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.exits() == 0 {
        assert!(Instant::now() < deadline, "no exits counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(c.ask("info")["boot_time_ms"].as_f64().unwrap() > 0.0);

    assert_eq!(c.ask("pause")["state"], "paused");
    assert_eq!(c.ask("pause")["state"], "paused", "pause is idempotent");
    assert_eq!(c.ask("info")["state"], "paused");
    let before = c.exits();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.exits(), before, "a paused guest makes no exits");

    // Bad requests on a second connection: answered, connection kept.
    let mut c2 = vmm.connect();
    assert!(c2.send_raw(b"garbage\n")["error"].is_string());
    assert!(c2.ask("explode")["error"]
        .as_str()
        .unwrap()
        .contains("unknown op"));
    let mut long = vec![b'x'; 70_000];
    long.push(b'\n');
    assert!(c2.send_raw(&long)["error"]
        .as_str()
        .unwrap()
        .contains("longer than"));
    assert_eq!(c2.ask("resume")["state"], "running");
    assert_eq!(c2.ask("resume")["state"], "running", "resume is idempotent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.exits() == before {
        assert!(Instant::now() < deadline, "resumed guest makes no exits");
        std::thread::sleep(Duration::from_millis(10));
    }

    vmm.signal(libc::SIGTERM);
    let (code, took) = vmm.wait();
    assert_eq!(code, 4, "SIGTERM exit code");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(gone(&vmm.api), "API socket left behind");
}

#[test]
fn sigint_while_paused_exits_4() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("api-int");
    let mut vmm = Vmm::start(&dir, "int", "1");
    let mut c = vmm.connect();
    assert_eq!(c.ask("pause")["state"], "paused");
    vmm.signal(libc::SIGINT);
    let (code, took) = vmm.wait();
    assert_eq!(code, 4);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(gone(&vmm.api));
}

/// Starts the keyboard guest with a `grace_ms` shutdown grace and waits
/// until its config byte write is done.
fn keyboard_guest(dir: &Scratch, name: &str, grace_ms: &str) -> (Vmm, Client) {
    let mut vmm = Vmm::start_with(
        dir,
        name,
        &KBD_THEN_IO_LOOP,
        &["--shutdown-grace-ms", grace_ms],
    );
    let mut c = vmm.connect();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Two config byte writes, then the loop's.
    while c.exits() < 3 {
        assert!(Instant::now() < deadline, "guest never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    (vmm, c)
}

#[test]
fn shutdown_op_needs_a_listening_keyboard() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("api-shutdown");
    // No driver: refused, the VM keeps running.
    let mut vmm = Vmm::start(&dir, "deaf", "1");
    let mut c = vmm.connect();
    let err = c.ask("shutdown");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("keyboard driver is not listening"),
        "{err}"
    );
    assert_eq!(c.ask("info")["state"], "running");
    assert_eq!(c.ask("stop")["state"], "stopping");
    assert_eq!(vmm.wait().0, 3);

    // A driver that never reads: accepted, reported, and the VM runs on.
    let (mut vmm, mut c) = keyboard_guest(&dir, "kbd", "60000");
    assert_eq!(c.ask("shutdown")["state"], "shutting_down");
    assert_eq!(c.ask("info")["state"], "shutting_down");
    // Four requests fill the controller's buffer; the fifth is refused.
    for _ in 0..3 {
        assert_eq!(c.ask("shutdown")["state"], "shutting_down");
    }
    let err = c.ask("shutdown");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("buffer is full"),
        "{err}"
    );
    assert_eq!(c.ask("stop")["state"], "stopping");
    assert_eq!(vmm.wait().0, 3);
}

#[test]
fn sigterm_waits_the_grace_then_stops_hard() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("api-grace");
    let (mut vmm, _c) = keyboard_guest(&dir, "grace", "300");
    vmm.signal(libc::SIGTERM);
    let (code, took) = vmm.wait();
    assert_eq!(code, 4);
    // Only a lower bound: the grace is a minimum, never a timing target.
    assert!(took >= Duration::from_millis(250), "took {took:?}");
    assert!(gone(&vmm.api));

    // A second signal during the grace stops it at once.
    let (mut vmm, mut c) = keyboard_guest(&dir, "twice", "600000");
    vmm.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.ask("info")["state"] != "shutting_down" {
        assert!(Instant::now() < deadline, "SIGTERM never asked the guest");
        std::thread::sleep(Duration::from_millis(10));
    }
    vmm.signal(libc::SIGINT);
    let (code, _) = vmm.wait();
    assert_eq!(code, 4);
    assert!(gone(&vmm.api));
}

#[test]
fn stop_op_exits_3_and_a_busy_socket_is_refused() {
    if !kvm_available() {
        return;
    }
    let dir = Scratch::new("api-stop");
    let mut vmm = Vmm::start(&dir, "stop", "1");
    let mut c = vmm.connect();

    // A second VMM on the same path fails, naming the flag, and leaves the
    // first one's socket alone.
    let kernel = dir.guest("second.elf", &IO_LOOP, true);
    let out = Command::new(env!("CARGO_BIN_EXE_vessel-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .args(["--memory", "64", "--console", "none", "--api"])
        .arg(&vmm.api)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--api") && stderr.contains("in use"),
        "{stderr}"
    );
    assert_eq!(c.ask("info")["state"], "running");

    assert_eq!(c.ask("stop")["state"], "stopping");
    let (code, _) = vmm.wait();
    assert_eq!(code, 3);
    assert!(gone(&vmm.api));
}
