//! Exec: a process started in the container through the agent, its stdio
//! piped to the session, its exit code returned, and the process deleted in
//! the agent afterwards. A client that goes away gets its process killed.

use std::time::Duration;

use vessel_agent_api::proto::processes_client::ProcessesClient;
use vessel_agent_api::proto::{StdioStream, WaitProcessRequest};
use vessel_streaming::{ExecRequest, ProcessIo, RuntimeError};

use super::pipe::{feed_stdin, forward_resizes, join_within, pump_output, AtEof, Target};
use super::{client_gone, runtime_error};
use crate::container::exec::{ExecSpec, StartedExec};
use crate::daemon::runtime::Runtime;

/// How long the output may go on after the process exited (a child that
/// keeps the pipe open is not waited for beyond this).
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// How many times in a row Processes.Wait is asked again after the
/// connection to the agent broke.
const WAIT_RETRIES: u32 = 5;

/// The pause between those.
const WAIT_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How long a killed exec may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Runs `req` (see the module doc).
pub async fn exec(rt: &Runtime, req: ExecRequest, io: ProcessIo) -> Result<i32, RuntimeError> {
    let ProcessIo {
        stdin,
        stdout,
        stderr,
        mut resize,
        disconnected,
    } = io;
    // The client sends the first size right after opening its streams: use
    // it if it is here already, so the process starts at the right size.
    let size = match resize.as_mut() {
        Some(sizes) if req.tty => sizes.try_recv().ok().map(|s| (s.height, s.width)),
        _ => None,
    };
    let spec = ExecSpec {
        cmd: req.cmd.clone(),
        tty: req.tty,
        stdin: stdin.is_some(),
        size,
    };
    let started = rt
        .start_exec(&req.container_id, &spec)
        .await
        .map_err(runtime_error)?;
    let target = Target {
        channel: started.channel.clone(),
        container_id: started.container_id.clone(),
        exec_id: started.exec_id.clone(),
    };
    let mut outputs = vec![tokio::spawn(pump_output(
        target.clone(),
        StdioStream::Stdout,
        stdout,
    ))];
    if !req.tty {
        outputs.push(tokio::spawn(pump_output(
            target.clone(),
            StdioStream::Stderr,
            stderr,
        )));
    }
    let input = stdin.map(|from| tokio::spawn(feed_stdin(target.clone(), from, AtEof::Close)));
    let resizer = resize
        .filter(|_| req.tty)
        .map(|sizes| tokio::spawn(forward_resizes(target.clone(), sizes)));

    let result = wait_or_kill(&started, disconnected).await;
    join_within(outputs, OUTPUT_DRAIN).await;
    for task in input.into_iter().chain(resizer) {
        task.abort();
    }
    started.delete().await;
    match &result {
        Ok(code) => {
            tracing::info!(pod = %started.sandbox_id, container = %started.container_id, exec = %started.exec_id, exit_code = code, "exec finished")
        }
        Err(e) => {
            tracing::info!(pod = %started.sandbox_id, container = %started.container_id, exec = %started.exec_id, error = %e, "exec ended")
        }
    }
    result
}

/// The exit code, or, when the client goes away first, kills the process.
async fn wait_or_kill(
    started: &StartedExec,
    disconnected: tokio::sync::watch::Receiver<bool>,
) -> Result<i32, RuntimeError> {
    let request = WaitProcessRequest {
        container_id: started.container_id.clone(),
        exec_id: started.exec_id.clone(),
    };
    let wait = async {
        let mut failures = 0;
        loop {
            let mut processes = ProcessesClient::new(started.channel.clone());
            match processes.wait(request.clone()).await {
                Ok(reply) => break Ok(reply.into_inner().exit_code),
                // A broken connection to the agent is not the exec's end
                // (transient vsock drops happen): ask again, a few times.
                Err(s)
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                        && failures < WAIT_RETRIES =>
                {
                    failures += 1;
                    tracing::warn!(container = %started.container_id, exec = %started.exec_id, error = %s.message(), failures, "Processes.Wait failed; asking again");
                    tokio::time::sleep(WAIT_RETRY_PAUSE).await;
                }
                Err(s) => {
                    break Err(RuntimeError::new(format!(
                        "Processes.Wait: {}",
                        s.message()
                    )))
                }
            }
        }
    };
    tokio::select! {
        code = wait => code,
        _ = client_gone(disconnected) => {
            started.kill().await;
            let mut processes = ProcessesClient::new(started.channel.clone());
            let _ = tokio::time::timeout(KILL_WAIT, processes.wait(request)).await;
            Err(RuntimeError::new("the client went away; the process was killed"))
        }
    }
}
