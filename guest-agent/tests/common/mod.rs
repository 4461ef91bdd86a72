//! Shared test helpers: an in-process agent and a fake VMM hybrid vsock socket.
#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vessel_agent::client::{wait_ready_unix, Channel};
use vessel_agent::server::{serve, Listen, ServerError};
use vessel_agent::shutdown::ShutdownSignal;

/// An agent server running in this process on a Unix socket.
pub struct InProcessAgent {
    pub socket: PathBuf,
    pub shutdown: ShutdownSignal,
    pub task: JoinHandle<Result<(), ServerError>>,
}

/// Starts the agent server on `dir/agent.sock` and waits until it serves.
pub async fn start_agent(dir: &Path) -> InProcessAgent {
    let socket = dir.join("agent.sock");
    let shutdown = ShutdownSignal::new();
    let listen = Listen::Unix(socket.clone());
    let signal = shutdown.clone();
    let task = tokio::spawn(async move { serve(&listen, signal, false).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    if let Err(err) = wait_ready_unix(&socket, deadline).await {
        panic!("in-process agent not ready: {err:?}");
    }
    InProcessAgent {
        socket,
        shutdown,
        task,
    }
}

/// What the fake VMM does after reading a `CONNECT` line.
#[derive(Clone, Debug)]
pub enum Peer {
    /// Reply `OK 1073741824\n`, then pipe bytes to the agent socket at this path.
    Proxy(PathBuf),
    /// Write these bytes, then keep the connection open.
    Reply(Vec<u8>),
    /// Write nothing and keep the connection open.
    Silent,
    /// Close the connection.
    Close,
}

/// A test double of the VMM's hybrid vsock Unix socket.
pub struct FakeVmm {
    pub path: PathBuf,
    /// Every `CONNECT` line received, newline included.
    pub lines: Arc<Mutex<Vec<String>>>,
    kill: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl FakeVmm {
    /// Listens on `path`, answering every connection as `peer` says.
    pub fn start(path: PathBuf, peer: Peer) -> Self {
        let listener = match UnixListener::bind(&path) {
            Ok(listener) => listener,
            Err(err) => panic!("bind {}: {err}", path.display()),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (kill, _) = watch::channel(0u64);
        let task = {
            let lines = Arc::clone(&lines);
            let kill = kill.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn =
                        serve_conn(stream, peer.clone(), Arc::clone(&lines), kill.subscribe());
                    tokio::spawn(conn);
                }
            })
        };
        Self {
            path,
            lines,
            kill,
            task,
        }
    }

    /// Drops every proxied connection, as a VMM does when the guest side resets.
    pub fn kill_connections(&self) {
        self.kill.send_modify(|generation| *generation += 1);
    }

    /// The `CONNECT` lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn(
    mut stream: UnixStream,
    peer: Peer,
    lines: Arc<Mutex<Vec<String>>>,
    mut kill: watch::Receiver<u64>,
) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 64 {
        match stream.read(&mut byte).await {
            Ok(1) => line.push(byte[0]),
            _ => return,
        }
    }
    if let Ok(mut l) = lines.lock() {
        l.push(String::from_utf8_lossy(&line).into_owned());
    }
    match peer {
        Peer::Proxy(agent) => {
            let Ok(mut upstream) = UnixStream::connect(&agent).await else {
                return;
            };
            if stream.write_all(b"OK 1073741824\n").await.is_err() {
                return;
            }
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream) => {}
                _ = kill.changed() => {}
            }
        }
        Peer::Reply(bytes) => {
            let _ = stream.write_all(&bytes).await;
            hold_open(stream).await;
        }
        Peer::Silent => hold_open(stream).await,
        Peer::Close => {}
    }
}

/// Keeps the connection until the client goes away.
async fn hold_open(mut stream: UnixStream) {
    let mut sink = [0u8; 256];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// The agent binary under test.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_vessel-agent");

/// Busybox from Debian's `busybox-static`, for container rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether this machine can run the agent in namespaces as root; prints why not.
/// In CI (`CI` set) a missing prerequisite is a failure, never a skip.
pub fn namespaced_supported() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["/usr/bin/unshare", "/usr/bin/nsenter", BUSYBOX]
        .iter()
        .all(|t| Path::new(t).exists())
        && ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .iter()
            .any(|t| Path::new(t).exists());
    if !root || !tools {
        let why =
            format!("needs root, unshare, nsenter, ip (iproute2) and {BUSYBOX} (busybox-static)");
        assert!(
            std::env::var_os("CI").is_none(),
            "namespaced agent tests cannot run in CI: {why}"
        );
        eprintln!("skipped: {why}");
    }
    root && tools
}

/// The agent binary on a Unix socket, as root in its own mount, pid, network, UTS
/// and IPC namespaces (`unshare`), with tmpfs over `/run` and `/etc` so what it
/// writes there stays in its mount namespace.
pub struct NamespacedAgent {
    /// The `unshare` process: in the agent's namespaces except pid, so
    /// `/proc/<it>/ns/*` and `/proc/<it>/root` show the agent's view.
    pub child: std::process::Child,
    /// Socket, log and anything a test puts there.
    pub dir: tempfile::TempDir,
    /// A channel to the agent.
    pub channel: vessel_agent::client::Channel,
}

impl NamespacedAgent {
    /// Starts the agent and waits until it serves.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, channel) = spawn_agent(
            dir.path(),
            &["--mount", "--pid", "--net", "--uts", "--ipc"],
            "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /etc && ",
            &[],
            Duration::from_secs(20),
        )
        .await;
        Self {
            child,
            dir,
            channel,
        }
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// `path` as the agent sees it (through `/proc/<pid>/root`).
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.child.id()))
    }

    /// Runs `command` in the agent's network namespace; returns stdout, panicking on failure.
    pub fn in_netns(&self, command: &[&str]) -> String {
        let target = self.child.id().to_string();
        let output = std::process::Command::new("nsenter")
            .args(["--target", &target, "--net", "--"])
            .args(command)
            .output()
            .expect("run nsenter");
        assert!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ip -j ARGS` in the agent's network namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut command = vec!["ip", "-j"];
        command.extend_from_slice(args);
        let out = self.in_netns(&command);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }
}

impl Drop for NamespacedAgent {
    fn drop(&mut self) {
        // SIGKILL to unshare: --kill-child takes the namespace's init, and with it everything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A busybox root filesystem at `root` with `applets` linked in /bin.
pub fn build_busybox_rootfs(root: &Path, applets: &[&str]) {
    use std::fs;
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
}

/// Starts the agent binary as root under `unshare` in `namespaces` (flags
/// such as `--mount`; a new pid namespace too) on `dir/agent.sock`, logging
/// to `dir/agent.log`, and waits up to `patience` until it serves. `prelude`
/// is shell run first in the namespaces (empty, or ending in `&& `);
/// `agent_args` follow `--unix <socket>`.
pub async fn spawn_agent(
    dir: &Path,
    namespaces: &[&str],
    prelude: &str,
    agent_args: &[&OsStr],
    patience: Duration,
) -> (Child, Channel) {
    let socket = dir.join("agent.sock");
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    // `sh` stays PID 1 of the namespace so the agent runs as an ordinary process
    // (not the PID 1 path); --kill-child takes the whole namespace down with the test.
    let script = format!("{prelude}\"$0\" --unix \"$@\" & wait $!");
    let child = Command::new("unshare")
        .args(namespaces)
        .args(["--fork", "--kill-child", "--mount-proc"])
        .args(["--", "/bin/sh", "-c", &script])
        .arg(AGENT_BIN)
        .arg(&socket)
        .args(agent_args)
        .env("VESSEL_AGENT_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn unshare");
    let deadline = Instant::now() + patience;
    match wait_ready_unix(&socket, deadline).await {
        Ok(channel) => (child, channel),
        Err(err) => panic!(
            "agent not ready: {err:?}\n{}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        ),
    }
}

/// The smallest container spec the tests build on: `args` as root in `/`
/// with `PATH=/bin`, the rootfs at `rootfs`, /proc mounted, and its own
/// pid, ipc, uts and mount namespaces.
pub fn minimal_spec(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/"
        },
        "root": { "path": "rootfs" },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" }
        ],
        "linux": {
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }]
        }
    })
}

/// Appends `mount` to the spec's mounts.
pub fn add_mount(spec: &mut Value, mount: Value) {
    spec["mounts"].as_array_mut().expect("mounts").push(mount);
}

/// Appends a namespace of `kind` (e.g. `network`) to the spec's namespaces.
pub fn add_namespace(spec: &mut Value, kind: &str) {
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({ "type": kind }));
}
