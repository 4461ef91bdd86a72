//! Extra processes in a running container, shared by ExecSync and the
//! streaming server's exec: start one in the agent with streamed stdio, kill
//! it, forget it.

use tonic::Status;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::processes_client::ProcessesClient;
use vessel_agent_api::proto::{
    DeleteProcessRequest, ExecProcessRequest, SignalProcessRequest, StreamStdio, TerminalSize,
};

use super::manager::agent_status;
use crate::daemon::runtime::Runtime;
use crate::pod::{agent_call, AGENT_CALL_TIMEOUT};
use crate::sandbox::manager::invalid;
use crate::store::ContainerState;

/// How to run an exec.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// argv (not empty).
    pub cmd: Vec<String>,
    /// Give it a terminal (stderr is then part of stdout).
    pub tty: bool,
    /// Give it a stdin pipe fed by `Stdio.Input`.
    pub stdin: bool,
    /// The terminal's size before it runs (rows, cols); `None` leaves the kernel's.
    pub size: Option<(u16, u16)>,
}

/// An exec the agent runs: what the calls about it need.
#[derive(Debug, Clone)]
pub struct StartedExec {
    /// The pod's agent.
    pub channel: Channel,
    /// The pod sandbox.
    pub sandbox_id: String,
    /// The container it runs in.
    pub container_id: String,
    /// Its id in the agent.
    pub exec_id: String,
}

impl Runtime {
    /// Starts `spec` in the running container `id_or_prefix` (its process
    /// settings with `spec`'s argv and terminal), stdio streamed.
    pub async fn start_exec(
        &self,
        id_or_prefix: &str,
        spec: &ExecSpec,
    ) -> Result<StartedExec, Status> {
        self.start_exec_by(id_or_prefix, spec, None).await
    }

    /// [`Self::start_exec`], giving up at `deadline` (ExecSync's timeout
    /// covers starting too). An exec the agent starts after that is killed
    /// and deleted in the background, so a slow guest leaks nothing.
    pub async fn start_exec_by(
        &self,
        id_or_prefix: &str,
        spec: &ExecSpec,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<StartedExec, Status> {
        if spec.cmd.is_empty() {
            return Err(invalid("cmd", "is empty"));
        }
        let c = self.store.find_container(id_or_prefix)?;
        if c.state != ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let pod = self.ready_pod(&c.sandbox_id).await?;
        let mut process: serde_json::Value = serde_json::from_str(&c.process_json)
            .map_err(|e| Status::internal(format!("container {} process: {e}", c.id)))?;
        process["args"] = serde_json::json!(spec.cmd);
        process["terminal"] = serde_json::json!(spec.tty);
        let exec_id = format!("exec-{}", &crate::store::new_id()?[..16]);
        let request = ExecProcessRequest {
            container_id: c.id.clone(),
            exec_id: exec_id.clone(),
            process_json: process.to_string(),
            streams: Some(StreamStdio {
                stdin: spec.stdin,
                terminal_size: spec
                    .size
                    .filter(|_| spec.tty)
                    .map(|(rows, cols)| TerminalSize {
                        rows: rows.into(),
                        cols: cols.into(),
                    }),
            }),
            ..ExecProcessRequest::default()
        };
        let started = StartedExec {
            channel: pod.channel.clone(),
            sandbox_id: pod.id.clone(),
            container_id: c.id.clone(),
            exec_id: exec_id.clone(),
        };
        // Its own task, so that the caller can stop waiting at `deadline`
        // while the call runs to its end and cleans up after itself.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let orphan = started.clone();
        tokio::spawn(async move {
            let r = agent_call(
                "Processes.Exec",
                AGENT_CALL_TIMEOUT,
                ProcessesClient::new(orphan.channel.clone()).exec(request),
            )
            .await;
            let ok = r.is_ok();
            if tx.send(r).is_err() && ok {
                tracing::warn!(pod = %orphan.sandbox_id, container = %orphan.container_id, exec = %orphan.exec_id, "exec started after its caller gave up: killing it");
                orphan.kill().await;
                orphan.delete().await;
            }
        });
        let reply = match deadline {
            Some(d) => tokio::time::timeout_at(d, rx).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the exec did not start in time (the guest of pod {} is not answering)",
                    pod.id
                ))
            })?,
            None => rx.await,
        };
        reply
            .map_err(|_| Status::internal("the exec's start task ended without a reply"))?
            .map_err(agent_status)?;
        tracing::debug!(pod = %pod.id, container = %c.id, exec = %exec_id, tty = spec.tty, "exec started");
        Ok(started)
    }
}

impl StartedExec {
    /// Sends SIGKILL (an exec that already exited is fine).
    pub async fn kill(&self) {
        let _ = agent_call(
            "Processes.Signal",
            AGENT_CALL_TIMEOUT,
            ProcessesClient::new(self.channel.clone()).signal(SignalProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
                signal: libc::SIGKILL as u32,
            }),
        )
        .await;
    }

    /// Kills the exec if it still runs and frees its id in the agent.
    pub async fn delete(&self) {
        let deleted = agent_call(
            "Processes.Delete",
            AGENT_CALL_TIMEOUT,
            ProcessesClient::new(self.channel.clone()).delete(DeleteProcessRequest {
                container_id: self.container_id.clone(),
                exec_id: self.exec_id.clone(),
            }),
        )
        .await;
        if let Err(e) = deleted {
            tracing::warn!(pod = %self.sandbox_id, container = %self.container_id, exec = %self.exec_id, error = %e, "cannot delete an exec in the agent");
        }
    }
}
