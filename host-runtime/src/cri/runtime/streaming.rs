//! Exec, Attach and PortForward: each request is checked against the store
//! and answered with a single-use URL of vesseld's streaming server, which
//! then runs the session through the pod's agent (`crate::streaming`).

use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tonic::Status;

use super::RuntimeServiceImpl;
use crate::sandbox::manager::invalid;

impl RuntimeServiceImpl {
    fn streaming_server(&self) -> Result<&vessel_streaming::StreamingServer, Status> {
        self.rt
            .streaming
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))
    }

    /// A running container's full id, for a session's request.
    fn running_container(&self, id: &str) -> Result<String, Status> {
        if id.is_empty() {
            return Err(invalid("container_id", "is empty"));
        }
        let c = self.rt.store.find_container(id)?;
        if c.state != crate::store::ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        Ok(c.id)
    }

    pub(super) fn streaming_exec(&self, r: ExecRequest) -> Result<String, Status> {
        check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
        if r.cmd.is_empty() {
            return Err(invalid("cmd", "is empty"));
        }
        let container_id = self.running_container(&r.container_id)?;
        self.streaming_server()?
            .get_exec(vessel_streaming::ExecRequest {
                container_id,
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(streaming_status)
    }

    pub(super) fn streaming_attach(&self, r: AttachRequest) -> Result<String, Status> {
        check_streams(r.tty, r.stdin, r.stdout, r.stderr)?;
        let container_id = self.running_container(&r.container_id)?;
        self.streaming_server()?
            .get_attach(vessel_streaming::AttachRequest {
                container_id,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(streaming_status)
    }

    pub(super) fn streaming_port_forward(&self, r: PortForwardRequest) -> Result<String, Status> {
        if r.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id", "is empty"));
        }
        let mut ports = Vec::with_capacity(r.port.len());
        for (i, port) in r.port.iter().enumerate() {
            match u16::try_from(*port) {
                Ok(p) if p > 0 => ports.push(p),
                _ => {
                    return Err(invalid(
                        &format!("port[{i}]"),
                        format!("{port} is not a TCP port"),
                    ))
                }
            }
        }
        let s = self.rt.store.find_sandbox(&r.pod_sandbox_id)?;
        if s.state != crate::store::SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                s.id
            )));
        }
        self.streaming_server()?
            .get_port_forward(vessel_streaming::PortForwardRequest {
                pod_sandbox_id: s.id,
                ports,
            })
            .map_err(streaming_status)
    }
}

/// The CRI's rules for a session's streams.
fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Status> {
    if tty && stderr {
        return Err(invalid(
            "stderr",
            "must be false with tty (a terminal has no stderr)",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid(
            "stdin",
            "one of stdin, stdout or stderr must be true",
        ));
    }
    Ok(())
}

fn streaming_status(e: vessel_streaming::ServerError) -> Status {
    match e {
        vessel_streaming::ServerError::Invalid { field, reason } => invalid(field, reason),
        vessel_streaming::ServerError::Token(e) => Status::resource_exhausted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}
