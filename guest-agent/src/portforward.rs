//! Port forwarding: a TCP connection in the pod's network namespace (the
//! guest's root netns, where the agent runs) spliced to the host's stream.
//!
//! Both directions are bounded: host data is written to the socket before the
//! next message is read (HTTP/2 flow control holds the host back), and socket
//! reads wait while [`RESPONSE_BUFFER`] chunks are queued toward the host.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::proto::port_forward_request::Message;
use crate::proto::{PortForwardRequest, PortForwardResponse, PortForwardTarget};

/// Largest chunk read from the connection into one response message.
pub const CHUNK: usize = 32 * 1024;

/// Chunks queued toward the host before the agent stops reading the connection.
pub const RESPONSE_BUFFER: usize = 4;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the host has to send the first (`target`) message.
pub const TARGET_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a forward could not be opened; each variant maps to a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A request field is malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// Nothing accepted the connection.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ForwardError> for Status {
    fn from(err: ForwardError) -> Self {
        match err {
            ForwardError::InvalidArgument(m) => Status::invalid_argument(m),
            ForwardError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

/// The socket address a `target` names.
pub fn target_addr(target: &PortForwardTarget) -> Result<SocketAddr, ForwardError> {
    let port = u16::try_from(target.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ForwardError::InvalidArgument(format!("target.port {} is not in 1-65535", target.port))
        })?;
    let ip = if target.address.is_empty() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        // `[::1]` is accepted too; names are not (no resolver in the agent).
        let literal = target
            .address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(&target.address);
        literal.parse().map_err(|_| {
            ForwardError::InvalidArgument(format!(
                "target.address {:?} is not an IP address",
                target.address
            ))
        })?
    };
    Ok(SocketAddr::new(ip, port))
}

/// The `target` of the first request message.
pub fn first_target(first: Option<PortForwardRequest>) -> Result<PortForwardTarget, ForwardError> {
    match first.and_then(|m| m.message) {
        Some(Message::Target(target)) => Ok(target),
        Some(Message::Data(_)) => Err(ForwardError::InvalidArgument(
            "the first message must be `target`, not `data`".into(),
        )),
        None => Err(ForwardError::InvalidArgument(
            "the first message must be `target`".into(),
        )),
    }
}

/// Connects to `addr` in the agent's (the pod's) network namespace.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, ForwardError> {
    let where_ = format!(
        "port {} ({addr}) in the pod's network namespace",
        addr.port()
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            // Small writes from interactive protocols should not wait for Nagle.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => Err(
            ForwardError::Unavailable(format!("{where_}: connection refused")),
        ),
        Ok(Err(err)) => Err(ForwardError::Unavailable(format!("{where_}: {err}"))),
        Err(_) => Err(ForwardError::Unavailable(format!(
            "{where_}: no answer within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// How the connection-to-host direction ended.
enum Down {
    /// The connection reached EOF or failed (reported to the host).
    Done,
    /// The host dropped the response stream.
    HostGone,
}

/// Host → connection: writes each `data`, then shuts the write side down when
/// the host ends its stream. An error is sent on `failed`.
async fn upstream<S>(mut inbound: S, mut wr: OwnedWriteHalf, failed: oneshot::Sender<Status>)
where
    S: Stream<Item = Result<PortForwardRequest, Status>> + Unpin,
{
    use futures_util::StreamExt;
    loop {
        match inbound.next().await {
            Some(Ok(PortForwardRequest {
                message: Some(Message::Data(bytes)),
            })) => {
                if let Err(err) = wr.write_all(&bytes).await {
                    let _ = failed.send(Status::unavailable(format!(
                        "write to the forwarded connection: {err}"
                    )));
                    return;
                }
            }
            Some(Ok(PortForwardRequest {
                message: Some(Message::Target(_)),
            })) => {
                let _ = failed.send(Status::invalid_argument(
                    "`target` may only be the first message",
                ));
                return;
            }
            Some(Ok(PortForwardRequest { message: None })) => {}
            // The host ended its side: half-close, so the peer reads EOF.
            None => {
                let _ = wr.shutdown().await;
                return;
            }
            // The call is gone (cancelled or reset): nothing to tell anyone.
            Some(Err(status)) => {
                tracing::debug!(%status, "port-forward request stream failed");
                return;
            }
        }
    }
}

/// Connection → host: sends what the socket reads until EOF, an error, a
/// failure of the other direction, or the host going away.
async fn downstream(
    mut rd: OwnedReadHalf,
    tx: mpsc::Sender<Result<PortForwardResponse, Status>>,
    mut failed: oneshot::Receiver<Status>,
) -> Down {
    let mut buf = vec![0u8; CHUNK];
    let mut up_done = false;
    loop {
        tokio::select! {
            read = rd.read(&mut buf) => match read {
                Ok(0) => return Down::Done,
                Ok(n) => {
                    let msg = PortForwardResponse { data: buf[..n].to_vec() };
                    // Waits while the queue is full: the backpressure toward the socket.
                    if tx.send(Ok(msg)).await.is_err() {
                        return Down::HostGone;
                    }
                }
                Err(err) => {
                    let _ = tx
                        .send(Err(Status::unavailable(format!(
                            "read from the forwarded connection: {err}"
                        ))))
                        .await;
                    return Down::Done;
                }
            },
            () = tx.closed() => return Down::HostGone,
            status = &mut failed, if !up_done => {
                up_done = true;
                // A dropped sender means the host side ended cleanly; keep reading.
                if let Ok(status) = status {
                    let _ = tx.send(Err(status)).await;
                    return Down::Done;
                }
            }
        }
    }
}

/// Splices `stream` and the host's messages until both directions are done,
/// or the host goes away.
pub async fn splice<S>(
    stream: TcpStream,
    inbound: S,
    tx: mpsc::Sender<Result<PortForwardResponse, Status>>,
) where
    S: Stream<Item = Result<PortForwardRequest, Status>> + Unpin,
{
    let peer = stream.peer_addr().ok();
    let (rd, wr) = stream.into_split();
    let (failed_tx, failed_rx) = oneshot::channel();
    let up = upstream(inbound, wr, failed_tx);
    let down = downstream(rd, tx, failed_rx);
    tokio::pin!(up, down);
    tokio::select! {
        // Host side finished first: the connection may still have bytes for the host.
        () = &mut up => { (&mut down).await; }
        end = &mut down => match end {
            // The response is over, but the host may still be sending (its half-close
            // then reaches the peer); a reset call ends `up` too.
            Down::Done => up.await,
            // Dropping `up` drops the connection, even mid-write to a stuck peer.
            Down::HostGone => {}
        },
    }
    tracing::debug!(?peer, "port forward closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u32, address: &str) -> PortForwardTarget {
        PortForwardTarget {
            port,
            address: address.into(),
        }
    }

    #[test]
    fn targets_default_to_loopback_and_name_bad_fields() {
        let addr = target_addr(&target(8080, "")).expect("default");
        assert_eq!(addr, "127.0.0.1:8080".parse().expect("addr"));
        let addr = target_addr(&target(53, "[::1]")).expect("v6");
        assert_eq!(addr, "[::1]:53".parse().expect("addr"));
        for (t, field) in [
            (target(0, ""), "target.port"),
            (target(65536, ""), "target.port"),
            (target(80, "localhost"), "target.address"),
        ] {
            let err = target_addr(&t).expect_err(field);
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn the_first_message_must_be_the_target() {
        let data = PortForwardRequest {
            message: Some(Message::Data(b"x".to_vec())),
        };
        assert!(first_target(Some(data)).is_err());
        assert!(first_target(None).is_err());
        let t = PortForwardRequest {
            message: Some(Message::Target(target(1, ""))),
        };
        assert_eq!(first_target(Some(t)).ok(), Some(target(1, "")));
    }

    #[tokio::test]
    async fn splices_both_ways_with_half_close() {
        use futures_util::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // An upper-casing echo server that answers after its peer's EOF.
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut all = Vec::new();
            conn.read_to_end(&mut all).await.expect("read");
            conn.write_all(&all.to_ascii_uppercase())
                .await
                .expect("write");
        });
        let stream = connect(addr).await.expect("connect");
        let inbound =
            futures_util::stream::iter([b"hello ".to_vec(), b"world".to_vec()].into_iter().map(
                |d| {
                    Ok(PortForwardRequest {
                        message: Some(Message::Data(d)),
                    })
                },
            ));
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let task = tokio::spawn(splice(stream, inbound, tx));
        let got: Vec<u8> = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|m| m.expect("data").data)
            .concat()
            .await;
        assert_eq!(got, b"HELLO WORLD");
        task.await.expect("splice");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_refused_port_is_unavailable_and_named() {
        // Bind then drop: nothing listens on that port any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        let err = connect(addr).await.expect_err("refused");
        assert!(matches!(err, ForwardError::Unavailable(_)));
        assert!(
            err.to_string().contains(&format!("port {}", addr.port())),
            "{err}"
        );
    }
}
