//! The `vessel-agent` binary run as an ordinary process on a Unix socket.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::time::Instant;
use vessel_agent::client::{connect_unix, wait_ready_unix};
use vessel_agent::proto::agent_client::AgentClient;
use vessel_agent::proto::check_response::ServingStatus;
use vessel_agent::proto::health_client::HealthClient;
use vessel_agent::proto::{CheckRequest, ShutdownRequest, VersionRequest};
use vessel_agent::{AGENT_API_VERSION, AGENT_VERSION};

const AGENT: &str = env!("CARGO_BIN_EXE_vessel-agent");

/// A running agent process; killed if the test ends before it exits.
struct AgentProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl AgentProcess {
    fn spawn_with(dir: TempDir, args: &[&str]) -> Self {
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let stderr = File::create(&log).expect("log file");
        let child = Command::new(AGENT)
            .args(args)
            .arg("--unix")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn vessel-agent");
        Self {
            child,
            socket,
            log,
            _dir: dir,
        }
    }

    fn spawn() -> Self {
        Self::spawn_with(tempfile::tempdir().expect("tempdir"), &[])
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Err(err) = wait_ready_unix(&self.socket, deadline).await {
            panic!("agent not ready: {err:?}\nlog:\n{}", self.log_text());
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, failing the test after 10 s.
    async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_kernel_release() -> String {
    nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn serves_health_version_and_shutdown_then_exits_zero() {
    let mut agent = AgentProcess::spawn();
    agent.ready().await;
    let channel = connect_unix(&agent.socket).await.expect("connect");

    let health = HealthClient::new(channel.clone())
        .check(CheckRequest {})
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let mut client = AgentClient::new(channel);
    let version = client
        .version(VersionRequest {})
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.agent_version, AGENT_VERSION);
    assert_eq!(version.api_version, AGENT_API_VERSION);
    assert_eq!(version.kernel_release, host_kernel_release());
    assert!(!version.pid1);
    let cpus = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .expect("sysconf")
        .expect("a CPU count");
    assert_eq!(i64::from(version.online_cpus), cpus);

    client
        .shutdown(ShutdownRequest {})
        .await
        .expect("Shutdown reply arrives before the agent exits");
    let status = agent.exit_status().await;
    let log = agent.log_text();
    assert!(status.success(), "exit {status:?}\nlog:\n{log}");
    assert!(!agent.socket.exists(), "socket left behind");
    for line in [
        "vessel-agent starting",
        "listening on unix socket",
        "shutdown requested",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
}

#[tokio::test]
async fn sigterm_stops_it_gracefully() {
    let mut agent = AgentProcess::spawn();
    agent.ready().await;
    let pid = Pid::from_raw(i32::try_from(agent.child.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("kill");
    let status = agent.exit_status().await;
    assert!(
        status.success(),
        "exit {status:?}\nlog:\n{}",
        agent.log_text()
    );
}

/// A socket file as a crashed run leaves it: bound, nobody listening. Made
/// with socket+bind and no listen, not a dropped `UnixListener`: a process
/// another test forks meanwhile would hold that listener open (fds are
/// copied at fork), and the agent would then rightly find it in use. The
/// VMM's tests have the same helper (`vmm/src/test_sockets.rs`); the two
/// crates share no test code.
fn stale_socket(path: &std::path::Path) {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &UnixAddr::new(path).expect("address"),
    )
    .expect("bind");
}

#[tokio::test]
async fn replaces_a_stale_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    stale_socket(&dir.path().join("agent.sock"));
    let agent = AgentProcess::spawn_with(dir, &[]);
    agent.ready().await;
}

#[tokio::test]
async fn refuses_a_socket_something_listens_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = UnixListener::bind(dir.path().join("agent.sock")).expect("bind");
    let mut agent = AgentProcess::spawn_with(dir, &[]);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(1));
    assert!(
        agent.log_text().contains("is in use"),
        "{}",
        agent.log_text()
    );
    // The first owner still has its socket.
    std::os::unix::net::UnixStream::connect(&agent.socket).expect("connect");
    assert!(listener.accept().is_ok());
}

#[tokio::test]
async fn refuses_to_replace_a_file_that_is_not_a_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("agent.sock"), b"keep me").expect("write");
    let mut agent = AgentProcess::spawn_with(dir, &[]);
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(std::fs::read(&agent.socket).expect("read"), b"keep me");
    assert!(
        agent.log_text().contains("is not a socket"),
        "{}",
        agent.log_text()
    );
}

#[tokio::test]
async fn unix_and_vsock_port_conflict() {
    let mut agent = AgentProcess::spawn_with(
        tempfile::tempdir().expect("tempdir"),
        &["--vsock-port", "5"],
    );
    let status = agent.exit_status().await;
    assert_eq!(status.code(), Some(2), "{}", agent.log_text());
}
