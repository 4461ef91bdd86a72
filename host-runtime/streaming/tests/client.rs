//! The client library (`vessel_streaming::client`) against the server, over real
//! sockets, with the stand-in runtime's real local processes.

mod support;

use std::sync::Arc;

use support::runtime::LocalRuntime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vessel_streaming::client::{self, ClientError, PortForwarder, SessionIo};
use vessel_streaming::{
    ExecRequest, PortForwardRequest, ServerConfig, StreamingServer, TerminalSize,
};

async fn server() -> (StreamingServer, Arc<LocalRuntime>) {
    let runtime = Arc::new(LocalRuntime::default());
    let server = StreamingServer::start(ServerConfig::default(), runtime.clone())
        .await
        .unwrap();
    (server, runtime)
}

fn exec(cmd: &str, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        tty,
        stdin: true,
        stdout: true,
        stderr: !tty,
    }
}

/// A pipe whose far end the test reads after the session.
fn sink() -> (Box<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
    let (a, b) = tokio::io::duplex(16 << 20);
    (Box::new(a), b)
}

async fn read_all(mut from: tokio::io::DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    from.read_to_end(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn exec_streams_stdin_stdout_stderr_and_the_exit_code() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec("cat; echo oops >&2; exit 3", false))
        .unwrap();
    let (out, out_far) = sink();
    let (err, err_far) = sink();
    let status = client::exec(
        &url,
        SessionIo {
            stdin: Some(Box::new(&b"hello\n"[..])),
            stdout: Some(out),
            stderr: Some(err),
            ..SessionIo::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(status.code, 3);
    assert_eq!(read_all(out_far).await, b"hello\n");
    assert_eq!(read_all(err_far).await, b"oops\n");
}

#[tokio::test]
async fn exec_success_and_resizes_reach_the_runtime() {
    let (server, runtime) = server().await;
    let url = server
        .get_exec(exec("read line; echo $line", true))
        .unwrap();
    let (out, out_far) = sink();
    let (sizes, resize) = tokio::sync::mpsc::channel(4);
    sizes
        .send(TerminalSize {
            width: 100,
            height: 30,
        })
        .await
        .unwrap();
    // stdin is sent only after the resize had time to go first.
    let (mut stdin, stdin_far) = tokio::io::duplex(1024);
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stdin.write_all(b"done\n").await.unwrap();
    });
    let status = client::exec(
        &url,
        SessionIo {
            stdin: Some(Box::new(stdin_far)),
            stdout: Some(out),
            tty: true,
            resize: Some(resize),
            ..SessionIo::default()
        },
    )
    .await
    .unwrap();
    feeder.await.unwrap();
    assert_eq!(status.code, 0);
    assert_eq!(read_all(out_far).await, b"done\n");
    assert_eq!(
        runtime.resizes.lock().unwrap().first().copied(),
        Some(TerminalSize {
            width: 100,
            height: 30
        })
    );
}

#[tokio::test]
async fn a_used_url_is_refused_with_404() {
    let (server, _) = server().await;
    let url = server
        .get_exec(ExecRequest {
            stdin: false,
            stderr: false,
            ..exec("true", false)
        })
        .unwrap();
    let io = || SessionIo {
        stdout: Some(sink().0),
        ..SessionIo::default()
    };
    client::exec(&url, io()).await.unwrap();
    match client::exec(&url, io()).await {
        Err(ClientError::Refused { status: 404, .. }) => {}
        other => panic!("expected 404, got {:?}", other.map(|s| s.code)),
    }
}

#[tokio::test]
async fn port_forward_echoes_through_several_connections() {
    let (server, _) = server().await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let url = server
        .get_port_forward(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![port],
        })
        .unwrap();
    let forwarder = Arc::new(PortForwarder::connect(&url).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..3u8 {
        let forwarder = forwarder.clone();
        tasks.push(tokio::spawn(async move {
            let (local, mut far) = tokio::io::duplex(1 << 20);
            let data = vec![i; 1 << 20];
            let expected = data.clone();
            let user = tokio::spawn(async move {
                far.write_all(&data).await.unwrap();
                far.shutdown().await.unwrap();
                let mut back = Vec::new();
                far.read_to_end(&mut back).await.unwrap();
                back
            });
            forwarder.forward(port, local).await.unwrap();
            assert_eq!(user.await.unwrap(), expected);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A port the request did not allow fails on the error stream.
    let (local, _far) = tokio::io::duplex(1024);
    let refused = forwarder.forward(port.wrapping_add(1).max(1), local).await;
    assert!(
        matches!(refused, Err(ClientError::Failure(_))),
        "{refused:?}"
    );
}
