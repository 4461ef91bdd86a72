//! virtio-fs against a real virtiofsd on this host: the vhost-user
//! handshake, memory table and vrings, then a FUSE_INIT request through a
//! test-driven queue (no guest), a guest reset, and a dying backend.
//!
//! virtiofsd comes from `tests/tools/virtiofsd.sh` (found through
//! `VESSEL_VIRTIOFSD` or its cache); without it these tests skip, with
//! the reason printed (and fail under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::virtio::test_driver::{activation, TestInterrupt, TestQueue, F_WRITE};
use crate::memory::create_guest_memory;

const QUEUE_SIZE: u16 = 128;
const HIPRIO_BASE: u64 = 0x1_0000;
const REQUEST_BASE: u64 = 0x2_0000;
const IN_BUF: u64 = 0x10_0000;
const OUT_BUF: u64 = 0x11_0000;
/// Generous bound for a reply from a live virtiofsd (it takes milliseconds).
const WAIT: Duration = Duration::from_secs(10);

const FUSE_INIT: u32 = 26;
const FUSE_IN_HEADER_LEN: u32 = 40;
const FUSE_INIT_IN_LEN: u32 = 64;
const FUSE_OUT_HEADER_LEN: u32 = 16;

/// The virtiofsd binary, or why there is none.
fn virtiofsd() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("VESSEL_VIRTIOFSD") {
        return Ok(PathBuf::from(p));
    }
    let cache = match std::env::var_os("VESSEL_CACHE_DIR") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").ok_or("no HOME")?).join(".cache/vessel"),
    };
    let tools = cache.join("tools");
    std::fs::read_dir(&tools)
        .map_err(|e| format!("{}: {e}", tools.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtiofsd-"))
        .map(|e| e.path().join("bin/virtiofsd"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no virtiofsd under {}", tools.display()))
}

/// Returns the binary, or prints why the test skips (panics under CI).
fn virtiofsd_or_skip(test: &str) -> Option<PathBuf> {
    match virtiofsd() {
        Ok(p) => Some(p),
        Err(why) => {
            let msg = format!("{why}; run tests/tools/virtiofsd.sh");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("skipping {test}: {msg}");
            None
        }
    }
}

/// A running virtiofsd on a fresh shared directory.
struct Daemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start(bin: &Path, name: &str, sandbox: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vessel-fs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        std::fs::write(dir.join("shared/hello"), b"hi").unwrap();
        let socket = dir.join("v.sock");
        let child = Command::new(bin)
            .arg("--socket-path")
            .arg(&socket)
            .arg("--shared-dir")
            .arg(dir.join("shared"))
            .args(["--sandbox", sandbox, "--log-level", "warn"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, dir, socket };
        let deadline = Instant::now() + WAIT;
        while !d.socket.exists() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("virtiofsd --sandbox {sandbox} exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "virtiofsd made no socket");
            std::thread::sleep(Duration::from_millis(5));
        }
        d
    }

    fn spec(&self) -> FsSpec {
        FsSpec {
            tag: "shared".into(),
            socket: self.socket.clone(),
            queue_size: QUEUE_SIZE,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The driver side: guest memory (a memfd, as in a VM), two queues, their
/// kick eventfds and an interrupt line.
struct Guest {
    mem: GuestMemory,
    hiprio: TestQueue,
    request: TestQueue,
    kicks: Vec<EventFd>,
    irq: Arc<TestInterrupt>,
}

impl Guest {
    fn new() -> Guest {
        let mem = create_guest_memory(64 << 20, false).unwrap();
        Guest {
            hiprio: TestQueue::new(&mem, HIPRIO_BASE, QUEUE_SIZE),
            request: TestQueue::new(&mem, REQUEST_BASE, QUEUE_SIZE),
            kicks: (0..NUM_QUEUES)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            irq: Arc::new(TestInterrupt::default()),
            mem,
        }
    }

    fn activate(&self, dev: &mut Fs) -> Result<(), ActivateError> {
        dev.ack_features(dev.features() & (1 << VIRTIO_F_VERSION_1));
        dev.activate(activation(
            &self.mem,
            &self.irq,
            &[&self.hiprio, &self.request],
            &self.kicks,
        ))
    }

    /// Sends FUSE_INIT with `unique` on the request queue; returns the
    /// reply's (used length, error, unique, major).
    fn fuse_init(&mut self, unique: u64) -> (u32, i32, u64, u32) {
        let mut req = Vec::new();
        req.extend((FUSE_IN_HEADER_LEN + FUSE_INIT_IN_LEN).to_le_bytes());
        req.extend(FUSE_INIT.to_le_bytes());
        req.extend(unique.to_le_bytes());
        req.extend(0u64.to_le_bytes()); // nodeid
        req.extend([0u8; 16]); // uid, gid, pid, total_extlen, padding
        req.extend(7u32.to_le_bytes()); // major
        req.extend(31u32.to_le_bytes()); // minor
        req.extend([0u8; 56]); // max_readahead, flags, flags2, unused
        self.mem.write_slice(&req, GuestAddress(IN_BUF)).unwrap();
        self.mem
            .write_slice(&[0u8; 256], GuestAddress(OUT_BUF))
            .unwrap();
        let head = self
            .request
            .add_chain(&[(IN_BUF, req.len() as u32, 0), (OUT_BUF, 256, F_WRITE)]);
        self.request.publish(head);
        self.kicks[1].write(1).unwrap();
        let (id, len) = self
            .request
            .wait_used(WAIT)
            .expect("virtiofsd did not answer FUSE_INIT");
        assert_eq!(id, u32::from(head));
        let error: i32 = self.mem.read_obj(GuestAddress(OUT_BUF + 4)).unwrap();
        let unique: u64 = self.mem.read_obj(GuestAddress(OUT_BUF + 8)).unwrap();
        let major: u32 = self
            .mem
            .read_obj(GuestAddress(OUT_BUF + u64::from(FUSE_OUT_HEADER_LEN)))
            .unwrap();
        (len, error, unique, major)
    }

    fn interrupts(&self) -> usize {
        self.irq.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn handshake_and_fuse_init(sandbox: &str) {
    let test = format!("virtiofsd_handshake_{sandbox}");
    let Some(bin) = virtiofsd_or_skip(&test) else {
        return;
    };
    let daemon = Daemon::start(&bin, sandbox, sandbox);
    let mut dev = Fs::new(&daemon.spec()).unwrap();
    assert_eq!(dev.device_type(), 26);
    assert_ne!(dev.features() & (1 << VIRTIO_F_VERSION_1), 0);
    let mut tag = [0u8; 6];
    dev.read_config(0, &mut tag);
    assert_eq!(&tag, b"shared");

    let mut guest = Guest::new();
    guest.activate(&mut dev).unwrap();
    let (len, error, unique, major) = guest.fuse_init(1);
    assert_eq!((error, unique, major), (0, 1, 7), "FUSE_INIT reply");
    assert!(len >= FUSE_OUT_HEADER_LEN);
    // The relay turned the backend's call into our interrupt.
    let deadline = Instant::now() + WAIT;
    while guest.interrupts() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(guest.interrupts() > 0, "no interrupt relayed");

    // Guest reset: the vrings stop (GET_VRING_BASE); a new driver can start over.
    assert!(dev.reset());
    let mut guest = Guest::new();
    guest.activate(&mut dev).unwrap();
    let (_, _, unique, _) = guest.fuse_init(2);
    assert_eq!(unique, 2, "reply after re-activation");
    assert!(!guest.irq.needs_reset());
    assert!(dev.reset());
}

#[test]
fn virtiofsd_handshake_sandbox_none() {
    handshake_and_fuse_init("none");
}

#[test]
fn virtiofsd_handshake_sandbox_namespace() {
    handshake_and_fuse_init("namespace");
}

#[test]
fn dying_backend_sets_needs_reset_and_fails_reactivation() {
    let Some(bin) = virtiofsd_or_skip("dying_backend_sets_needs_reset") else {
        return;
    };
    let mut daemon = Daemon::start(&bin, "dying", "none");
    let lost = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&lost);
    let mut dev = Fs::new(&daemon.spec())
        .unwrap()
        .on_backend_lost(Arc::new(move |tag: &str| {
            seen.lock().unwrap().push(tag.to_owned())
        }));
    let guest = Guest::new();
    guest.activate(&mut dev).unwrap();
    assert!(lost.lock().unwrap().is_empty());
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let deadline = Instant::now() + WAIT;
    while !guest.irq.needs_reset() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(guest.irq.needs_reset(), "backend death not noticed");
    // Told once, with the tag (the VMM stops the VM there).
    while lost.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*lost.lock().unwrap(), ["shared"]);
    // The guest resets; the device stays usable as a device (no panic, no
    // hang) but its next activation fails, which sets needs-reset again.
    assert!(dev.reset());
    let guest = Guest::new();
    let err = guest.activate(&mut dev).unwrap_err();
    assert!(err.to_string().contains("backend is gone"), "{err}");
}

#[test]
fn missing_backend_fails_at_connect() {
    let dir = std::env::temp_dir().join(format!("vessel-fs-{}-nobackend", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("stale.sock");
    let _ = std::fs::remove_file(&socket);
    // A socket file nobody listens on any more, as a dead virtiofsd leaves.
    crate::test_sockets::stale_socket(&socket);
    let spec = FsSpec {
        tag: "x".into(),
        socket: socket.clone(),
        queue_size: QUEUE_SIZE,
    };
    let err = Fs::new(&spec).err().expect("connect to a dead socket");
    assert!(matches!(err, BackendError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("is virtiofsd running?"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
