//! remotecommand and portforward over WebSocket.

pub mod channel;
pub(crate) mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use self::channel::channels;
use self::session::{Framing, WsSession};
use crate::portforward::{forward, port_allowed};
use crate::remotecommand::protocol::{header_tokens, negotiate};
use crate::remotecommand::pump::{run_process, Channels};
use crate::runtime::StreamingRuntime;
use crate::token::PendingRequest;

/// The largest message or frame accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;

/// A negotiated WebSocket subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WsProtocol {
    framing: Framing,
    /// The error channel carries a JSON status (v4, v5).
    json_status: bool,
}

const REMOTECOMMAND: [(WsProtocol, &str); 5] = [
    (
        WsProtocol {
            framing: Framing {
                base64: false,
                v5: true,
            },
            json_status: true,
        },
        "v5.channel.k8s.io",
    ),
    (
        WsProtocol {
            framing: Framing {
                base64: false,
                v5: false,
            },
            json_status: true,
        },
        "v4.channel.k8s.io",
    ),
    (
        WsProtocol {
            framing: Framing {
                base64: true,
                v5: false,
            },
            json_status: true,
        },
        "v4.base64.channel.k8s.io",
    ),
    (
        WsProtocol {
            framing: Framing {
                base64: false,
                v5: false,
            },
            json_status: false,
        },
        "channel.k8s.io",
    ),
    (
        WsProtocol {
            framing: Framing {
                base64: true,
                v5: false,
            },
            json_status: false,
        },
        "base64.channel.k8s.io",
    ),
];

const PORTFORWARD: [(WsProtocol, &str); 2] = [
    (
        WsProtocol {
            framing: Framing {
                base64: false,
                v5: false,
            },
            json_status: false,
        },
        "v4.channel.k8s.io",
    ),
    (
        WsProtocol {
            framing: Framing {
                base64: true,
                v5: false,
            },
            json_status: false,
        },
        "v4.base64.channel.k8s.io",
    ),
];

fn refuse(status: StatusCode, message: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(message.into()));
    *response.status_mut() = status;
    response
}

/// The ports of a WebSocket portforward: the `ports` query parameters, else the request's.
fn requested_ports(query: Option<&str>, registered: &[u16]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        if let Some(list) = pair.strip_prefix("ports=") {
            for port in list
                .split("%2C")
                .flat_map(|p| p.split(','))
                .filter(|p| !p.is_empty())
            {
                match port.parse::<u16>() {
                    Ok(p) if p != 0 => ports.push(p),
                    _ => return Err(format!("invalid port {port:?}")),
                }
            }
        }
    }
    if ports.is_empty() {
        ports = registered.to_vec();
    }
    if ports.is_empty() {
        return Err("no ports requested".into());
    }
    if ports.len() > 64 {
        return Err("more than 64 ports".into());
    }
    if let Some(p) = ports.iter().find(|p| !port_allowed(registered, **p)) {
        return Err(format!("port {p} is not allowed for this request"));
    }
    Ok(ports)
}

/// Answers a WebSocket upgrade for `pending` and serves it.
pub(crate) fn upgrade(
    req: Request<Incoming>,
    pending: PendingRequest,
    runtime: Arc<dyn StreamingRuntime>,
    permit: Arc<OwnedSemaphorePermit>,
    limits: (Duration, Duration),
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let Some(key) = headers
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version (13 required)",
        );
    }
    let offered = header_tokens(
        headers
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let supported: &[(WsProtocol, &str)] = match pending {
        PendingRequest::PortForward(_) => &PORTFORWARD,
        _ => &REMOTECOMMAND,
    };
    let (protocol, name) = match negotiate(&offered, supported) {
        Ok(Some((protocol, name))) => (protocol, Some(name)),
        // No subprotocol: binary framing, text status, as the kubelet serves it.
        Ok(None) => (
            WsProtocol {
                framing: Framing {
                    base64: false,
                    v5: false,
                },
                json_status: false,
            },
            None,
        ),
        Err(message) => {
            tracing::info!(?offered, "refusing a websocket upgrade: no common protocol");
            return refuse(StatusCode::FORBIDDEN, message);
        }
    };
    let ports = match &pending {
        PendingRequest::PortForward(pf) => match requested_ports(req.uri().query(), &pf.ports) {
            Ok(ports) => ports,
            Err(message) => return refuse(StatusCode::BAD_REQUEST, message),
        },
        _ => Vec::new(),
    };
    let mut response = refuse(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("sec-websocket-accept", accept);
    }
    if let Some(name) = name.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert("sec-websocket-protocol", name);
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                tracing::info!(%error, "websocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
        match pending {
            PendingRequest::Exec(req) => {
                let span = tracing::info_span!("exec", container_id = %req.container_id);
                let (tty, opts) = (req.tty, (req.stdin, req.stdout, req.stderr));
                serve_remotecommand(ws, protocol, opts, tty, limits, |pio| async move {
                    runtime.exec(req, pio).await
                })
                .instrument(span)
                .await
            }
            PendingRequest::Attach(req) => {
                let span = tracing::info_span!("attach", container_id = %req.container_id);
                let (tty, opts) = (req.tty, (req.stdin, req.stdout, req.stderr));
                serve_remotecommand(ws, protocol, opts, tty, limits, |pio| async move {
                    runtime.attach(req, pio).await
                })
                .instrument(span)
                .await
            }
            PendingRequest::PortForward(req) => {
                let span = tracing::info_span!("portforward", pod_sandbox_id = %req.pod_sandbox_id);
                serve_portforward(ws, protocol, runtime, req.pod_sandbox_id, ports, limits)
                    .instrument(span)
                    .await
            }
        }
        drop(permit);
    });
    response
}

async fn serve_remotecommand<T, F, Fut>(
    ws: WebSocketStream<T>,
    protocol: WsProtocol,
    (stdin, stdout, stderr): (bool, bool, bool),
    tty: bool,
    (stall, idle): (Duration, Duration),
    run: F,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(crate::runtime::ProcessIo) -> Fut,
    Fut: std::future::Future<Output = Result<i32, crate::runtime::RuntimeError>>,
{
    let mut inbound = Vec::new();
    if stdin {
        inbound.push(channels::STDIN);
    }
    if tty {
        inbound.push(channels::RESIZE);
    }
    let (session, mut readers) = WsSession::start(ws, protocol.framing, &inbound, stall, idle);
    let mut chans = Channels::default();
    if let Some(r) = readers.remove(&channels::STDIN) {
        chans.stdin = Some(Box::new(r));
    }
    if let Some(r) = readers.remove(&channels::RESIZE) {
        chans.resize = Some(Box::new(r));
    }
    if stdout {
        chans.stdout = Some(Box::new(session.outbound(channels::STDOUT)));
    }
    if stderr {
        chans.stderr = Some(Box::new(session.outbound(channels::STDERR)));
    }
    chans.error = Some(Box::new(session.outbound(channels::ERROR)));
    let outcome = run_process(chans, protocol.json_status, session.ended(), run).await;
    tracing::debug!(?outcome, "websocket remotecommand session done");
    session.close().await;
}

async fn serve_portforward<T>(
    ws: WebSocketStream<T>,
    protocol: WsProtocol,
    runtime: Arc<dyn StreamingRuntime>,
    pod_sandbox_id: String,
    ports: Vec<u16>,
    (stall, idle): (Duration, Duration),
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Two channels per port: data (2i, both ways) and error (2i+1, server to client).
    let inbound: Vec<u8> = (0..ports.len()).map(|i| (2 * i) as u8).collect();
    let (session, mut readers) = WsSession::start(ws, protocol.framing, &inbound, stall, idle);
    let mut forwards = JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let data_channel = (2 * i) as u8;
        let mut data = session.outbound_with_port(data_channel, port);
        let mut error = session.outbound_with_port(data_channel + 1, port);
        if data.send_prefix().await.is_err() || error.send_prefix().await.is_err() {
            break;
        }
        let Some(reader) = readers.remove(&data_channel) else {
            continue;
        };
        forwards.spawn(forward(
            runtime.clone(),
            pod_sandbox_id.clone(),
            port,
            Box::new(reader),
            Box::new(data),
            Box::new(error),
        ));
    }
    while forwards.join_next().await.is_some() {}
    session.close().await;
}
