//! One container in a pod, run to its end: create it with streamed stdio,
//! copy its output while it runs, wait for its exit, delete it.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use vessel_agent_api::client::stdio::read_output;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, SandboxInfo, SignalContainerRequest,
    StartContainerRequest, StdioStream, StreamStdio, WaitContainerRequest,
};

use super::{agent_call, report, spec, Phase, PodError, Progress, Step, AGENT_CALL_TIMEOUT};

/// How long the output streams may take to reach their end once the
/// container has exited (the pipes close when its pid namespace dies).
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// How a container's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// Shell-style exit code: the process's, or 128 + the signal that killed it.
    pub exit_code: i32,
    /// The signal that killed it; 0 if it exited.
    pub signal: u32,
}

/// What to run and where its output goes.
pub struct ContainerRun {
    /// The container id.
    pub id: String,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// Receives the container's stdout.
    pub stdout: Box<dyn Write + Send>,
    /// Receives the container's stderr.
    pub stderr: Box<dyn Write + Send>,
    /// How long the container may run; past it, it is killed and the run
    /// fails. `None`: as long as it likes (the caller can still cancel the
    /// run by dropping its future: every agent call is cancellable).
    pub deadline: Option<Duration>,
}

/// Runs one container in the pod to its end (see the module doc). The
/// container is deleted even when a step after `Create` fails.
pub async fn run(
    channel: Channel,
    sandbox: &SandboxInfo,
    rootfs: &str,
    run: ContainerRun,
    progress: Progress<'_>,
) -> Result<ContainerExit, PodError> {
    let spec = spec::container_spec(&run.args, sandbox)?;
    let spec_json = serde_json::to_string(&spec).map_err(PodError::SpecJson)?;
    let id = run.id.clone();
    let mut containers = ContainersClient::new(channel.clone());
    let started = Instant::now();
    let created = agent_call(
        "Containers.Create",
        AGENT_CALL_TIMEOUT,
        containers.create(CreateContainerRequest {
            container_id: id.clone(),
            oci_spec_json: spec_json,
            rootfs: rootfs.to_string(),
            streams: Some(StreamStdio::default()),
            ..CreateContainerRequest::default()
        }),
    )
    .await
    .map(|_| format!("created container {id} (rootfs {rootfs} on virtio-fs)"));
    report(
        progress,
        Phase::Run,
        &format!("creating container {id}"),
        started,
        created,
    )?;
    let outcome = start_and_wait(
        &mut containers,
        channel,
        &run.id,
        (run.stdout, run.stderr),
        run.deadline,
        progress,
    )
    .await;
    let deleting = Instant::now();
    let deleted = agent_call(
        "Containers.Delete",
        AGENT_CALL_TIMEOUT,
        containers.delete(DeleteContainerRequest {
            container_id: id.clone(),
        }),
    )
    .await
    .map(|_| format!("deleted container {id}"));
    let deleted = report(
        progress,
        Phase::Run,
        &format!("deleting container {id}"),
        deleting,
        deleted,
    );
    let exit = outcome?;
    deleted?;
    Ok(exit)
}

async fn start_and_wait(
    containers: &mut ContainersClient<Channel>,
    channel: Channel,
    id: &str,
    (stdout, stderr): (Box<dyn Write + Send>, Box<dyn Write + Send>),
    deadline: Option<Duration>,
    progress: Progress<'_>,
) -> Result<ContainerExit, PodError> {
    // Attached before Start so nothing waits: the guest holds output back
    // while no reader is attached.
    let readers = [
        copy_output(channel.clone(), id, StdioStream::Stdout, stdout),
        copy_output(channel, id, StdioStream::Stderr, stderr),
    ];
    let started = Instant::now();
    let result: Result<ContainerExit, PodError> = async {
        agent_call(
            "Containers.Start",
            AGENT_CALL_TIMEOUT,
            containers.start(StartContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .await?;
        progress(&Step::done(
            Phase::Run,
            &format!("started container {id}; its output follows"),
            started.elapsed(),
        ));
        let mut waiter = containers.clone();
        let wait = waiter.wait(WaitContainerRequest {
            container_id: id.to_string(),
        });
        let exit = match deadline {
            Some(limit) => match agent_call("Containers.Wait", limit, wait).await {
                Err(PodError::AgentTimeout { call, waited }) => {
                    // Past its deadline: kill it, so it does not outlive the run.
                    let _ = agent_call(
                        "Containers.Signal",
                        AGENT_CALL_TIMEOUT,
                        containers.signal(SignalContainerRequest {
                            container_id: id.to_string(),
                            signal: libc::SIGKILL as u32,
                        }),
                    )
                    .await;
                    return Err(PodError::AgentTimeout { call, waited });
                }
                other => other?,
            },
            None => wait
                .await
                .map_err(|status| PodError::Agent {
                    call: "Containers.Wait",
                    status,
                })?
                .into_inner(),
        };
        Ok(ContainerExit {
            exit_code: exit.exit_code,
            signal: exit.signal,
        })
    }
    .await;
    let mut drained = Ok(());
    for reader in readers {
        let stream = reader.stream;
        let abort = reader.task.abort_handle();
        match tokio::time::timeout(OUTPUT_DRAIN, reader.task).await {
            Ok(Ok(Ok(_bytes))) => {}
            Ok(Ok(Err(status))) => {
                drained = drained.and(Err(PodError::Output { stream, status }));
            }
            Ok(Err(join)) => {
                tracing::warn!(stream, error = %join, "output copier failed");
            }
            Err(_) => {
                // Aborted, not detached: a copier must not outlive its container.
                abort.abort();
                tracing::warn!(stream, "output did not end after the container exited");
            }
        }
    }
    if let Ok(exit) = &result {
        progress(&Step::done(
            Phase::Run,
            &format!(
                "container {id} exited with status {}{}",
                exit.exit_code,
                match exit.signal {
                    0 => String::new(),
                    s => format!(" (signal {s})"),
                }
            ),
            started.elapsed(),
        ));
    }
    let exit = result?;
    drained?;
    Ok(exit)
}

/// A task copying one output of the container to a writer.
struct OutputCopy {
    stream: &'static str,
    task: JoinHandle<Result<u64, tonic::Status>>,
}

fn copy_output(
    channel: Channel,
    id: &str,
    stream: StdioStream,
    mut out: Box<dyn Write + Send>,
) -> OutputCopy {
    let id = id.to_string();
    let name = match stream {
        StdioStream::Stderr => "stderr",
        _ => "stdout",
    };
    let task = tokio::spawn(async move {
        let mut write_failed = false;
        let copied = read_output(channel, &id, "", stream, |data| {
            // Keep reading after a write error (a closed terminal): an
            // unread stream would hold the container back.
            if !write_failed {
                if let Err(e) = out.write_all(data).and_then(|()| out.flush()) {
                    tracing::warn!(stream = name, error = %e, "cannot write container output");
                    write_failed = true;
                }
            }
        })
        .await;
        copied
    });
    OutputCopy { stream: name, task }
}
