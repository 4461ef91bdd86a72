//! The container engine end to end: the `vessel-agent` binary on a Unix socket,
//! run as root in its own mount and pid namespaces (`unshare`), creating
//! containers from a busybox rootfs built from Debian's `busybox-static`.
//!
//! Skipped (with a note) when not root or when `unshare`/`/bin/busybox` are missing.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::Code;
use vessel_agent::client::Channel;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::{
    ContainerStatus, CreateContainerRequest, DeleteContainerRequest, ListContainersRequest,
    SignalContainerRequest, StartContainerRequest, WaitContainerRequest, WaitContainerResponse,
};

use common::{build_busybox_rootfs, spawn_agent, BUSYBOX};

const APPLETS: &[&str] = &[
    "sh", "true", "echo", "sleep", "hostname", "touch", "id", "cat", "grep", "ls",
];

/// Whether this machine can run these tests; prints why not. In CI (where
/// tests/deps.sh installs busybox-static and runs as root) a missing
/// prerequisite is a failure, never a skip.
fn supported() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = Path::new(BUSYBOX).exists() && Path::new("/usr/bin/unshare").exists();
    if !root || !tools {
        let why = format!("needs root, /usr/bin/unshare and {BUSYBOX} (busybox-static)");
        assert!(
            std::env::var_os("CI").is_none(),
            "container tests cannot run in CI: {why}"
        );
        eprintln!("skipped: {why}");
    }
    root && tools
}

/// An agent in its own mount + pid namespaces, and a busybox rootfs.
struct Agent {
    child: Child,
    dir: TempDir,
    client: ContainersClient<Channel>,
}

impl Agent {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        build_rootfs(&dir.path().join("rootfs"));
        let (child, channel) = spawn_agent(
            dir.path(),
            &["--mount", "--pid"],
            "",
            &[],
            Duration::from_secs(20),
        )
        .await;
        Self {
            child,
            dir,
            client: ContainersClient::new(channel),
        }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn out(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.out"))
    }

    fn err(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.err"))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn request(&self, id: &str, spec: &Value) -> CreateContainerRequest {
        CreateContainerRequest {
            container_id: id.to_owned(),
            oci_spec_json: spec.to_string(),
            rootfs: self.rootfs().display().to_string(),
            stdout_path: self.out(id).display().to_string(),
            stderr_path: self.err(id).display().to_string(),
            ..Default::default()
        }
    }

    async fn create(&mut self, id: &str, spec: &Value) -> Result<u32, tonic::Status> {
        let req = self.request(id, spec);
        self.client.create(req).await.map(|r| r.into_inner().pid)
    }

    async fn start_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.client.start(req).await.map(drop)
    }

    async fn wait(&mut self, id: &str) -> WaitContainerResponse {
        let req = WaitContainerRequest {
            container_id: id.to_owned(),
        };
        match tokio::time::timeout(Duration::from_secs(20), self.client.wait(req)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => panic!("wait {id}: {status:?}\n{}", self.log()),
            Err(_) => panic!("wait {id}: timed out\n{}", self.log()),
        }
    }

    async fn delete(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = DeleteContainerRequest {
            container_id: id.to_owned(),
        };
        self.client.delete(req).await.map(drop)
    }

    /// Runs a container to completion: its exit and stdout, stderr.
    async fn run(&mut self, id: &str, spec: &Value) -> (WaitContainerResponse, String, String) {
        if let Err(status) = self.create(id, spec).await {
            panic!("create {id}: {status:?}\n{}", self.log());
        }
        if let Err(status) = self.start_container(id).await {
            panic!("start {id}: {status:?}\n{}", self.log());
        }
        let exit = self.wait(id).await;
        self.delete(id).await.expect("delete");
        let out = fs::read_to_string(self.out(id)).unwrap_or_default();
        let err = fs::read_to_string(self.err(id)).unwrap_or_default();
        (exit, out, err)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM lets unshare --kill-child SIGKILL the namespace's init, and with it everything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox rootfs plus a second user and secrets to mask or hide.
fn build_rootfs(root: &Path) {
    build_busybox_rootfs(root, APPLETS);
    fs::create_dir_all(root.join("secret")).expect("mkdir");
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").expect("group");
    fs::write(root.join("etc/secret-file"), "s3cret\n").expect("secret");
    fs::write(root.join("secret/inside"), "hidden\n").expect("secret dir");
}

/// A spec close to what vesseld sends: default mounts, masked and read-only paths.
fn spec(args: &[&str]) -> Value {
    let caps = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/bin", "HOME=/"],
            "cwd": "/",
            "noNewPrivileges": true,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": []
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }]
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "vessel-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": ["/proc/kcore", "/etc/secret-file", "/secret"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

macro_rules! agent_or_skip {
    () => {{
        if !supported() {
            return;
        }
        Agent::start().await
    }};
}

#[tokio::test]
async fn exit_codes_follow_the_process() {
    let mut agent = agent_or_skip!();
    let (exit, _, _) = agent.run("true", &spec(&["true"])).await;
    assert_eq!((exit.exit_code, exit.signal), (0, 0));
    assert!(exit.started_at > 0 && exit.finished_at >= exit.started_at);
    assert!(!exit.oom_killed);
    let (exit, _, _) = agent.run("exit3", &spec(&["sh", "-c", "exit 3"])).await;
    assert_eq!((exit.exit_code, exit.signal), (3, 0));
}

#[tokio::test]
async fn sigkill_reports_137() {
    let mut agent = agent_or_skip!();
    agent
        .create("sleeper", &spec(&["sleep", "100"]))
        .await
        .expect("create");
    agent.start_container("sleeper").await.expect("start");
    let req = SignalContainerRequest {
        container_id: "sleeper".into(),
        signal: 9,
    };
    agent.client.signal(req).await.expect("signal");
    let exit = agent.wait("sleeper").await;
    assert_eq!((exit.exit_code, exit.signal), (137, 9));
    // Signalling an exited container is a precondition failure.
    let req = SignalContainerRequest {
        container_id: "sleeper".into(),
        signal: 15,
    };
    let status = agent.client.signal(req).await.expect_err("exited");
    assert_eq!(status.code(), Code::FailedPrecondition);
    agent.delete("sleeper").await.expect("delete");
}

#[tokio::test]
async fn stdout_hostname_and_pid_namespace() {
    let mut agent = agent_or_skip!();
    let (exit, out, _) = agent.run("echo", &spec(&["echo", "hello"])).await;
    assert_eq!((exit.exit_code, out.as_str()), (0, "hello\n"));
    let (_, out, _) = agent.run("host", &spec(&["hostname"])).await;
    assert_eq!(out, "vessel-test\n");
    let (_, out, _) = agent.run("pid", &spec(&["sh", "-c", "echo $$"])).await;
    assert_eq!(out, "1\n");
}

#[tokio::test]
async fn rootfs_is_readonly_and_masked_paths_are_hidden() {
    let mut agent = agent_or_skip!();
    let (exit, _, err) = agent.run("ro", &spec(&["touch", "/x"])).await;
    assert_ne!(exit.exit_code, 0);
    assert!(err.contains("Read-only"), "stderr: {err}");
    assert!(!agent.rootfs().join("x").exists());
    // /tmp is its own writable tmpfs.
    let (exit, _, _) = agent.run("tmp", &spec(&["touch", "/tmp/x"])).await;
    assert_eq!(exit.exit_code, 0);
    let script = "cat /etc/secret-file; cat /secret/inside; echo done";
    let (_, out, _) = agent.run("masked", &spec(&["sh", "-c", script])).await;
    assert_eq!(out, "done\n", "masked contents leaked");
    let (exit, _, _) = agent
        .run(
            "rosys",
            &spec(&["sh", "-c", "echo 1 > /proc/sys/kernel/ns_last_pid"]),
        )
        .await;
    assert_ne!(exit.exit_code, 0, "/proc/sys is writable");
}

#[tokio::test]
async fn user_groups_capabilities_and_limits() {
    let mut agent = agent_or_skip!();
    let mut s = spec(&[
        "sh",
        "-c",
        "id -u; id -g; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ulimit -n",
    ]);
    s["process"]["user"] = json!({ "uid": 1000, "gid": 1000, "additionalGids": [2000] });
    // A non-root process keeps capabilities across exec only through the ambient set.
    let caps = s["process"]["capabilities"]["bounding"].clone();
    s["process"]["capabilities"]["inheritable"] = caps.clone();
    s["process"]["capabilities"]["ambient"] = caps;
    let (exit, out, err) = agent.run("user", &s).await;
    assert_eq!(exit.exit_code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["1000", "1000", "1000 2000"], "{out}");
    // CHOWN (0) + KILL (5) + NET_BIND_SERVICE (10) = 0x421.
    assert!(out.contains("CapEff:\t0000000000000421"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000421"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(lines.last(), Some(&"1024"), "{out}");
}

#[tokio::test]
async fn delete_kills_every_process_of_the_container() {
    let mut agent = agent_or_skip!();
    let script = "sleep 987654 & exec sleep 987655";
    agent
        .create("tree", &spec(&["sh", "-c", script]))
        .await
        .expect("create");
    agent.start_container("tree").await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleepers().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "container processes never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let list = agent
        .client
        .list(ListContainersRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.containers.len(), 1);
    assert_eq!(list.containers[0].status(), ContainerStatus::Running);
    agent.delete("tree").await.expect("delete");
    assert!(sleepers().is_empty(), "left behind: {:?}", sleepers());
    let list = agent
        .client
        .list(ListContainersRequest {})
        .await
        .expect("list");
    assert!(list.into_inner().containers.is_empty());
    // Deleting a created, never started container works too.
    agent
        .create("idle", &spec(&["true"]))
        .await
        .expect("create");
    agent.delete("idle").await.expect("delete created");
}

/// Pids of this test's `sleep 98765x` processes, zombies included.
fn sleepers() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|pid: &u32| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("98765"))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_leave_nothing() {
    let mut agent = agent_or_skip!();
    let status = agent.start_container("nope").await.expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("nope"));
    let status = agent.delete("nope").await.expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);
    let req = WaitContainerRequest {
        container_id: "nope".into(),
    };
    let status = agent.client.wait(req).await.expect_err("unknown id");
    assert_eq!(status.code(), Code::NotFound);

    agent.create("dup", &spec(&["true"])).await.expect("create");
    let status = agent
        .create("dup", &spec(&["true"]))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = agent
        .client
        .signal(SignalContainerRequest {
            container_id: "dup".into(),
            signal: 9,
        })
        .await
        .expect_err("not started");
    assert_eq!(status.code(), Code::FailedPrecondition);
    agent.delete("dup").await.expect("delete");

    let mut req = agent.request("norootfs", &spec(&["true"]));
    req.rootfs = "/nonexistent/rootfs".into();
    let status = agent.client.create(req).await.expect_err("missing rootfs");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("/nonexistent/rootfs"),
        "{status:?}"
    );

    let req = agent.request("../evil", &spec(&["true"]));
    let status = agent.client.create(req).await.expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("container_id"), "{status:?}");

    let mut req = agent.request("badspec", &spec(&["true"]));
    req.oci_spec_json = "{\"ociVersion\": 3}".into();
    let status = agent.client.create(req).await.expect_err("bad spec");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("oci_spec_json"), "{status:?}");

    let status = agent
        .create("noexe", &spec(&["no-such-binary"]))
        .await
        .expect_err("missing executable");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("process.args[0]"), "{status:?}");

    let mut tty = spec(&["true"]);
    tty["process"]["terminal"] = json!(true);
    let status = agent.create("tty", &tty).await.expect_err("terminal");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("process.terminal"), "{status:?}");

    // Nothing half-created: no container listed, and the ids are free again.
    let list = agent
        .client
        .list(ListContainersRequest {})
        .await
        .expect("list");
    assert!(list.into_inner().containers.is_empty());
    agent
        .create("noexe", &spec(&["true"]))
        .await
        .expect("id reusable");
    agent.delete("noexe").await.expect("delete");
}

#[tokio::test]
async fn network_namespace_and_bind_mounts() {
    let mut agent = agent_or_skip!();
    let shared = agent.dir.path().join("shared");
    fs::create_dir(&shared).expect("mkdir");
    fs::write(shared.join("data"), "from the host\n").expect("write");
    let mut s = spec(&[
        "sh",
        "-c",
        "ls /sys/class/net; cat /mnt/shared/data; touch /mnt/shared/y || echo ro",
    ]);
    // A network namespace without a path is a new one: loopback only.
    s["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({ "type": "network" }));
    s["mounts"].as_array_mut().expect("mounts").push(json!({
        "destination": "/mnt/shared", "type": "bind", "source": shared,
        "options": ["rbind", "ro", "nosuid", "nodev"]
    }));
    let (exit, out, err) = agent.run("net", &s).await;
    assert_eq!(exit.exit_code, 0, "stderr: {err}");
    assert_eq!(out, "lo\nfrom the host\nro\n");
    assert!(!shared.join("y").exists());

    // Joining a namespace by a path that does not exist names the field.
    let mut s = spec(&["true"]);
    s["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(json!({ "type": "network", "path": "/nonexistent/netns" }));
    let status = agent.create("badns", &s).await.expect_err("missing netns");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("namespaces[4].path"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_failed_exec_fails_start() {
    let mut agent = agent_or_skip!();
    let bad = agent.rootfs().join("bin/bad");
    fs::write(&bad, "not an executable format\0\0").expect("write");
    fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    agent.create("bad", &spec(&["bad"])).await.expect("create");
    let status = agent.start_container("bad").await.expect_err("exec fails");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("process.args[0]"), "{status:?}");
    let exit = agent.wait("bad").await;
    assert_eq!(exit.exit_code, 127);
    let status = agent
        .start_container("bad")
        .await
        .expect_err("started twice");
    assert_eq!(status.code(), Code::FailedPrecondition);
    agent.delete("bad").await.expect("delete");
}
