//! remotecommand over SPDY, from the wire up, against real local processes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::runtime::LocalRuntime;
use support::spdy_client::SpdyClient;
use vessel_streaming::{ExecRequest, ServerConfig, StreamingServer};

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

struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    error: Vec<u8>,
}

/// Runs one exec as client-go's v4 executor does: error stream first, then the others.
async fn run_v4(url: &str, stdin: Option<&[u8]>) -> Output {
    let mut client = SpdyClient::connect(url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await;
    assert_eq!(client.protocol.as_deref(), Some("v4.channel.k8s.io"));
    let mut error = client.open(&[("streamType", "error")]).await;
    let input = match stdin {
        Some(_) => Some(client.open(&[("streamType", "stdin")]).await),
        None => None,
    };
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut stderr = client.open(&[("streamType", "stderr")]).await;
    if let (Some(input), Some(data)) = (&input, stdin) {
        input.write(data).await;
        input.close().await;
    }
    let (stdout, stderr) = tokio::join!(stdout.read_to_end(), stderr.read_to_end());
    let error = error.read_to_end().await;
    client.wait_closed(Duration::from_secs(10)).await;
    Output {
        stdout,
        stderr,
        error,
    }
}

#[tokio::test]
async fn exec_with_stdin_stdout_stderr_and_success() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "cat; echo err >&2"], true, false))
        .unwrap();
    let out = run_v4(&url, Some(b"hello from stdin\n")).await;
    assert_eq!(out.stdout, b"hello from stdin\n");
    assert_eq!(out.stderr, b"err\n");
    let status: Value = serde_json::from_slice(&out.error).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn a_non_zero_exit_reaches_the_client_as_a_v4_status() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "echo out; exit 3"], false, false))
        .unwrap();
    let out = run_v4(&url, None).await;
    assert_eq!(out.stdout, b"out\n");
    let status: Value = serde_json::from_slice(&out.error).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn the_tail_of_a_large_output_arrives_before_the_status() {
    let (server, _) = server().await;
    // 4 MiB of output from a process that exits right after writing it.
    let url = server
        .get_exec(exec(
            &["sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' x"],
            false,
            false,
        ))
        .unwrap();
    let out = run_v4(&url, None).await;
    assert_eq!(out.stdout.len(), 4 << 20);
    assert!(out.stdout.iter().all(|b| *b == b'x'));
    let status: Value = serde_json::from_slice(&out.error).unwrap();
    assert_eq!(status["status"], "Success");
}

#[tokio::test]
async fn a_runtime_error_is_a_failure_status() {
    let (server, _) = server().await;
    let mut req = exec(&["true"], false, false);
    req.container_id = "missing".into();
    let url = server.get_exec(req).unwrap();
    let out = run_v4(&url, None).await;
    let status: Value = serde_json::from_slice(&out.error).unwrap();
    assert_eq!(status["reason"], "InternalError");
    assert!(status["message"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn v2_reports_errors_as_text() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "exit 5"], false, false))
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["v2.channel.k8s.io"]).await;
    assert_eq!(client.protocol.as_deref(), Some("v2.channel.k8s.io"));
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut stderr = client.open(&[("streamType", "stderr")]).await;
    stdout.read_to_end().await;
    stderr.read_to_end().await;
    let text = String::from_utf8(error.read_to_end().await).unwrap();
    assert_eq!(
        text,
        "command terminated with non-zero exit code: exit status 5"
    );
}

#[tokio::test]
async fn tty_resizes_reach_the_runtime() {
    let (server, runtime) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "read line; echo got $line"], true, true))
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let resize = client.open(&[("streamType", "resize")]).await;
    // client-go writes one JSON object per size, each followed by a newline.
    resize
        .write(b"{\"Width\":80,\"Height\":24}\n{\"Width\":1")
        .await;
    resize.write(b"32,\"Height\":43}\n").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.resizes.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resizes not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stdin.write(b"done\n").await;
    assert_eq!(stdout.read_to_end().await, b"got done\n");
    let status: Value = serde_json::from_slice(&error.read_to_end().await).unwrap();
    assert_eq!(status["status"], "Success");
    let sizes = runtime.resizes.lock().unwrap().clone();
    assert_eq!((sizes[0].width, sizes[0].height), (80, 24));
    assert_eq!((sizes[1].width, sizes[1].height), (132, 43));
}

#[tokio::test]
async fn a_client_naming_no_version_gets_the_first_protocol() {
    let (server, _) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "echo legacy; exit 2"], false, false))
        .unwrap();
    let mut client = SpdyClient::connect(&url, &[]).await;
    assert_eq!(client.protocol, None, "no version header in the reply");
    let mut error = client.open(&[("streamType", "error")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let mut stderr = client.open(&[("streamType", "stderr")]).await;
    assert_eq!(stdout.read_to_end().await, b"legacy\n");
    stderr.read_to_end().await;
    let text = String::from_utf8(error.read_to_end().await).unwrap();
    assert!(text.contains("exit status 2"), "{text}");
}

#[tokio::test]
async fn v3_has_resize_but_text_errors() {
    let (server, runtime) = server().await;
    let url = server
        .get_exec(exec(&["sh", "-c", "read x"], true, true))
        .unwrap();
    let mut client = SpdyClient::connect(&url, &["v3.channel.k8s.io", "v2.channel.k8s.io"]).await;
    assert_eq!(client.protocol.as_deref(), Some("v3.channel.k8s.io"));
    let mut error = client.open(&[("streamType", "error")]).await;
    let stdin = client.open(&[("streamType", "stdin")]).await;
    let mut stdout = client.open(&[("streamType", "stdout")]).await;
    let resize = client.open(&[("streamType", "resize")]).await;
    resize.write(b"{\"Width\":10,\"Height\":5}").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while runtime.resizes.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resize not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stdin.write(b"x\n").await;
    stdout.read_to_end().await;
    assert!(
        error.read_to_end().await.is_empty(),
        "v3 success writes nothing"
    );
}
