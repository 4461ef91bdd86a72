//! Shared test helpers: an in-process agent and a fake VMM hybrid vsock socket.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vessel_agent::client::wait_ready_unix;
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
