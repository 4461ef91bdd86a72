//! The runtime under test's stand-in: runs real local processes and connects to real
//! local TCP ports, so the protocol tests exercise real pipes and sockets.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::process::Command;
use vessel_streaming::{
    AttachRequest, ExecRequest, ProcessIo, RuntimeError, StreamingRuntime, TerminalSize,
};

#[derive(Default)]
pub struct LocalRuntime {
    /// Every resize seen, in order.
    pub resizes: Arc<Mutex<Vec<TerminalSize>>>,
    /// How every exec and attach ended.
    pub finished: Arc<Mutex<Vec<Result<i32, RuntimeError>>>>,
}

impl LocalRuntime {
    /// Waits until `n` execs or attaches have ended.
    pub async fn wait_finished(
        &self,
        n: usize,
        within: std::time::Duration,
    ) -> Vec<Result<i32, RuntimeError>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let done = self.finished.lock().unwrap().clone();
            if done.len() >= n {
                return done;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} processes ended",
                done.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

async fn run(
    cmd: &[String],
    io: ProcessIo,
    tty: bool,
    resizes: Arc<Mutex<Vec<TerminalSize>>>,
) -> Result<i32, RuntimeError> {
    let ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        ..
    } = io;
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if stderr.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RuntimeError::new(format!("spawn {}: {e}", cmd[0])))?;
    let input = match (stdin, child.stdin.take()) {
        (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
        })),
        _ => None,
    };
    let mut out_tasks = Vec::new();
    // Without a real terminal the stand-in records each resize: enough to prove the size
    // crossed the protocol.
    let resize_task = resize.filter(|_| tty).map(|mut rx| {
        let resizes = resizes.clone();
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                resizes.lock().unwrap().push(size);
            }
        })
    });
    if let (Some(mut to), Some(mut from)) = (stdout, child.stdout.take()) {
        out_tasks.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }));
    }
    if let (Some(mut to), Some(mut from)) = (stderr, child.stderr.take()) {
        out_tasks.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
        }));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| RuntimeError::new(e.to_string()))?;
    for task in out_tasks {
        let _ = task.await;
    }
    if let Some(task) = input {
        task.abort();
    }
    if let Some(task) = resize_task {
        task.abort();
    }
    Ok(status.code().unwrap_or(128))
}

#[async_trait]
impl StreamingRuntime for LocalRuntime {
    async fn exec(&self, req: ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
        if req.container_id == "missing" {
            return Err(RuntimeError::new("container \"missing\" not found"));
        }
        let result = run(&req.cmd, io, req.tty, self.resizes.clone()).await;
        self.finished.lock().unwrap().push(result.clone());
        result
    }

    async fn attach(&self, req: AttachRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
        // A container whose main process echoes its stdin.
        let result = run(&["cat".to_owned()], io, req.tty, self.resizes.clone()).await;
        self.finished.lock().unwrap().push(result.clone());
        result
    }

    async fn port_forward(
        &self,
        _pod: &str,
        port: u16,
        mut stream: DuplexStream,
    ) -> Result<(), RuntimeError> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| RuntimeError::new(format!("connect to port {port}: {e}")))?;
        tokio::io::copy_bidirectional(&mut tcp, &mut stream)
            .await
            .map_err(|e| RuntimeError::new(e.to_string()))?;
        Ok(())
    }
}
