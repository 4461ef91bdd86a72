//! Streamed stdio, terminals and exec, end to end: the `vessel-agent` binary on
//! a Unix socket, as root in its own namespaces (`unshare`, see
//! `common::NamespacedAgent`), running busybox containers.
//!
//! Skipped (with a note) when not root or the tools are missing; in CI a
//! missing prerequisite fails instead.

mod common;

use std::fs;
use std::time::Duration;

use common::{build_busybox_rootfs, namespaced_supported, NamespacedAgent};
use serde_json::{json, Value};
use tokio::time::Instant;
use tonic::Code;
use vessel_agent::client::stdio::{collect_output, read_output, write_stdin};
use vessel_agent::client::Channel;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::processes_client::ProcessesClient;
use vessel_agent::proto::stdio_client::StdioClient;
use vessel_agent::proto::{
    CloseStdinRequest, CreateContainerRequest, DeleteContainerRequest, DeleteProcessRequest,
    ExecProcessRequest, OutputRequest, ResizeRequest, SignalContainerRequest, SignalProcessRequest,
    StartContainerRequest, StdioStream, StreamStdio, TerminalSize, WaitProcessRequest,
    WaitProcessResponse,
};

const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "hostname", "id", "pwd", "tty", "stty", "grep", "head", "true",
    "wc",
];

/// Most output a test collects.
const LIMIT: usize = 16 << 20;

struct Harness {
    agent: NamespacedAgent,
    containers: ContainersClient<Channel>,
    processes: ProcessesClient<Channel>,
    stdio: StdioClient<Channel>,
}

impl Harness {
    async fn start() -> Self {
        let agent = NamespacedAgent::start().await;
        let root = agent.dir.path().join("rootfs");
        build_busybox_rootfs(&root, APPLETS);
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/tmp:/bin/sh\n",
        )
        .expect("passwd");
        let channel = agent.channel.clone();
        Self {
            containers: ContainersClient::new(channel.clone()),
            processes: ProcessesClient::new(channel.clone()),
            stdio: StdioClient::new(channel),
            agent,
        }
    }

    fn channel(&self) -> Channel {
        self.agent.channel.clone()
    }

    fn rootfs(&self) -> String {
        self.agent.dir.path().join("rootfs").display().to_string()
    }

    /// Creates a container with streamed stdio.
    async fn create(&mut self, id: &str, spec: &Value, streams: StreamStdio) {
        let req = CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec.to_string(),
            rootfs: self.rootfs(),
            streams: Some(streams),
            ..Default::default()
        };
        if let Err(status) = self.containers.create(req).await {
            panic!("create {id}: {status:?}\n{}", self.agent.log());
        }
    }

    async fn start_container(&mut self, id: &str) {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        if let Err(status) = self.containers.start(req).await {
            panic!("start {id}: {status:?}\n{}", self.agent.log());
        }
    }

    async fn wait(&mut self, id: &str, exec: &str) -> WaitProcessResponse {
        let req = WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
        };
        match tokio::time::timeout(Duration::from_secs(30), self.processes.wait(req)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => panic!("wait {id}/{exec}: {status:?}\n{}", self.agent.log()),
            Err(_) => panic!("wait {id}/{exec}: timed out\n{}", self.agent.log()),
        }
    }

    async fn delete(&mut self, id: &str) {
        let req = DeleteContainerRequest {
            container_id: id.into(),
        };
        self.containers.delete(req).await.expect("delete");
    }

    async fn output(&self, id: &str, exec: &str, stream: StdioStream) -> String {
        match collect_output(self.channel(), id, exec, stream, LIMIT).await {
            Ok(out) => String::from_utf8_lossy(&out).into_owned(),
            Err(status) => panic!("output {id}/{exec}: {status:?}\n{}", self.agent.log()),
        }
    }

    async fn exec(
        &mut self,
        id: &str,
        exec: &str,
        process: &Value,
        streams: Option<StreamStdio>,
    ) -> Result<u32, tonic::Status> {
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            process_json: process.to_string(),
            streams,
            ..Default::default()
        };
        self.processes.exec(req).await.map(|r| r.into_inner().pid)
    }
}

fn process(args: &[&str]) -> Value {
    let caps = json!(["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "user": { "uid": 0, "gid": 0 },
        "args": args,
        "env": ["PATH=/bin", "HOME=/"],
        "cwd": "/",
        "noNewPrivileges": true,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": [], "ambient": []
        }
    })
}

fn spec(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": process(args),
        "root": { "path": "rootfs" },
        "hostname": "vessel-io",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ]
        }
    })
}

fn with_stdin() -> StreamStdio {
    StreamStdio {
        stdin: true,
        terminal_size: None,
    }
}

fn no_stdin() -> StreamStdio {
    StreamStdio {
        stdin: false,
        terminal_size: None,
    }
}

macro_rules! harness_or_skip {
    () => {{
        if !namespaced_supported() {
            return;
        }
        Harness::start().await
    }};
}

#[tokio::test]
async fn stdin_reaches_cat_and_closing_it_ends_the_process() {
    let mut h = harness_or_skip!();
    h.create("cat", &spec(&["cat"]), with_stdin()).await;
    h.start_container("cat").await;
    let reader = tokio::spawn({
        let channel = h.channel();
        async move { collect_output(channel, "cat", "", StdioStream::Stdout, LIMIT).await }
    });
    let written = write_stdin(h.channel(), "cat", "", b"hello\n", false)
        .await
        .expect("first input");
    assert_eq!(written, 6);
    // A second call continues where the first left off; stdin stayed open.
    write_stdin(h.channel(), "cat", "", b"world\n", true)
        .await
        .expect("second input");
    let out = reader.await.expect("join").expect("output");
    assert_eq!(out, b"hello\nworld\n");
    let exit = h.wait("cat", "").await;
    assert_eq!(exit.exit_code, 0);
    // Closed is closed: more input is refused, closing again is fine.
    let status = write_stdin(h.channel(), "cat", "", b"late", false)
        .await
        .expect_err("closed");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let req = CloseStdinRequest {
        container_id: "cat".into(),
        exec_id: String::new(),
    };
    h.stdio.close_stdin(req).await.expect("close again");
    h.delete("cat").await;
}

#[tokio::test]
async fn stdout_and_stderr_are_separate_and_wait_for_the_host() {
    let mut h = harness_or_skip!();
    // 3 MB is more than the pipe holds: the process blocks until the host reads.
    let script = "echo out; echo err >&2; head -c 3000000 /dev/zero; echo end >&2";
    h.create("split", &spec(&["sh", "-c", script]), no_stdin())
        .await;
    h.start_container("split").await;
    let (out, err) = tokio::join!(
        collect_output(h.channel(), "split", "", StdioStream::Stdout, LIMIT),
        collect_output(h.channel(), "split", "", StdioStream::Stderr, LIMIT),
    );
    let (out, err) = (out.expect("stdout"), err.expect("stderr"));
    assert_eq!(out.len(), 4 + 3_000_000);
    assert!(out.starts_with(b"out\n"));
    assert_eq!(err, b"err\nend\n");
    assert_eq!(h.wait("split", "").await.exit_code, 0);
    // After EOF a new reader gets an empty stream; no stdin was asked for.
    assert!(h.output("split", "", StdioStream::Stdout).await.is_empty());
    let status = write_stdin(h.channel(), "split", "", b"x", true)
        .await
        .expect_err("no stdin");
    assert_eq!(status.code(), Code::FailedPrecondition);
    h.delete("split").await;
}

#[tokio::test]
async fn one_reader_at_a_time_and_a_new_one_continues() {
    let mut h = harness_or_skip!();
    let script = "echo one; read x; echo two";
    h.create("relay", &spec(&["sh", "-c", script]), with_stdin())
        .await;
    h.start_container("relay").await;
    let req = || OutputRequest {
        container_id: "relay".into(),
        exec_id: String::new(),
        stream: StdioStream::Stdout.into(),
    };
    let mut first = h.stdio.output(req()).await.expect("attach").into_inner();
    let chunk = first.message().await.expect("read").expect("chunk");
    assert_eq!(chunk.data, b"one\n");
    let status = h.stdio.output(req()).await.expect_err("second reader");
    assert_eq!(status.code(), Code::FailedPrecondition);
    drop(first);
    write_stdin(h.channel(), "relay", "", b"go\n", true)
        .await
        .expect("input");
    // The agent notices the first reader left when its stream is reset; retry until then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        match collect_output(h.channel(), "relay", "", StdioStream::Stdout, LIMIT).await {
            Ok(out) => break out,
            Err(s) if s.code() == Code::FailedPrecondition && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("reattach: {s:?}"),
        }
    };
    assert_eq!(out, b"two\n");
    assert_eq!(h.wait("relay", "").await.exit_code, 0);
    h.delete("relay").await;
}

#[tokio::test]
async fn a_terminal_has_a_pts_name_and_follows_resize() {
    let mut h = harness_or_skip!();
    let mut s = spec(&["sh", "-c", "tty; stty size; read x; stty size"]);
    s["process"]["terminal"] = json!(true);
    h.create("tty", &s, with_stdin()).await;
    let resize = |rows, cols| ResizeRequest {
        container_id: "tty".into(),
        exec_id: String::new(),
        size: Some(TerminalSize { rows, cols }),
    };
    // Before Start: the first `stty size` sees it.
    h.stdio.resize(resize(40, 120)).await.expect("resize");
    h.start_container("tty").await;
    let req = OutputRequest {
        container_id: "tty".into(),
        exec_id: String::new(),
        stream: StdioStream::Stdout.into(),
    };
    let mut stream = h.stdio.output(req).await.expect("attach").into_inner();
    let mut out = Vec::new();
    // Input is echoed as soon as it is written: send it only once the first size is out.
    while !String::from_utf8_lossy(&out).contains("40 120") {
        match stream.message().await.expect("read") {
            Some(chunk) => out.extend_from_slice(&chunk.data),
            None => panic!("EOF early: {}", String::from_utf8_lossy(&out)),
        }
    }
    // While it runs: the process waits for a line, then prints the new size.
    h.stdio.resize(resize(50, 160)).await.expect("resize");
    write_stdin(h.channel(), "tty", "", b"go\n", false)
        .await
        .expect("input");
    while let Some(chunk) = stream.message().await.expect("read") {
        out.extend_from_slice(&chunk.data);
    }
    let out = String::from_utf8_lossy(&out).replace('\r', "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["/dev/pts/0", "40 120", "go", "50 160"], "{out}");
    assert_eq!(h.wait("tty", "").await.exit_code, 0);
    // A terminal has no separate stderr.
    let req = OutputRequest {
        container_id: "tty".into(),
        exec_id: String::new(),
        stream: StdioStream::Stderr.into(),
    };
    let status = h.stdio.output(req).await.expect_err("stderr");
    assert_eq!(status.code(), Code::FailedPrecondition);
    h.delete("tty").await;
}

#[tokio::test]
async fn exec_runs_in_the_container_with_its_own_process_settings() {
    let mut h = harness_or_skip!();
    // The container itself uses files mode: an exec's streams do not depend on it.
    let req = CreateContainerRequest {
        container_id: "box".into(),
        oci_spec_json: spec(&["sh", "-c", "echo marker > /tmp/inside; exec sleep 100000"])
            .to_string(),
        rootfs: h.rootfs(),
        ..Default::default()
    };
    h.containers.create(req).await.expect("create");
    h.start_container("box").await;
    let script = "hostname; pwd; id -u; id -g; echo $FOO; cat /proc/1/comm; \
                  grep SigIgn /proc/self/status; while [ ! -e /tmp/inside ]; do :; done; cat /tmp/inside";
    let mut p = process(&["sh", "-c", script]);
    p["env"] = json!(["PATH=/bin", "FOO=bar"]);
    p["cwd"] = json!("/tmp");
    p["user"] = json!({ "uid": 1000, "gid": 1000 });
    h.exec("box", "e1", &p, Some(no_stdin()))
        .await
        .expect("exec");
    let out = h.output("box", "e1", StdioStream::Stdout).await;
    let exit = h.wait("box", "e1").await;
    assert_eq!(exit.exit_code, 0, "{out}");
    assert!(exit.started_at > 0 && exit.finished_at >= exit.started_at);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..6],
        ["vessel-io", "/tmp", "1000", "1000", "bar", "sleep"],
        "{out}"
    );
    assert_eq!(lines.last(), Some(&"marker"), "{out}");
    // SIGPIPE (bit 12) is not ignored, whatever the agent's runtime does.
    let ignored = lines
        .iter()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .expect("SigIgn line");
    assert_eq!(ignored & (1 << 12), 0, "{out}");

    // Exit codes and stdin of an exec.
    h.exec(
        "box",
        "e2",
        &process(&["sh", "-c", "cat; exit 7"]),
        Some(with_stdin()),
    )
    .await
    .expect("exec");
    write_stdin(h.channel(), "box", "e2", b"piped\n", true)
        .await
        .expect("input");
    assert_eq!(h.output("box", "e2", StdioStream::Stdout).await, "piped\n");
    assert_eq!(h.wait("box", "e2").await.exit_code, 7);

    // A terminal exec, sized at creation.
    let mut t = process(&["sh", "-c", "tty; stty size"]);
    t["terminal"] = json!(true);
    let sized = StreamStdio {
        stdin: false,
        terminal_size: Some(TerminalSize { rows: 24, cols: 80 }),
    };
    h.exec("box", "e3", &t, Some(sized))
        .await
        .expect("exec tty");
    let out = h.output("box", "e3", StdioStream::Stdout).await;
    let out = out.replace('\r', "");
    assert!(out.starts_with("/dev/pts/"), "{out}");
    assert!(out.ends_with("\n24 80\n"), "{out}");
    assert_eq!(h.wait("box", "e3").await.exit_code, 0);

    // Signal and delete an exec; its id is free again.
    h.exec("box", "e4", &process(&["sleep", "100000"]), None)
        .await
        .expect("exec");
    let req = SignalProcessRequest {
        container_id: "box".into(),
        exec_id: "e4".into(),
        signal: 9,
    };
    h.processes.signal(req).await.expect("signal");
    let exit = h.wait("box", "e4").await;
    assert_eq!((exit.exit_code, exit.signal), (137, 9));
    let del = || DeleteProcessRequest {
        container_id: "box".into(),
        exec_id: "e4".into(),
    };
    h.processes.delete(del()).await.expect("delete exec");
    let status = h.processes.delete(del()).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound);
    h.exec("box", "e4", &process(&["true"]), None)
        .await
        .expect("id reusable");

    // Execs die with their container.
    h.exec("box", "e5", &process(&["sleep", "100000"]), None)
        .await
        .expect("exec");
    let req = SignalContainerRequest {
        container_id: "box".into(),
        signal: 9,
    };
    h.containers.signal(req).await.expect("kill container");
    let exit = h.wait("box", "e5").await;
    assert_eq!(exit.signal, 9);
    h.delete("box").await;
}

/// The agent's pid: the first `vessel-agent` below `unshare` (with a shell between).
fn agent_pid(unshare: u32) -> u32 {
    let mut pid = unshare;
    for _ in 0..4 {
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("children of a process");
        pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a child process");
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "vessel-agent" {
            return pid;
        }
    }
    panic!("no vessel-agent below pid {unshare}");
}

#[tokio::test]
async fn every_process_gets_its_own_oom_score_adj_not_the_agents() {
    let mut h = harness_or_skip!();
    // The agent as PID 1 runs at -1000; here (a host process) raise it
    // instead, which needs no privilege and must not reach containers.
    let agent = agent_pid(h.agent.child.id());
    fs::write(format!("/proc/{agent}/oom_score_adj"), "300").expect("raise the agent's score");

    let read_score = ["cat", "/proc/self/oom_score_adj"];
    h.create("plain", &spec(&read_score), no_stdin()).await;
    h.start_container("plain").await;
    assert_eq!(h.output("plain", "", StdioStream::Stdout).await, "0\n");
    h.delete("plain").await;

    let mut s = spec(&["sleep", "100000"]);
    s["process"]["oomScoreAdj"] = json!(200);
    h.create("box", &s, no_stdin()).await;
    h.start_container("box").await;
    // An exec without its own score takes the container's, one with its own keeps it.
    h.exec("box", "inherit", &process(&read_score), Some(no_stdin()))
        .await
        .expect("exec");
    assert_eq!(
        h.output("box", "inherit", StdioStream::Stdout).await,
        "200\n"
    );
    let mut own = process(&read_score);
    own["oomScoreAdj"] = json!(700);
    h.exec("box", "own", &own, Some(no_stdin()))
        .await
        .expect("exec");
    assert_eq!(h.output("box", "own", StdioStream::Stdout).await, "700\n");
    own["oomScoreAdj"] = json!(-1001);
    let status = h
        .exec("box", "bad", &own, Some(no_stdin()))
        .await
        .expect_err("out of range");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("process_json.oomScoreAdj"),
        "{status:?}"
    );
    h.delete("box").await;
}

#[tokio::test]
async fn exec_errors_name_the_problem() {
    let mut h = harness_or_skip!();
    let status = h
        .exec("nope", "e", &process(&["true"]), None)
        .await
        .expect_err("unknown container");
    assert_eq!(status.code(), Code::NotFound);

    h.create("idle", &spec(&["sleep", "100000"]), no_stdin())
        .await;
    let status = h
        .exec("idle", "e", &process(&["true"]), None)
        .await
        .expect_err("not started");
    assert_eq!(status.code(), Code::FailedPrecondition);
    h.start_container("idle").await;

    h.exec("idle", "dup", &process(&["sleep", "100000"]), None)
        .await
        .expect("exec");
    let status = h
        .exec("idle", "dup", &process(&["true"]), None)
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);

    let cases: Vec<(&str, Value, Option<StreamStdio>, &str)> = vec![
        ("../x", process(&["true"]), None, "exec_id"),
        ("bad", json!({ "args": "not a list" }), None, "process_json"),
        ("bad", process(&[]), None, "process_json.args"),
        ("bad", process(&["no-such-binary"]), None, "process.args[0]"),
        (
            "bad",
            {
                let mut p = process(&["true"]);
                p["terminal"] = json!(true);
                p
            },
            None,
            "process_json.terminal",
        ),
        (
            "bad",
            process(&["true"]),
            Some(StreamStdio {
                stdin: false,
                terminal_size: Some(TerminalSize { rows: 3, cols: 0 }),
            }),
            "terminal_size",
        ),
    ];
    for (exec, p, streams, needle) in cases {
        let status = h.exec("idle", exec, &p, streams).await.expect_err(needle);
        assert_eq!(status.code(), Code::InvalidArgument, "{needle}: {status:?}");
        assert!(status.message().contains(needle), "{needle}: {status:?}");
    }

    // Stdio calls on a process without streams, or without a terminal.
    let status = collect_output(h.channel(), "idle", "dup", StdioStream::Stdout, LIMIT)
        .await
        .expect_err("files mode");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let req = ResizeRequest {
        container_id: "idle".into(),
        exec_id: String::new(),
        size: Some(TerminalSize { rows: 10, cols: 10 }),
    };
    let status = h.stdio.resize(req).await.expect_err("no terminal");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let req = WaitProcessRequest {
        container_id: "idle".into(),
        exec_id: "missing".into(),
    };
    let status = h.processes.wait(req).await.expect_err("unknown exec");
    assert_eq!(status.code(), Code::NotFound);
    h.delete("idle").await;
}

/// Streams 256 MiB out of a container (`cat` of a file) to this process and
/// prints the throughput. Run with:
/// `cargo test --release -p vessel-agent --test stdio -- --ignored --nocapture stream_256mib`
#[tokio::test]
#[ignore = "benchmark: run explicitly (see docs/benchmarks.md)"]
async fn stream_256mib() {
    let mut h = harness_or_skip!();
    const SIZE: usize = 256 << 20;
    let data = h.agent.dir.path().join("rootfs/data");
    {
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut file = fs::File::create(&data).expect("create data");
        for _ in 0..SIZE >> 20 {
            std::io::Write::write_all(&mut file, &block).expect("write data");
        }
    }
    h.create("bench", &spec(&["cat", "/data"]), no_stdin())
        .await;
    h.start_container("bench").await;
    let begin = std::time::Instant::now();
    let total = read_output(h.channel(), "bench", "", StdioStream::Stdout, |_| {})
        .await
        .expect("stream");
    let elapsed = begin.elapsed();
    assert_eq!(total, SIZE as u64);
    assert_eq!(h.wait("bench", "").await.exit_code, 0);
    let mbps = SIZE as f64 / 1e6 / elapsed.as_secs_f64();
    println!(
        "agent streaming: {} MiB in {:.3} s = {mbps:.0} MB/s",
        SIZE >> 20,
        elapsed.as_secs_f64()
    );
    h.delete("bench").await;
}
