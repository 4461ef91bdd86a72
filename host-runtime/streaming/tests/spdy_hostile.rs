//! Bad input over SPDY: tokens, subprotocols, zlib bombs, malformed frames, stream floods,
//! stalled clients; and flow control.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use support::http;
use support::runtime::LocalRuntime;
use support::spdy_client::{upgrade, SpdyClient};
use tokio::io::AsyncWriteExt;
use vessel_streaming::spdy::frame::Frame;
use vessel_streaming::spdy::header_block::{HeaderEncoder, Headers};
use vessel_streaming::spdy::session::SessionConfig;
use vessel_streaming::{AttachRequest, ExecRequest, ServerConfig, StreamingServer};

async fn server_with(config: ServerConfig) -> (StreamingServer, Arc<LocalRuntime>) {
    let runtime = Arc::new(LocalRuntime::default());
    let server = StreamingServer::start(config, runtime.clone())
        .await
        .unwrap();
    (server, runtime)
}

fn exec(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    }
}

#[tokio::test]
async fn unknown_used_and_misrouted_tokens_get_404_and_touch_nothing() {
    let (server, runtime) = server_with(ServerConfig::default()).await;
    let url = server.get_exec(exec(&["true"])).unwrap();
    let (_, reply) = upgrade(&url.replace("/exec/", "/exec/x"), &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 404);
    // The exec token on the attach path: 404, and the token still works on its own path.
    let (_, reply) = upgrade(&url.replace("/exec/", "/attach/"), &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 404);
    // A request without an upgrade is refused before the token is looked up.
    let (_, reply) = http::request(&url, "GET", &[]).await;
    assert_eq!(reply.status, 400);
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let _stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    stdout.read_to_end().await;
    error.read_to_end().await;
    // Used.
    let (_, reply) = upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        runtime.wait_finished(1, Duration::from_secs(5)).await.len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        runtime.finished.lock().unwrap().len(),
        1,
        "a bad token ran something"
    );
}

#[tokio::test]
async fn an_expired_token_gets_404() {
    let config = ServerConfig {
        token_ttl: Duration::from_millis(200),
        ..Default::default()
    };
    let (server, runtime) = server_with(config).await;
    let late = server.get_exec(exec(&["true"])).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, reply) = upgrade(&late, &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 404);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runtime.finished.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_subprotocol_is_refused_with_403() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let url = server.get_exec(exec(&["true"])).unwrap();
    let (_, reply) = upgrade(&url, &["v9.channel.k8s.io"]).await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("v4.channel.k8s.io"), "{}", reply.body);
}

#[tokio::test]
async fn requests_that_cri_forbids_are_refused_at_registration() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let mut tty_and_stderr = exec(&["true"]);
    tty_and_stderr.tty = true;
    tty_and_stderr.stderr = true;
    assert!(server
        .get_exec(tty_and_stderr)
        .unwrap_err()
        .to_string()
        .contains("stderr"));
    assert!(server
        .get_exec(exec(&[]))
        .unwrap_err()
        .to_string()
        .contains("cmd"));
    let none = AttachRequest {
        container_id: "c".into(),
        tty: false,
        stdin: false,
        stdout: false,
        stderr: false,
    };
    assert!(server.get_attach(none).is_err());
}

async fn open_raw_session(server: &StreamingServer) -> SpdyClient {
    let url = server.get_exec(exec(&["cat"])).unwrap();
    SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await
}

#[tokio::test]
async fn a_zlib_bomb_drops_the_session() {
    let (server, runtime) = server_with(ServerConfig::default()).await;
    let mut client = open_raw_session(&server).await;
    let mut headers = Headers::new();
    headers.insert("streamtype", &"\0".repeat(4 << 20));
    let block = HeaderEncoder::new().unwrap().encode(&headers).unwrap();
    assert!(block.len() < 16 * 1024);
    client
        .send_frame(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block: block,
        })
        .await;
    assert_eq!(
        client.wait_closed(Duration::from_secs(5)).await,
        Some(1),
        "GOAWAY PROTOCOL_ERROR"
    );
    assert!(runtime.finished.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_malformed_frame_drops_the_session() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let mut client = open_raw_session(&server).await;
    let _error = client.open(&[("streamType", "error")]).await;
    // A PING of 3 bytes.
    client
        .send_raw(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 0, 0, 1])
        .await;
    assert_eq!(client.wait_closed(Duration::from_secs(5)).await, Some(1));
}

#[tokio::test]
async fn reused_or_even_stream_ids_drop_the_session() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let url = server.get_exec(exec(&["cat"])).unwrap();
    let (mut tcp, reply) = upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 101);
    let mut enc = HeaderEncoder::new().unwrap();
    let mut out = BytesMut::new();
    for id in [3, 3] {
        let header_block = enc.encode(&Headers::new()).unwrap();
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block,
        }
        .encode(&mut out);
    }
    tcp.write_all(&out).await.unwrap();
    let mut client = SpdyClient::over(tcp, None);
    assert_eq!(client.wait_closed(Duration::from_secs(5)).await, Some(1));
}

#[tokio::test]
async fn streams_over_the_cap_are_refused() {
    let config = ServerConfig {
        session: SessionConfig {
            max_streams: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let (server, _) = server_with(config).await;
    let mut client = open_raw_session(&server).await;
    for _ in 0..4 {
        client.open(&[("streamType", "bogus")]).await;
    }
    for _ in 0..20 {
        client.open_no_wait(&[("streamType", "bogus")]).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.resets().len() < 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let resets = client.resets();
    assert_eq!(resets.len(), 20, "{resets:?}");
    assert!(
        resets.iter().all(|(_, status)| *status == 3),
        "REFUSED_STREAM"
    );
}

#[tokio::test]
async fn the_server_sends_window_updates_as_it_consumes_stdin() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let url = server.get_exec(exec(&["sh", "-c", "wc -c"])).unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let chunk = vec![7u8; 32 * 1024];
    for _ in 0..32 {
        stdin.write(&chunk).await;
    }
    stdin.close().await;
    assert_eq!(
        String::from_utf8(stdout.read_to_end().await)
            .unwrap()
            .trim(),
        "1048576"
    );
    error.read_to_end().await;
    assert!(
        client.window_updates() >= 8,
        "{} WINDOW_UPDATEs for 1 MiB",
        client.window_updates()
    );
}

#[tokio::test]
async fn an_honoured_peer_window_stops_output_until_window_update() {
    let config = ServerConfig {
        session: SessionConfig {
            honor_peer_window: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (server, _) = server_with(config).await;
    let mut req = exec(&["sh", "-c", "head -c 200000 /dev/zero"]);
    req.stdin = false;
    let url = server.get_exec(req).unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut got = 0;
    while got < 65536 {
        got += stdout.read().await.expect("data").len();
    }
    assert_eq!(got, 65536, "exactly the initial window");
    let more = tokio::time::timeout(Duration::from_millis(300), stdout.read()).await;
    assert!(more.is_err(), "no data beyond the window");
    client
        .send_frame(Frame::WindowUpdate {
            stream_id: stdout.id,
            delta: 1 << 20,
        })
        .await;
    got += stdout.read_to_end().await.len();
    assert_eq!(got, 200000);
    error.read_to_end().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_and_others_are_unaffected() {
    let config = ServerConfig {
        session: SessionConfig {
            write_stall_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let (server, runtime) = server_with(config).await;
    // The stalled client: opens its streams by hand and never reads the socket.
    let mut req = exec(&["sh", "-c", "head -c 268435456 /dev/zero"]);
    req.stdin = false;
    let url = server.get_exec(req).unwrap();
    let (mut tcp, reply) = upgrade(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(reply.status, 101);
    let mut enc = HeaderEncoder::new().unwrap();
    let mut out = BytesMut::new();
    for (id, kind) in [(1, "error"), (3, "stdout")] {
        let mut h = Headers::new();
        h.insert("streamType", kind);
        let header_block = enc.encode(&h).unwrap();
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            header_block,
        }
        .encode(&mut out);
    }
    tcp.write_all(&out).await.unwrap();
    // Meanwhile another session works normally.
    let other = server.get_exec(exec(&["cat"])).unwrap();
    let mut client = SpdyClient::connect(&other, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    stdin.write(b"still fine").await;
    stdin.close().await;
    assert_eq!(stdout.read_to_end().await, b"still fine");
    error.read_to_end().await;
    // The stalled session's process is not blocked forever: its output pipe breaks.
    let done = runtime.wait_finished(2, Duration::from_secs(20)).await;
    assert_eq!(done.len(), 2, "{done:?}");
    drop(tcp);
}

#[tokio::test]
async fn concurrent_sessions_keep_their_data_apart() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let url = server.get_exec(exec(&["cat"])).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
            let mut error = client.open(&[("streamType", "error")]).await;
            let stdin = client.open(&[("streamType", "stdin")]).await;
            let mut stdout = client.open(&[("streamType", "stdout")]).await;
            let payload = format!("session {i} ").repeat(10_000);
            stdin.write(payload.as_bytes()).await;
            stdin.close().await;
            assert_eq!(stdout.read_to_end().await, payload.as_bytes());
            error.read_to_end().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn client_pings_are_echoed_and_unknown_control_frames_ignored() {
    let (server, _) = server_with(ServerConfig::default()).await;
    let client = open_raw_session(&server).await;
    client.send_frame(Frame::Ping { id: 7 }).await;
    // Control frame type 0x00ff with a payload: unknown, ignored per the draft.
    client
        .send_raw(&[0x80, 0x03, 0x00, 0xff, 0x00, 0x00, 0x00, 0x02, 0xab, 0xcd])
        .await;
    client.send_frame(Frame::Ping { id: 9 }).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.pings().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "pings not echoed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.pings(), vec![7, 9]);
}

#[tokio::test]
async fn an_idle_session_is_closed_but_a_busy_one_is_not() {
    let config = ServerConfig {
        session: SessionConfig {
            idle_timeout: Duration::from_millis(400),
            ..Default::default()
        },
        ..Default::default()
    };
    let (server, _) = server_with(config).await;
    // Busy: output every 100 ms for longer than the idle timeout, no client traffic.
    let mut req = exec(&[
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do echo $i; sleep 0.1; done",
    ]);
    req.stdin = false;
    let url = server.get_exec(req).unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    assert_eq!(stdout.read_to_end().await, b"1\n2\n3\n4\n5\n6\n7\n8\n");
    let status: serde_json::Value = serde_json::from_slice(&error.read_to_end().await).unwrap();
    assert_eq!(status["status"], "Success");
    // Idle: a portforward session that never forwards anything.
    let url = server
        .get_port_forward(vessel_streaming::PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![],
        })
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["portforward.k8s.io"]).await;
    assert_eq!(
        client.wait_closed(Duration::from_secs(5)).await,
        Some(0),
        "GOAWAY OK"
    );
}

#[tokio::test]
async fn settings_change_the_honoured_initial_window() {
    use vessel_streaming::spdy::frame::{Setting, SETTINGS_INITIAL_WINDOW_SIZE};
    let config = ServerConfig {
        session: SessionConfig {
            honor_peer_window: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let (server, _) = server_with(config).await;
    let mut req = exec(&["sh", "-c", "head -c 100000 /dev/zero"]);
    req.stdin = false;
    let url = server.get_exec(req).unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let window = Setting {
        flags: 0,
        id: SETTINGS_INITIAL_WINDOW_SIZE,
        value: 16384,
    };
    client
        .send_frame(Frame::Settings {
            clear: false,
            entries: vec![window],
        })
        .await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut got = 0;
    while got < 16384 {
        got += stdout.read().await.expect("data").len();
    }
    assert_eq!(got, 16384, "exactly the window from SETTINGS");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stdout.read())
            .await
            .is_err()
    );
    client
        .send_frame(Frame::WindowUpdate {
            stream_id: stdout.id,
            delta: 1 << 20,
        })
        .await;
    got += stdout.read_to_end().await.len();
    assert_eq!(got, 100000);
    error.read_to_end().await;
}
