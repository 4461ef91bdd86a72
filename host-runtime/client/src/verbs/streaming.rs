//! The verbs that stream through the runtime's streaming server: `exec -i/-t`,
//! `attach` and `port-forward`. Each asks the CRI for a URL, then speaks to it
//! with `vessel_streaming::client` (as crictl does with client-go).

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::net::TcpListener;
use vessel_streaming::client::{self as stream, PortForwarder, SessionIo};

use super::Deadlines;
use crate::connect::{call, request, Cri};
use crate::error::ClientError;
use crate::resolve::{resolve_container, resolve_pod};
use crate::terminal::{resizes, RawMode};

/// What a streamed session connects.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    /// Send our stdin (`-i`).
    pub stdin: bool,
    /// Run on a terminal (`-t`): raw mode here, resizes sent, no separate stderr.
    pub tty: bool,
}

fn session_io(o: StreamOptions) -> SessionIo {
    SessionIo {
        stdin: o
            .stdin
            .then(|| Box::new(tokio::io::stdin()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr: (!o.tty).then(|| {
            Box::new(tokio::io::stderr()) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>
        }),
        tty: o.tty,
        resize: o.tty.then(resizes),
    }
}

/// `exec -i/-t`: runs `cmd` in the container through the streaming server;
/// returns its exit code.
pub async fn exec_stream(
    cri: &mut Cri,
    id: &str,
    cmd: &[String],
    o: StreamOptions,
    deadlines: Deadlines,
) -> Result<i32, ClientError> {
    if cmd.is_empty() {
        return Err(ClientError::Usage("exec needs a command".into()));
    }
    let id = resolve_container(cri, id, deadlines.quick).await?;
    let url = call(
        "Exec",
        deadlines.quick,
        cri.runtime.exec(request(
            ExecRequest {
                container_id: id,
                cmd: cmd.to_vec(),
                tty: o.tty,
                stdin: o.stdin,
                stdout: true,
                stderr: !o.tty,
            },
            deadlines.quick,
        )),
    )
    .await?
    .url;
    let _raw = o.tty.then(RawMode::enable).flatten();
    Ok(stream::exec(&url, session_io(o)).await?.code)
}

/// `attach`: joins the running container's stdio until it exits (its exit
/// code) or the session ends.
pub async fn attach(
    cri: &mut Cri,
    id: &str,
    o: StreamOptions,
    deadlines: Deadlines,
) -> Result<i32, ClientError> {
    let id = resolve_container(cri, id, deadlines.quick).await?;
    let url = call(
        "Attach",
        deadlines.quick,
        cri.runtime.attach(request(
            AttachRequest {
                container_id: id,
                stdin: o.stdin,
                tty: o.tty,
                stdout: true,
                stderr: !o.tty,
            },
            deadlines.quick,
        )),
    )
    .await?
    .url;
    let _raw = o.tty.then(RawMode::enable).flatten();
    Ok(stream::attach(&url, session_io(o)).await?.code)
}

/// One `LOCAL:REMOTE` (or `PORT`, both the same) of `port-forward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPair {
    /// Port to listen on here (0: any free one).
    pub local: u16,
    /// Port in the pod.
    pub remote: u16,
}

impl std::str::FromStr for PortPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("{s:?}: {p:?} is not a port"))
        };
        let (local, remote) = match s.split_once(':') {
            Some((l, r)) => (if l.is_empty() { 0 } else { port(l)? }, port(r)?),
            None => (port(s)?, port(s)?),
        };
        if remote == 0 {
            return Err(format!("{s:?}: the pod's port must not be 0"));
        }
        Ok(PortPair { local, remote })
    }
}

/// `port-forward`: listens on `address` for each pair and forwards every
/// connection to the pod's port over one streaming session, until the
/// session ends (or the process is stopped).
pub async fn port_forward(
    cri: &mut Cri,
    pod: &str,
    address: std::net::IpAddr,
    pairs: &[PortPair],
    deadlines: Deadlines,
    out: &mut impl std::io::Write,
) -> Result<(), ClientError> {
    if pairs.is_empty() {
        return Err(ClientError::Usage("port-forward needs LOCAL:REMOTE".into()));
    }
    let pod = resolve_pod(cri, pod, deadlines.quick).await?;
    let url = call(
        "PortForward",
        deadlines.quick,
        cri.runtime.port_forward(request(
            PortForwardRequest {
                pod_sandbox_id: pod,
                port: pairs.iter().map(|p| i32::from(p.remote)).collect(),
            },
            deadlines.quick,
        )),
    )
    .await?
    .url;
    let forwarder = Arc::new(PortForwarder::connect(&url).await?);
    let mut listeners: tokio::task::JoinSet<Result<(), ClientError>> = tokio::task::JoinSet::new();
    for pair in pairs {
        let listener = TcpListener::bind(SocketAddr::new(address, pair.local))
            .await
            .map_err(|error| ClientError::Io {
                path: format!("{address}:{}", pair.local).into(),
                error,
            })?;
        let local = listener.local_addr().map_err(|error| ClientError::Io {
            path: format!("{address}:{}", pair.local).into(),
            error,
        })?;
        writeln!(out, "Forwarding from {local} -> {}", pair.remote).map_err(|error| {
            ClientError::Io {
                path: "stdout".into(),
                error,
            }
        })?;
        let forwarder = Arc::clone(&forwarder);
        let remote = pair.remote;
        listeners.spawn(async move {
            loop {
                let (conn, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => return Err(ClientError::from(stream::ClientError::Io(e))),
                };
                let forwarder = Arc::clone(&forwarder);
                tokio::spawn(async move {
                    if let Err(e) = forwarder.forward(remote, conn).await {
                        eprintln!("vessel: port-forward {peer} -> {remote}: {e}");
                    }
                });
            }
        });
    }
    out.flush().map_err(|error| ClientError::Io {
        path: "stdout".into(),
        error,
    })?;
    tokio::select! {
        _ = forwarder.closed() => Err(ClientError::Stream(stream::ClientError::Protocol(
            "the streaming server ended the port-forward session".into(),
        ))),
        Some(Ok(Err(e))) = listeners.join_next() => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pairs_parse_as_crictl_takes_them() {
        let p: PortPair = "8080:80".parse().unwrap();
        assert_eq!((p.local, p.remote), (8080, 80));
        let p: PortPair = "80".parse().unwrap();
        assert_eq!((p.local, p.remote), (80, 80));
        let p: PortPair = ":80".parse().unwrap();
        assert_eq!((p.local, p.remote), (0, 80));
        assert!("80:0".parse::<PortPair>().is_err());
        assert!("x:80".parse::<PortPair>().is_err());
        assert!("70000".parse::<PortPair>().is_err());
    }
}
