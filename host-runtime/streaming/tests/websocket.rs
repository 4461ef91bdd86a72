//! remotecommand and portforward over WebSocket, with a client written as client-go's and
//! the JavaScript client's.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::data::{checksum, echo_server, payload};
use support::runtime::LocalRuntime;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use vessel_streaming::{ExecRequest, PortForwardRequest, ServerConfig, StreamingServer};

type Ws = WebSocketStream<TcpStream>;

async fn server() -> (StreamingServer, Arc<LocalRuntime>) {
    let runtime = Arc::new(LocalRuntime::default());
    let server = StreamingServer::start(ServerConfig::default(), runtime.clone())
        .await
        .unwrap();
    (server, runtime)
}

fn exec(cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

async fn connect(url: &str, protocols: &str) -> Result<(Ws, Option<String>), u16> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let host = request.uri().authority().unwrap().to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

/// Reads until the server closes; returns the bytes of each channel.
async fn read_all(ws: &mut Ws, base64: bool) -> HashMap<u8, Vec<u8>> {
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Binary(bytes)) if !base64 => {
                    channels
                        .entry(bytes[0])
                        .or_default()
                        .extend_from_slice(&bytes[1..]);
                }
                Ok(Message::Text(text)) if base64 => {
                    let channel = text.as_bytes()[0] - b'0';
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(&text.as_str()[1..])
                        .unwrap();
                    channels
                        .entry(channel)
                        .or_default()
                        .extend_from_slice(&data);
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(other) => panic!("unexpected message {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("server closes in time");
    channels
}

#[tokio::test]
async fn v5_exec_with_stdin_close_signal() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "cat; echo bye >&2"], true, false))
        .unwrap();
    let (mut ws, protocol) = connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(Message::binary(b"\x00hello ".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(b"\x00world".to_vec()))
        .await
        .unwrap();
    // v5: close stdin; cat sees EOF and the process exits.
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let channels = read_all(&mut ws, false).await;
    assert_eq!(channels[&1], b"hello world");
    assert_eq!(channels[&2], b"bye\n");
    let status: Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn v4_exec_reports_the_exit_code() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "echo out; exit 7"], false, false))
        .unwrap();
    let (mut ws, protocol) = connect(&url, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    let channels = read_all(&mut ws, false).await;
    assert_eq!(channels[&1], b"out\n");
    let status: Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn base64_exec_uses_text_frames() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(
            &["sh", "-c", "printf '\\001\\377binary'"],
            false,
            false,
        ))
        .unwrap();
    let (mut ws, protocol) = connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    let channels = read_all(&mut ws, true).await;
    assert_eq!(channels[&1], b"\x01\xffbinary");
    let status: Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn tty_resize_over_websocket() {
    let (server, runtime) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "read x; echo $x"], true, true))
        .unwrap();
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(Message::binary(
        b"\x04{\"Width\":120,\"Height\":40}".to_vec(),
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.resizes.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resize not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ws.send(Message::binary(b"\x00line\n".to_vec()))
        .await
        .unwrap();
    let channels = read_all(&mut ws, false).await;
    assert_eq!(channels[&1], b"line\n");
    let size = runtime.resizes.lock().unwrap()[0];
    assert_eq!((size.width, size.height), (120, 40));
}

#[tokio::test]
async fn an_unknown_websocket_subprotocol_is_refused() {
    let (server, runtime) = server().await;
    let url = server.get_exec(exec(&["true"], false, false)).unwrap();
    assert_eq!(connect(&url, "v9.channel.k8s.io").await.err(), Some(403));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runtime.finished.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_malformed_websocket_message_drops_the_session() {
    let (server, runtime) = server().await;
    let url = server.get_exec(exec(&["cat"], true, false)).unwrap();
    let (mut ws, _) = connect(&url, "v4.channel.k8s.io").await.unwrap();
    ws.send(Message::binary(Vec::new())).await.unwrap();
    read_all(&mut ws, false).await;
    // The process's stdin ended with the session, so it exits.
    runtime.wait_finished(1, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn websocket_portforward_with_port_prefixes_and_checksums() {
    let (server, _) = server().await;
    let port = echo_server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let (mut ws, protocol) = connect(&format!("{url}?ports={port}"), "v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.channel.k8s.io"));
    // The first message of each channel is the port, little endian.
    let prefix = port.to_le_bytes();
    for channel in [0u8, 1] {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(bytes) => assert_eq!(&bytes[..], &[channel, prefix[0], prefix[1]]),
            other => panic!("{other:?}"),
        }
    }
    let data = payload(4 << 20, 3);
    let (mut sink, mut stream) = ws.split();
    let sent = data.clone();
    let send = tokio::spawn(async move {
        for chunk in sent.chunks(32 * 1024) {
            let mut message = vec![0u8];
            message.extend_from_slice(chunk);
            sink.send(Message::binary(message)).await.unwrap();
        }
        sink
    });
    let mut received = Vec::new();
    while received.len() < data.len() {
        match tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Binary(bytes) => {
                assert_eq!(bytes[0], 0, "data channel");
                received.extend_from_slice(&bytes[1..]);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(checksum(&received), checksum(&data));
    let mut sink = send.await.unwrap();
    sink.send(Message::Close(None)).await.unwrap();
}

#[tokio::test]
async fn websocket_portforward_refuses_ports_not_allowed() {
    let (server, _) = server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![80],
        })
        .unwrap();
    assert_eq!(
        connect(&format!("{url}?ports=81"), "v4.channel.k8s.io")
            .await
            .err(),
        Some(400)
    );
}

#[tokio::test]
async fn an_idle_websocket_session_is_closed() {
    let runtime = Arc::new(LocalRuntime::default());
    let mut config = ServerConfig::default();
    config.session.idle_timeout = Duration::from_millis(300);
    let server = StreamingServer::start(config, runtime).await.unwrap();
    let port = echo_server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![],
        })
        .unwrap();
    let (mut ws, _) = connect(&format!("{url}?ports={port}"), "v4.channel.k8s.io")
        .await
        .unwrap();
    let channels = read_all(&mut ws, false).await;
    // Only the two port prefixes came, then the server closed the idle session.
    assert_eq!(channels[&0], port.to_le_bytes());
    assert_eq!(channels[&1], port.to_le_bytes());
}

#[tokio::test]
async fn stdin_as_text_frames_on_a_binary_protocol() {
    // What the Python client does: write_stdin("...") sends a text frame "\x00...".
    let (server, _) = server().await;
    let url = server.get_exec(exec(&["cat"], true, false)).unwrap();
    let (mut ws, _) = connect(&url, "v5.channel.k8s.io,v4.channel.k8s.io")
        .await
        .unwrap();
    ws.send(Message::text("\u{0}typed text\n")).await.unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let channels = read_all(&mut ws, false).await;
    assert_eq!(channels[&1], b"typed text\n");
}

#[tokio::test]
async fn a_websocket_client_that_never_reads_is_dropped() {
    let runtime = Arc::new(LocalRuntime::default());
    let mut config = ServerConfig::default();
    config.session.write_stall_timeout = Duration::from_secs(1);
    let server = StreamingServer::start(config, runtime.clone())
        .await
        .unwrap();
    let url = server
        .get_exec(exec(
            &["sh", "-c", "head -c 268435456 /dev/zero"],
            false,
            false,
        ))
        .unwrap();
    let (ws, _) = connect(&url, "v4.channel.k8s.io").await.unwrap();
    // Never read; the process must still end (its stdout pipe breaks).
    let done = runtime.wait_finished(1, Duration::from_secs(20)).await;
    assert_eq!(done.len(), 1);
    drop(ws);
}

#[tokio::test]
async fn base64_websocket_portforward() {
    let (server, _) = server().await;
    let port = echo_server().await;
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "pod1".into(),
            ports: vec![port],
        })
        .unwrap();
    let (mut ws, protocol) = connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
    assert_eq!(protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let prefix = b64.encode(port.to_le_bytes());
    for channel in ['0', '1'] {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(text) => assert_eq!(text.as_str(), format!("{channel}{prefix}")),
            other => panic!("{other:?}"),
        }
    }
    ws.send(Message::text(format!(
        "0{}",
        b64.encode(b"ping over base64")
    )))
    .await
    .unwrap();
    match ws.next().await.unwrap().unwrap() {
        Message::Text(text) => {
            assert_eq!(&text.as_str()[..1], "0");
            assert_eq!(
                b64.decode(&text.as_str()[1..]).unwrap(),
                b"ping over base64"
            );
        }
        other => panic!("{other:?}"),
    }
}
