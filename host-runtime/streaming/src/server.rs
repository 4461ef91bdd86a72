//! The HTTP server: hands out URLs with single-use tokens and upgrades the client's request
//! to SPDY/3.1 or WebSocket on `/exec/{token}`, `/attach/{token}` and `/portforward/{token}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::remotecommand::protocol::{header_tokens, negotiate};
use crate::remotecommand::spdy::StreamOptions;
use crate::remotecommand::{self, Protocol};
use crate::runtime::{AttachRequest, ExecRequest, PortForwardRequest, StreamingRuntime};
use crate::spdy::session::SessionConfig;
use crate::token::{PendingRequest, RequestKind, TokenCache, TokenError};
use crate::{portforward, tls};

/// PEM files of the server's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How the streaming server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Default 127.0.0.1 with an ephemeral port, as the kubelet's own
    /// streaming server: only local clients (the kubelet, crictl) can connect.
    pub address: SocketAddr,
    /// Host put in the URLs handed out; default: the bound address (required when binding
    /// an unspecified address such as 0.0.0.0).
    pub advertise_host: Option<String>,
    /// Serve HTTPS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// How long a URL stays usable. Default 60 s.
    pub token_ttl: Duration,
    /// Requests waiting for their client at most.
    pub max_pending_requests: usize,
    /// How long a client may take to open its streams after the upgrade. Default 30 s.
    pub stream_creation_timeout: Duration,
    /// Concurrent connections at most; more are closed at once.
    pub max_connections: usize,
    /// SPDY session limits.
    pub session: SessionConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            tls: None,
            token_ttl: Duration::from_secs(60),
            max_pending_requests: 1024,
            stream_creation_timeout: Duration::from_secs(30),
            max_connections: 256,
            session: SessionConfig::default(),
        }
    }
}

/// Why the server could not start or a request could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS files.
    #[error("streaming server TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// A request or setting that cannot be served.
    #[error("invalid streaming {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// No token could be issued.
    #[error(transparent)]
    Token(#[from] TokenError),
}

struct State {
    runtime: Arc<dyn StreamingRuntime>,
    tokens: TokenCache,
    config: ServerConfig,
}

/// A running streaming server.
pub struct StreamingServer {
    state: Arc<State>,
    base_url: String,
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl StreamingServer {
    /// Binds and starts serving `runtime`.
    pub async fn start(
        config: ServerConfig,
        runtime: Arc<dyn StreamingRuntime>,
    ) -> Result<Self, ServerError> {
        if config.address.ip().is_unspecified() && config.advertise_host.is_none() {
            return Err(ServerError::Invalid {
                field: "advertise_host",
                reason: "required when listening on an unspecified address",
            });
        }
        let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| ServerError::Bind {
                    address: config.address,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            address: config.address,
            source,
        })?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let host = match &config.advertise_host {
            Some(host) => format!("{host}:{}", local_addr.port()),
            None => local_addr.to_string(),
        };
        let base_url = format!("{scheme}://{host}");
        let tokens = TokenCache::new(config.token_ttl, config.max_pending_requests);
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let state = Arc::new(State {
            runtime,
            tokens,
            config,
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, connections, state.clone()));
        tracing::info!(%local_addr, tls = scheme == "https", "streaming server listening");
        Ok(Self {
            state,
            base_url,
            local_addr,
            accept,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn register(&self, path: &str, request: PendingRequest) -> Result<String, ServerError> {
        let token = self.state.tokens.insert(request)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Registers an exec and returns the URL its client must use (CRI `Exec`).
    pub fn get_exec(&self, req: ExecRequest) -> Result<String, ServerError> {
        check_container("container_id", &req.container_id)?;
        if req.cmd.is_empty() {
            return Err(ServerError::Invalid {
                field: "cmd",
                reason: "must not be empty",
            });
        }
        check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.register("exec", PendingRequest::Exec(req))
    }

    /// Registers an attach and returns its URL (CRI `Attach`).
    pub fn get_attach(&self, req: AttachRequest) -> Result<String, ServerError> {
        check_container("container_id", &req.container_id)?;
        check_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.register("attach", PendingRequest::Attach(req))
    }

    /// Registers a port forward and returns its URL (CRI `PortForward`).
    pub fn get_port_forward(&self, req: PortForwardRequest) -> Result<String, ServerError> {
        check_container("pod_sandbox_id", &req.pod_sandbox_id)?;
        if req.ports.contains(&0) {
            return Err(ServerError::Invalid {
                field: "ports",
                reason: "port 0 is not a port",
            });
        }
        self.register("portforward", PendingRequest::PortForward(req))
    }

    /// Stops accepting connections (sessions in progress run to their end).
    pub fn shutdown(self) {
        self.accept.abort();
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn check_container(field: &'static str, id: &str) -> Result<(), ServerError> {
    if id.is_empty() {
        return Err(ServerError::Invalid {
            field,
            reason: "must not be empty",
        });
    }
    Ok(())
}

fn check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), ServerError> {
    if tty && stderr {
        return Err(ServerError::Invalid {
            field: "stderr",
            reason: "tty and stderr cannot both be true",
        });
    }
    if !stdin && !stdout && !stderr {
        return Err(ServerError::Invalid {
            field: "stdin",
            reason: "one of stdin, stdout or stderr must be set",
        });
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    connections: Arc<Semaphore>,
    state: Arc<State>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "streaming server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many streaming connections; closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let permit = Arc::new(permit);
            match acceptor {
                None => serve_connection(TokioIo::new(tcp), state, permit).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), state, permit).await,
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "streaming TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "streaming TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, state: Arc<State>, permit: Arc<OwnedSemaphorePermit>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        let permit = permit.clone();
        async move { Ok::<_, Infallible>(route(req, state, permit)) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .with_upgrades()
        .await;
    if let Err(error) = result {
        tracing::debug!(%error, "streaming connection ended");
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    header_tokens(headers.get_all(name).iter().filter_map(|v| v.to_str().ok()))
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    header_values(headers, name.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

fn route(
    req: Request<Incoming>,
    state: Arc<State>,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<Full<Bytes>> {
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => RequestKind::Exec,
        Some("attach") => RequestKind::Attach,
        Some("portforward") => RequestKind::PortForward,
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let token = parts.next().unwrap_or("");
    if token.is_empty() || token.contains('/') {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    let headers = req.headers();
    let transport = if has_token(headers, header::UPGRADE, "websocket") {
        Transport::WebSocket
    } else if has_token(headers, header::UPGRADE, "SPDY/3.1") {
        Transport::Spdy
    } else {
        // Checked before the token is looked up: a plain GET touches nothing.
        return text(
            StatusCode::BAD_REQUEST,
            "streaming requires an upgrade to SPDY/3.1 or websocket",
        );
    };
    let Some(pending) = state.tokens.take(token, kind) else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    match transport {
        Transport::Spdy => upgrade_spdy(req, pending, state, permit),
        Transport::WebSocket => crate::websocket::upgrade(
            req,
            pending,
            state.runtime.clone(),
            permit,
            (
                state.config.session.write_stall_timeout,
                state.config.session.idle_timeout,
            ),
        ),
    }
}

enum Transport {
    Spdy,
    WebSocket,
}

fn upgrade_spdy(
    req: Request<Incoming>,
    pending: PendingRequest,
    state: Arc<State>,
    permit: Arc<OwnedSemaphorePermit>,
) -> Response<Full<Bytes>> {
    let offered = header_values(req.headers(), "x-stream-protocol-version");
    let chosen = match &pending {
        PendingRequest::PortForward(_) => negotiate(&offered, &[((), portforward::spdy::PROTOCOL)])
            .map(|c| c.map(|((), name)| (Protocol::V1, name))),
        _ => {
            let supported: Vec<(Protocol, &str)> =
                Protocol::SPDY.iter().map(|p| (*p, p.name())).collect();
            negotiate(&offered, &supported)
        }
    };
    let (protocol, name) = match chosen {
        Ok(Some((protocol, name))) => (protocol, Some(name)),
        Ok(None) => (Protocol::V1, None),
        Err(message) => {
            tracing::info!(?offered, "refusing a streaming upgrade: no common protocol");
            return text(StatusCode::FORBIDDEN, message);
        }
    };
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = response.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Some(name) = name.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert("x-stream-protocol-version", name);
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(error) => {
                tracing::info!(%error, "streaming upgrade failed");
                return;
            }
        };
        serve_spdy(upgraded, protocol, pending, &state).await;
        drop(permit);
    });
    response
}

async fn serve_spdy<T>(io: T, protocol: Protocol, pending: PendingRequest, state: &State)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let runtime = state.runtime.clone();
    let session = state.config.session.clone();
    let timeout = state.config.stream_creation_timeout;
    match pending {
        PendingRequest::Exec(req) => {
            let opts = StreamOptions {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let span = tracing::info_span!("exec", container_id = %req.container_id);
            remotecommand::spdy::serve(io, protocol, opts, session, timeout, |pio| async move {
                runtime.exec(req, pio).await
            })
            .instrument(span)
            .await;
        }
        PendingRequest::Attach(req) => {
            let opts = StreamOptions {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            };
            let span = tracing::info_span!("attach", container_id = %req.container_id);
            remotecommand::spdy::serve(io, protocol, opts, session, timeout, |pio| async move {
                runtime.attach(req, pio).await
            })
            .instrument(span)
            .await;
        }
        PendingRequest::PortForward(req) => {
            let span = tracing::info_span!("portforward", pod_sandbox_id = %req.pod_sandbox_id);
            portforward::spdy::serve(io, runtime, req.pod_sandbox_id, req.ports, session)
                .instrument(span)
                .await;
        }
    }
}
