//! Client tests: the hybrid vsock handshake against a fake VMM socket, channels
//! to an in-process agent, and `wait_ready` deadlines.

mod common;

use std::time::Duration;

use common::{start_agent, FakeVmm, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use vessel_agent::client::{
    connect_hybrid_vsock, connect_unix, handshake, wait_ready, wait_ready_unix, ClientError,
    HandshakeError, HybridVsock, MAX_REPLY_LEN,
};
use vessel_agent::proto::agent_client::AgentClient;
use vessel_agent::proto::check_response::ServingStatus;
use vessel_agent::proto::health_client::HealthClient;
use vessel_agent::proto::health_server::{Health, HealthServer};
use vessel_agent::proto::{CheckRequest, CheckResponse, VersionRequest};
use vessel_agent::server::HealthService;
use vessel_agent::shutdown::ShutdownSignal;
use vessel_agent::AGENT_API_VERSION;

const PORT: u32 = 1024;

/// Connects through a fake VMM that replies `reply`, expecting a handshake error.
async fn handshake_error(reply: Peer, timeout: Duration) -> HandshakeError {
    let dir = tempfile::tempdir().expect("tempdir");
    let vmm = FakeVmm::start(dir.path().join("vm.sock"), reply);
    let result = HybridVsock::new(&vmm.path, PORT)
        .with_handshake_timeout(timeout)
        .connect()
        .await;
    assert_eq!(vmm.lines(), vec![format!("CONNECT {PORT}\n")]);
    match result {
        Err(ClientError::Handshake { port, source, .. }) => {
            assert_eq!(port, PORT);
            source
        }
        other => panic!("expected a handshake error, got {other:?}"),
    }
}

#[tokio::test]
async fn hybrid_vsock_reaches_the_agent_through_the_vmm_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path()).await;
    let vmm = FakeVmm::start(
        dir.path().join("vm.sock"),
        Peer::Proxy(agent.socket.clone()),
    );

    let channel = connect_hybrid_vsock(&vmm.path, PORT)
        .await
        .expect("connect");
    let version = AgentClient::new(channel)
        .version(VersionRequest {})
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.api_version, AGENT_API_VERSION);
    assert_eq!(vmm.lines(), vec!["CONNECT 1024\n".to_owned()]);
}

#[tokio::test]
async fn handshake_returns_the_host_port_and_leaves_later_bytes_unread() {
    let (mut client, mut vmm) = UnixStream::pair().expect("pair");
    let peer = tokio::spawn(async move {
        let mut line = [0u8; 10];
        vmm.read_exact(&mut line).await.expect("read CONNECT");
        assert_eq!(&line, b"CONNECT 7\n");
        // The guest's first bytes arrive in the same write as the reply.
        vmm.write_all(b"OK 42\nEXTRA").await.expect("write");
        vmm
    });
    let host_port = handshake(&mut client, 7, Duration::from_secs(5))
        .await
        .expect("handshake");
    assert_eq!(host_port, 42);
    let mut rest = [0u8; 5];
    client.read_exact(&mut rest).await.expect("rest");
    assert_eq!(&rest, b"EXTRA");
    drop(peer.await.expect("peer"));
}

#[tokio::test]
async fn handshake_rejects_a_garbage_reply_and_names_it() {
    let err = handshake_error(Peer::Reply(b"NOPE 1\n".to_vec()), Duration::from_secs(5)).await;
    match &err {
        HandshakeError::Unexpected { line } => assert_eq!(line, "NOPE 1"),
        other => panic!("expected Unexpected, got {other:?}"),
    }
    assert!(err.to_string().contains("NOPE 1"), "{err}");
}

#[tokio::test]
async fn handshake_rejects_malformed_ok_lines() {
    for reply in [
        "OK \n",
        "OK abc\n",
        "OK 99999999999\n",
        "OK -1\n",
        "OK 1 \n",
        "ok 1\n",
    ] {
        let err = handshake_error(
            Peer::Reply(reply.as_bytes().to_vec()),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(&err, HandshakeError::Unexpected { line } if format!("{line}\n") == reply),
            "{reply:?} gave {err:?}"
        );
    }
}

#[tokio::test]
async fn handshake_times_out_when_the_vmm_says_nothing() {
    let started = Instant::now();
    let err = handshake_error(Peer::Silent, Duration::from_millis(100)).await;
    assert!(
        matches!(&err, HandshakeError::Timeout { timeout, received } if *timeout == Duration::from_millis(100) && received.is_empty()),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn handshake_times_out_on_a_partial_line_and_shows_it() {
    let err = handshake_error(Peer::Reply(b"OK 12".to_vec()), Duration::from_millis(100)).await;
    assert!(
        matches!(&err, HandshakeError::Timeout { received, .. } if received == "OK 12"),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshake_reports_a_closed_socket() {
    let err = handshake_error(Peer::Close, Duration::from_secs(5)).await;
    assert!(
        matches!(&err, HandshakeError::Closed { received } if received.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshake_bounds_a_very_long_line() {
    let mut reply = vec![b'A'; 100_000];
    reply.push(b'\n');
    let err = handshake_error(Peer::Reply(reply), Duration::from_secs(5)).await;
    match err {
        HandshakeError::TooLong { limit, received } => {
            assert_eq!(limit, MAX_REPLY_LEN);
            assert_eq!(received, "A".repeat(MAX_REPLY_LEN));
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_accepts_a_line_of_exactly_the_limit() {
    // 3 + 28 digits + newline = 32 bytes.
    let fits = format!("OK {:0>28}\n", 5);
    assert_eq!(fits.len(), MAX_REPLY_LEN);
    let (mut client, mut vmm) = UnixStream::pair().expect("pair");
    vmm.write_all(fits.as_bytes()).await.expect("write");
    let port = handshake(&mut client, PORT, Duration::from_secs(5)).await;
    assert_eq!(port.expect("handshake"), 5);

    let too_long = format!("OK {:0>29}\n", 5);
    let (mut client, mut vmm) = UnixStream::pair().expect("pair");
    vmm.write_all(too_long.as_bytes()).await.expect("write");
    let err = handshake(&mut client, PORT, Duration::from_secs(5)).await;
    assert!(
        matches!(err, Err(HandshakeError::TooLong { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn connecting_to_a_missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing.sock");
    let err = connect_hybrid_vsock(&missing, PORT)
        .await
        .expect_err("no socket");
    assert!(
        matches!(&err, ClientError::Connect { path, .. } if *path == missing),
        "{err:?}"
    );
    let err = connect_unix(&missing).await.expect_err("no socket");
    assert!(
        matches!(&err, ClientError::Connect { path, .. } if *path == missing),
        "{err:?}"
    );
}

#[tokio::test]
async fn reconnection_repeats_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path()).await;
    let vmm = FakeVmm::start(
        dir.path().join("vm.sock"),
        Peer::Proxy(agent.socket.clone()),
    );
    let mut client = AgentClient::new(
        connect_hybrid_vsock(&vmm.path, PORT)
            .await
            .expect("connect"),
    );
    client.version(VersionRequest {}).await.expect("first call");

    vmm.kill_connections();
    let mut ok = false;
    for _ in 0..100 {
        if client.version(VersionRequest {}).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no call succeeded after the connection was dropped");
    assert_eq!(vmm.lines(), vec!["CONNECT 1024\n".to_owned(); 2]);
}

#[tokio::test]
async fn unix_client_sees_serving_and_the_server_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_agent(dir.path()).await;
    let mut health = HealthClient::new(connect_unix(&agent.socket).await.expect("connect"));
    let reply = health
        .check(CheckRequest {})
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);

    agent.shutdown.trigger();
    let stopped = tokio::time::timeout(Duration::from_secs(5), agent.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(!agent.socket.exists(), "socket left behind");
}

#[tokio::test]
async fn health_reports_not_serving_once_shutdown_starts() {
    let shutdown = ShutdownSignal::new();
    let health = HealthService::new(shutdown.clone());
    let status =
        |r: Result<Response<CheckResponse>, Status>| r.expect("Check").into_inner().status();
    assert_eq!(
        status(health.check(Request::new(CheckRequest {})).await),
        ServingStatus::Serving
    );
    shutdown.trigger();
    assert_eq!(
        status(health.check(Request::new(CheckRequest {})).await),
        ServingStatus::NotServing
    );
}

#[tokio::test]
async fn wait_ready_gives_up_at_the_deadline_with_the_last_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("vm.sock");
    let started = Instant::now();
    let err = wait_ready(&missing, PORT, started + Duration::from_millis(200))
        .await
        .expect_err("nothing listens");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(195),
        "gave up early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "gave up late: {elapsed:?}"
    );
    let (attempts, last) = not_ready(err);
    assert!(attempts >= 3, "backoff too long: {attempts} attempts");
    assert!(matches!(last, ClientError::Connect { .. }), "{last:?}");
}

#[tokio::test]
async fn wait_ready_reports_a_handshake_failure_as_the_last_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Long enough that an attempt finishes even on a loaded machine.
    let vmm = FakeVmm::start(dir.path().join("vm.sock"), Peer::Reply(b"BAD\n".to_vec()));
    let err = wait_ready(&vmm.path, PORT, Instant::now() + Duration::from_millis(500))
        .await
        .expect_err("VMM refuses");
    let (_, last) = not_ready(err);
    assert!(
        matches!(
            &last,
            ClientError::Handshake { source: HandshakeError::Unexpected { line }, .. } if line == "BAD"
        ),
        "{last:?}"
    );
}

#[tokio::test]
async fn wait_ready_cuts_a_hanging_attempt_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Silent: each handshake would wait its full 1 s timeout.
    let vmm = FakeVmm::start(dir.path().join("vm.sock"), Peer::Silent);
    let started = Instant::now();
    let err = wait_ready(&vmm.path, PORT, started + Duration::from_millis(150))
        .await
        .expect_err("VMM silent");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let (attempts, last) = not_ready(err);
    assert_eq!(attempts, 1);
    assert!(matches!(last, ClientError::Timeout), "{last:?}");
}

#[tokio::test]
async fn wait_ready_with_a_past_deadline_returns_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let err = wait_ready(dir.path().join("vm.sock"), PORT, started)
        .await
        .expect_err("past deadline");
    assert_eq!(not_ready(err).0, 1);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn wait_ready_succeeds_once_a_late_vmm_and_agent_come_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm_sock = dir.path().join("vm.sock");
    let late_dir = dir.path().to_path_buf();
    let late_sock = vm_sock.clone();
    let booting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let agent = start_agent(&late_dir).await;
        let vmm = FakeVmm::start(late_sock, Peer::Proxy(agent.socket.clone()));
        (agent, vmm)
    });
    let started = Instant::now();
    let channel = wait_ready(&vm_sock, PORT, started + Duration::from_secs(10))
        .await
        .expect("ready");
    assert!(started.elapsed() >= Duration::from_millis(150));
    let (_agent, _vmm) = booting.await.expect("boot task");
    AgentClient::new(channel)
        .version(VersionRequest {})
        .await
        .expect("Version over the ready channel");
}

/// A health service stuck in NOT_SERVING.
struct NeverServing;

#[tonic::async_trait]
impl Health for NeverServing {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: ServingStatus::NotServing.into(),
        }))
    }
}

#[tokio::test]
async fn wait_ready_keeps_polling_an_agent_that_is_not_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(NeverServing))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    // A std Instant works as a deadline too.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    let err = wait_ready_unix(&socket, deadline)
        .await
        .expect_err("never serving");
    assert!(err.to_string().contains("not ready"), "{err}");
    let (attempts, last) = not_ready(err);
    assert!(attempts >= 2, "{attempts}");
    assert!(
        matches!(last, ClientError::NotServing(ServingStatus::NotServing)),
        "{last:?}"
    );
}

/// The fields of a `ClientError::NotReady`.
fn not_ready(err: ClientError) -> (u32, ClientError) {
    match err {
        ClientError::NotReady { attempts, last, .. } => (attempts, *last),
        other => panic!("expected NotReady, got {other:?}"),
    }
}
