//! Attach: a session joins a running container's stdio. Output comes from the
//! fan-out of the container's log copiers (the log keeps receiving
//! everything; a session that does not keep up is dropped), stdin goes to the
//! container's stdin through the agent, resizes to its terminal. Detaching
//! leaves the container and the other sessions running.

use std::time::Duration;

use bytes::Bytes;
use k8s_cri::v1::ContainerConfig;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use vessel_streaming::{AttachRequest, ProcessIo, RuntimeError};

use super::pipe::{forward_resizes, AtEof, Target};
use super::stdin_mux::StdinMuxes;
use super::{client_gone, runtime_error};
use crate::daemon::runtime::Runtime;
use crate::store::ContainerState;

/// How often an attach whose output is done (or not asked for) looks for
/// the container's exit.
const EXIT_POLL: Duration = Duration::from_millis(200);

/// How long after its output ended a container's exit may take to be
/// recorded.
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(10);

/// Attaches `io` to the container (see the module doc) until it exits (its
/// exit code) or the client goes away.
pub async fn attach(
    rt: &Runtime,
    stdins: &StdinMuxes,
    req: AttachRequest,
    io: ProcessIo,
) -> Result<i32, RuntimeError> {
    let c = rt
        .store
        .find_container(&req.container_id)
        .map_err(|e| runtime_error(e.into()))?;
    if c.state != ContainerState::Running {
        return Err(RuntimeError::new(format!(
            "container {} is not running",
            c.id
        )));
    }
    let config = ContainerConfig::decode(c.config.as_slice())
        .map_err(|e| RuntimeError::new(format!("container {} config: {e}", c.id)))?;
    let fanout = rt.output_fanout(&c.id).ok_or_else(|| {
        RuntimeError::new(format!("container {} has no output to attach to", c.id))
    })?;
    let pod = rt.ready_pod(&c.sandbox_id).await.map_err(runtime_error)?;
    let target = Target {
        channel: pod.channel.clone(),
        container_id: c.id.clone(),
        exec_id: String::new(),
    };
    let ProcessIo {
        stdin,
        stdout,
        stderr,
        resize,
        disconnected,
    } = io;
    // With a terminal there is no stderr: the container's stderr is its stdout.
    let stderr = stderr.filter(|_| !config.tty);
    let mut subscription = fanout.subscribe(stdout.is_some(), stderr.is_some());
    tracing::info!(pod = %pod.id, container = %c.id, session = subscription.id, stdin = stdin.is_some(), tty = config.tty, "attach session started");

    let mut outputs = Vec::new();
    if let (Some(rx), Some(to)) = (subscription.stdout.take(), stdout) {
        outputs.push(tokio::spawn(relay(rx, to)));
    }
    if let (Some(rx), Some(to)) = (subscription.stderr.take(), stderr) {
        outputs.push(tokio::spawn(relay(rx, to)));
    }
    let mut helpers = Vec::new();
    if let Some(from) = stdin {
        helpers.push(if config.stdin {
            let at_eof = if config.stdin_once {
                AtEof::Close
            } else {
                AtEof::KeepOpen
            };
            let mux = stdins.get(&target);
            tokio::spawn(async move { mux.feed(from, at_eof).await })
        } else {
            // The container has no stdin: the client's is read and dropped.
            tokio::spawn(discard(from))
        });
    }
    if let Some(sizes) = resize.filter(|_| config.tty) {
        helpers.push(tokio::spawn(forward_resizes(target.clone(), sizes)));
    }

    let has_output = !outputs.is_empty();
    let output_aborts: Vec<_> = outputs.iter().map(|t| t.abort_handle()).collect();
    let outputs_done = async {
        for task in outputs {
            let _ = task.await;
        }
    };
    let ended = tokio::select! {
        _ = outputs_done, if has_output => Ended::Output,
        // Its queue was full: the session ends now, not when its client leaves.
        _ = subscription.dropped() => Ended::Dropped,
        _ = wait_exit(rt, &c.id, None) => Ended::Exited,
        _ = client_gone(disconnected) => Ended::Detached,
    };
    fanout.unsubscribe(subscription.id);
    for task in output_aborts {
        task.abort();
    }
    for task in helpers {
        task.abort();
    }
    let result = match ended {
        Ended::Detached => Ok(0),
        // Ended::Dropped, or dropped as the output ended.
        _ if subscription.was_dropped() => Err(RuntimeError::new(
            "attach session dropped: the client does not keep up with the output",
        )),
        // The output ends when the container exits: its code follows.
        _ => wait_exit(rt, &c.id, Some(EXIT_RECORD_WAIT))
            .await
            .ok_or_else(|| {
                RuntimeError::new(format!("container {} output ended but it runs", c.id))
            }),
    };
    tracing::info!(pod = %pod.id, container = %c.id, session = subscription.id, ?ended, "attach session ended");
    result
}

#[derive(Debug)]
enum Ended {
    Output,
    Dropped,
    Exited,
    Detached,
}

/// Copies a session's queue to its pipe until the queue ends or the pipe
/// breaks (the client went away or was dropped for not reading).
async fn relay(mut rx: mpsc::Receiver<Bytes>, mut to: DuplexStream) {
    while let Some(piece) = rx.recv().await {
        if to.write_all(&piece).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

async fn discard(mut from: DuplexStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The container's exit code once its exit is recorded; `None` after
/// `limit` (never, without one).
async fn wait_exit(rt: &Runtime, id: &str, limit: Option<Duration>) -> Option<i32> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        match rt.store.container(id) {
            Ok(c) if c.state != ContainerState::Running => return Some(c.exit_code),
            // Removed meanwhile.
            Err(_) => return Some(137),
            Ok(_) => {}
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return None;
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}
