//! CRI Exec, Attach and PortForward through vesseld's streaming server, with
//! the client library (`vessel_streaming::client`, as client-go speaks
//! SPDY) against a real `vesseld serve` and one pod VM: exec with stdin,
//! stdout, stderr and exit codes, a terminal whose resize `stty size` sees,
//! 64 MiB each way with checksums, 10 sessions at once, a client that stalls
//! (its session is dropped and its process killed; the rest go on), attach
//! to a container that echoes its stdin (two sessions, one detaching, a slow
//! one dropped), port-forward to busybox `httpd`, bad requests' codes, and
//! nothing left once the pod is removed.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tonic::Code;
use vessel_e2e::cri::{
    code, container_config, nothing_left, pod_config, pod_log_tails, pull, remove_pod, run_pod,
    start_container, status_of, Cri, Vesseld,
};
use vessel_e2e::registry::{push_busybox, scratch, Registry};
use vessel_streaming::client::{self, PortForwarder, SessionIo, SpdyConnection};
use vessel_streaming::TerminalSize;

/// A stalled client is dropped after this (the `[streaming]` key set below).
const WRITE_STALL_SECS: u64 = 5;

/// 64 MiB.
const BIG: usize = 64 << 20;

/// The longest any exec session of this test may take (64 MiB in the nested host takes ~40 s).
const SESSION_LIMIT: Duration = Duration::from_secs(300);

/// After this, the test prints vesseld's log and thread states and fails
/// rather than hang. It must fire inside the test host's own budget
/// (VESSEL_KVM_HOST_TIMEOUT, 1500 s in tests/e2e/run.sh, boot included), or
/// a hang leaves no log, and well after a slow run's end: the whole test
/// takes about 6 minutes in the nested host (19 before the e2e crate and
/// the hashing crates were optimized in the dev profile: the test's own
/// SHA-256 work, not the attach flood, was what ran for minutes).
const WATCHDOG: Duration = Duration::from_secs(1300);

/// How long the test may clean up after a failure before the watchdog ends it.
const PANIC_GRACE: Duration = Duration::from_secs(60);

/// What the echo container gets while an attach session stalls.
const FLOOD: usize = 24 << 20;

/// The flood's step (written, then read back).
const STEP: usize = 256 << 10;

/// The test's scratch dir's name.
const SCRATCH: &str = "cri-streaming";

/// Where the test's vesseld keeps its state (and the pods' logs).
fn vesseld_dir() -> std::path::PathBuf {
    vessel_e2e::env_path("VESSEL_SCRATCH")
        .join(SCRATCH)
        .join("vessel")
}

/// What an exec printed and how it ended.
struct Ran {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    code: i32,
}

async fn exec_url(
    cri: &mut Cri,
    container_id: &str,
    cmd: &[&str],
    stdin: bool,
    tty: bool,
) -> String {
    cri.runtime
        .exec(ExecRequest {
            container_id: container_id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .expect("Exec")
        .into_inner()
        .url
}

/// A pipe: the session writes one end, the test reads the other.
fn pipe() -> (Box<DuplexStream>, DuplexStream) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Box::new(a), b)
}

async fn read_all(mut from: DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    from.read_to_end(&mut out).await.expect("read a pipe");
    out
}

/// Runs one exec session to its end with `stdin` (if any) as its input.
async fn run(url: &str, stdin: Option<Vec<u8>>) -> Ran {
    let (out, out_far) = pipe();
    let (err, err_far) = pipe();
    let stdin: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = match stdin {
        Some(data) => Some(Box::new(std::io::Cursor::new(data))),
        None => None,
    };
    let reading = tokio::spawn(async move { tokio::join!(read_all(out_far), read_all(err_far)) });
    let session = client::exec(
        url,
        SessionIo {
            stdin,
            stdout: Some(out),
            stderr: Some(err),
            ..SessionIo::default()
        },
    );
    let status = match tokio::time::timeout(SESSION_LIMIT, session).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => fail(format!("exec session: {e}")),
        Err(_) => fail(format!("the exec session did not end in {SESSION_LIMIT:?}")),
    };
    let (stdout, stderr) = reading.await.expect("readers");
    Ran {
        stdout,
        stderr,
        code: status.code,
    }
}

/// How long saving the pods' post-mortems may take.
const REPORT_LIMIT: Duration = Duration::from_secs(40);

/// Fails the test with `what` and what explains it.
fn fail(what: String) -> ! {
    // First: collecting the report may hang, or outlast the test host.
    eprintln!("{what}");
    panic!("{what}\n{}", failure_report());
}

/// What explains a failed session: the pod VMMs' post-mortems (saved where
/// tests/e2e/run.sh looks: a vCPU stuck in the test host's KVM_RUN is the
/// test host's failure) and the pods' log tails, which then end with them.
fn failure_report() -> String {
    let (saved, saving) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = saved.send(vessel_e2e::postmortem::save_pods(&vesseld_dir()));
    });
    match saving.recv_timeout(REPORT_LIMIT) {
        Ok(results) => {
            for why in results.into_iter().filter_map(Result::err) {
                eprintln!("e2e: no post-mortem: {why}");
            }
        }
        Err(_) => eprintln!("e2e: no post-mortem: saving took more than {REPORT_LIMIT:?}"),
    }
    pod_log_tails(&vesseld_dir())
}

async fn exec(cri: &mut Cri, id: &str, cmd: &[&str], stdin: Option<Vec<u8>>) -> Ran {
    let url = exec_url(cri, id, cmd, stdin.is_some(), false).await;
    run(&url, stdin).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Data that is not all alike: xorshift64* words. (A counter through
/// SHA-256 took 38 s for 64 MiB in the nested test host.)
fn data(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Reads from `from` until `want` has been seen (30 s at most); returns all read.
async fn read_until(from: &mut DuplexStream, want: &str) -> String {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while !text(&seen).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, from.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("{want:?} never came (got {:?}; {other:?})", text(&seen)),
        }
    }
    text(&seen)
}

async fn attach_url(cri: &mut Cri, id: &str, stdin: bool, stderr: bool) -> String {
    let call = cri.runtime.attach(AttachRequest {
        container_id: id.into(),
        stdin,
        tty: false,
        stdout: true,
        stderr,
    });
    tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("Attach answered in time")
        .expect("Attach")
        .into_inner()
        .url
}

/// Starts an attach session in the background: (stdin writer, stdout reader, task).
async fn attach(
    cri: &mut Cri,
    id: &str,
) -> (
    DuplexStream,
    DuplexStream,
    tokio::task::JoinHandle<Result<client::ExitStatus, client::ClientError>>,
) {
    let url = attach_url(cri, id, true, true).await;
    let (stdin, stdin_far) = tokio::io::duplex(1 << 20);
    let (out, out_far) = pipe();
    let (err, _err_far) = pipe();
    let task = tokio::spawn(async move {
        let _keep = _err_far;
        client::attach(
            &url,
            SessionIo {
                stdin: Some(Box::new(stdin_far)),
                stdout: Some(out),
                stderr: Some(err),
                ..SessionIo::default()
            },
        )
        .await
    });
    (stdin, out_far, task)
}

/// Whether pid file `path` in the container names a live process.
async fn alive(cri: &mut Cri, id: &str, path: &str) -> bool {
    let r = exec(
        cri,
        id,
        &["sh", "-c", &format!("kill -0 $(cat {path})")],
        None,
    )
    .await;
    r.code == 0
}

/// `vessel exec -i` with piped stdin and `vessel port-forward` fetching a
/// page: (exec's stdout, its exit code, the page).
fn vessel_cli(socket: &std::path::Path, web: &str, pod: &str) -> (String, Option<i32>, String) {
    use std::io::{BufRead, Read, Write};
    use std::process::{Command, Stdio};
    let vessel = vessel_e2e::env_path("VESSEL_CLIENT");
    let endpoint = socket.display().to_string();
    let mut exec = Command::new(&vessel)
        .args([
            "-r",
            &endpoint,
            "exec",
            "-i",
            web,
            "sh",
            "-c",
            "cat; exit 4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vessel exec -i");
    if let Some(mut stdin) = exec.stdin.take() {
        stdin
            .write_all(b"via the CLI\n")
            .expect("to vessel's stdin");
    }
    let done = exec.wait_with_output().expect("vessel exec -i ends");
    let mut forward = Command::new(&vessel)
        .args(["-r", &endpoint, "port-forward", pod, ":8080"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("vessel port-forward");
    let mut line = String::new();
    if let Some(out) = forward.stdout.take() {
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("vessel port-forward prints where it listens");
    }
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("vessel port-forward said {line:?}"))
        .to_owned();
    let mut page = String::new();
    let mut conn = std::net::TcpStream::connect(&local).expect("connect to the forwarded port");
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = conn.read_to_string(&mut page);
    let _ = forward.kill();
    let _ = forward.wait();
    (text(&done.stdout), done.status.code(), page)
}

/// Each thread of `pid`: its name, scheduler state, and where the kernel
/// holds it, to tell a process blocked in the kernel from one that idles.
fn thread_states(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("process {pid} is gone\n");
    };
    let mut out = String::new();
    for task in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        out += &format!(
            "{} {} {state} wchan={}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward_stream_through_vesseld() {
    // Where the test's time goes, for a slow run's log.
    let test_started = Instant::now();
    let phase = |name: &str| eprintln!("phase {name}: at {:?}", test_started.elapsed());
    let dir = scratch(SCRATCH);
    let registry = Registry::start(&dir.join("registry"));
    let image = push_busybox(&registry.host()).await;
    phase("pushed busybox");
    let mut vesseld = Vesseld::start_with(
        &dir.join("vessel"),
        &registry.host(),
        &format!("\n[streaming]\nwrite_stall_timeout_secs = {WRITE_STALL_SECS}\n"),
    );
    let mut cri = vesseld.connect().await;
    let log_file = vesseld.dir.join("vesseld.log");
    let vesseld_pid = vesseld.pid();
    // A panic wakes the watchdog too: the test's cleanup (vesseld's
    // shutdown, the runtime's blocking tasks) may wait on the very pod
    // that failed, and once hung for 13 minutes after a failed session.
    let (panicked, on_panic) = std::sync::mpsc::channel::<()>();
    let panicked = std::sync::Mutex::new(panicked);
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report_panic(info);
        if let Ok(tx) = panicked.lock() {
            let _ = tx.send(());
        }
    }));
    std::thread::spawn(move || {
        match on_panic.recv_timeout(WATCHDOG) {
            Ok(()) => {
                std::thread::sleep(PANIC_GRACE);
                eprintln!("the test still runs {PANIC_GRACE:?} after it failed");
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Our hook was dropped: libtest sets its own when the test has
            // ended (seen after a passing run), so the test is over.
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let log = std::fs::read(&log_file).unwrap_or_default();
        let tail = &log[log.len().saturating_sub(64 << 10)..];
        eprintln!("the test hangs; vesseld's log ends:\n{}", text(tail));
        if let Some(pid) = vesseld_pid {
            eprintln!("vesseld's threads:\n{}", thread_states(pid));
        }
        eprintln!("the test's threads:\n{}", thread_states(std::process::id()));
        std::process::exit(1);
    });
    let logs = dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    pull(&mut cri, &image).await;
    phase("pulled");

    // Unknown ids.
    let (c, m) = code(
        cri.runtime
            .exec(ExecRequest {
                container_id: "ffffffff".into(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");
    let (c, m) = code(
        cri.runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: "ffffffff".into(),
                port: vec![80],
            })
            .await,
    );
    assert_eq!(c, Code::NotFound, "{m}");

    // One pod: a web server to exec into and forward to, a container that
    // echoes its stdin to attach to.
    let sandbox = pod_config("streams", &logs.display().to_string());
    let pod = run_pod(&mut cri, &vesseld, &sandbox).await;
    phase("pod ready");
    let web = start_container(
        &mut cri,
        &vesseld,
        &pod,
        &sandbox,
        container_config(
            "web",
            &image,
            &[
                "sh",
                "-c",
                "mkdir -p /tmp/www && echo hello from httpd > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
            ],
        ),
    )
    .await;
    let echo = start_container(
        &mut cri,
        &vesseld,
        &pod,
        &sandbox,
        ContainerConfig {
            stdin: true,
            stdin_once: false,
            ..container_config("echo", &image, &["cat"])
        },
    )
    .await;

    phase("Bad requests name what is wrong");
    // Bad requests name what is wrong.
    let bad = |tty: bool, stderr: bool, cmd: Vec<String>| ExecRequest {
        container_id: web.clone(),
        cmd,
        tty,
        stdin: false,
        stdout: true,
        stderr,
    };
    let (c, m) = code(cri.runtime.exec(bad(true, true, vec!["true".into()])).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("stderr"), "{m}");
    let (c, m) = code(cri.runtime.exec(bad(false, true, Vec::new())).await);
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("cmd"), "{m}");
    let (c, m) = code(
        cri.runtime
            .attach(AttachRequest {
                container_id: echo.clone(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("stdin"), "{m}");
    let (c, m) = code(
        cri.runtime
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![70000],
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("port"), "{m}");
    let idle = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("idle", &image, &["true"])),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .expect("CreateContainer idle")
        .into_inner()
        .container_id;
    let (c, m) = code(
        cri.runtime
            .exec(ExecRequest {
                container_id: idle.clone(),
                cmd: vec!["true".into()],
                stdout: true,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(c, Code::FailedPrecondition, "{m}");
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: idle.clone(),
        })
        .await
        .expect("RemoveContainer idle");
    phase("one-use URLs");
    // A URL works once; a made-up one is refused.
    let url = exec_url(&mut cri, &web, &["true"], false, false).await;
    let ran = run(&url, None).await;
    assert_eq!(ran.code, 0);
    let again = client::exec(&url, SessionIo::default()).await;
    assert!(
        matches!(again, Err(client::ClientError::Refused { status: 404, .. })),
        "a used URL: {:?}",
        again.map(|s| s.code)
    );

    // stdin, stdout, stderr and exit codes (0 and not, from the v4 status).
    let ran = exec(
        &mut cri,
        &web,
        &["sh", "-c", "cat; echo to stderr >&2"],
        Some(b"hello through stdin\n".to_vec()),
    )
    .await;
    assert_eq!(
        (text(&ran.stdout), text(&ran.stderr), ran.code),
        ("hello through stdin\n".into(), "to stderr\n".into(), 0)
    );
    let ran = exec(
        &mut cri,
        &web,
        &["sh", "-c", "echo $GREETING; exit 7"],
        None,
    )
    .await;
    assert_eq!(
        (text(&ran.stdout), ran.code),
        ("hello from CRI\n".into(), 7)
    );

    phase("A terminal");
    // A terminal: the size the client sends is the one `stty size` sees.
    let url = exec_url(
        &mut cri,
        &web,
        &["sh", "-c", "read go; stty size"],
        true,
        true,
    )
    .await;
    let (out, out_far) = pipe();
    let (mut typing, typed) = tokio::io::duplex(1024);
    let (sizes, resize) = tokio::sync::mpsc::channel(4);
    let session = tokio::spawn(async move {
        client::exec(
            &url,
            SessionIo {
                stdin: Some(Box::new(typed)),
                stdout: Some(out),
                tty: true,
                resize: Some(resize),
                ..SessionIo::default()
            },
        )
        .await
    });
    sizes
        .send(TerminalSize {
            width: 123,
            height: 45,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    typing.write_all(b"go\n").await.unwrap();
    let status = tokio::time::timeout(SESSION_LIMIT, session)
        .await
        .expect("the tty exec ended in time")
        .unwrap()
        .expect("tty exec");
    let shown = text(&read_all(out_far).await);
    assert_eq!(status.code, 0, "{shown}");
    assert!(shown.contains("45 123"), "stty size: {shown:?}");

    phase("64 MiB each way");
    // 64 MiB each way, with checksums.
    let upload = data(BIG);
    phase("64 MiB of data made");
    let started = Instant::now();
    let ran = exec(&mut cri, &web, &["sha256sum"], Some(upload.clone())).await;
    let up_secs = started.elapsed().as_secs_f64();
    assert_eq!(ran.code, 0, "{}", text(&ran.stderr));
    assert_eq!(
        text(&ran.stdout).split_whitespace().next(),
        Some(hex(&Sha256::digest(&upload)).as_str())
    );
    // Out: the image's busybox binary, again and again, compared byte for
    // byte. Not a file written in the guest and read back, nor a tee into
    // a checksum: both loads broke the nested test host (docs/operations.md,
    // "A workload the nested test host does not survive").
    let busybox = std::fs::read(vessel_e2e::busybox::BUSYBOX).expect("busybox");
    let copies = BIG.div_ceil(busybox.len());
    let started = Instant::now();
    let ran = exec(
        &mut cri,
        &web,
        &[
            "sh",
            "-c",
            &format!("i=0; while [ $i -lt {copies} ]; do cat /bin/busybox; i=$((i+1)); done"),
        ],
        None,
    )
    .await;
    let down_secs = started.elapsed().as_secs_f64();
    assert_eq!(ran.code, 0, "{}", text(&ran.stderr));
    assert_eq!(ran.stdout.len(), copies * busybox.len());
    assert!(
        ran.stdout
            .chunks(busybox.len())
            .all(|c| c == busybox.as_slice()),
        "the download differs from {copies} copies of busybox"
    );
    eprintln!(
        "64 MiB through exec: in {up_secs:.1} s ({:.1} MiB/s), out {down_secs:.1} s ({:.1} MiB/s)",
        64.0 / up_secs,
        64.0 / down_secs
    );

    phase("10 sessions at once");
    // 10 sessions at once.
    let mut urls = Vec::new();
    for i in 0..10 {
        let cmd = format!("sleep 1; echo session {i}");
        urls.push((
            i,
            exec_url(&mut cri, &web, &["sh", "-c", &cmd], false, false).await,
        ));
    }
    let started = Instant::now();
    let sessions: Vec<_> = urls
        .into_iter()
        .map(|(i, url)| tokio::spawn(async move { (i, run(&url, None).await) }))
        .collect();
    for session in sessions {
        let (i, ran) = session.await.unwrap();
        assert_eq!((text(&ran.stdout), ran.code), (format!("session {i}\n"), 0));
    }
    eprintln!("10 concurrent execs took {:?}", started.elapsed());

    phase("Attach");
    // Attach: two sessions see what the container echoes; one detaches, the
    // other and the container go on.
    let (mut a_in, mut a_out, a) = attach(&mut cri, &echo).await;
    let (mut b_in, mut b_out, b) = attach(&mut cri, &echo).await;
    // Both sessions are in before the first line; both may type.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a_in.write_all(b"first line\n").await.unwrap();
    read_until(&mut a_out, "first line").await;
    read_until(&mut b_out, "first line").await;
    b_in.write_all(b"line from b\n").await.unwrap();
    read_until(&mut a_out, "line from b").await;
    read_until(&mut b_out, "line from b").await;
    b.abort();
    drop(b_out);
    tokio::time::sleep(Duration::from_secs(1)).await;
    a_in.write_all(b"second line\n").await.unwrap();
    read_until(&mut a_out, "second line").await;
    // A session that never reads is dropped; the others get everything.
    // (More than its 1 MiB queue, the pipes and both sockets' buffers hold.)
    let slow_url = attach_url(&mut cri, &echo, false, false).await;
    let (slow_out, never_read) = tokio::io::duplex(1024);
    let slow = tokio::spawn(async move {
        client::attach(
            &slow_url,
            SessionIo {
                stdout: Some(Box::new(slow_out)),
                ..SessionIo::default()
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // In steps that the reading session keeps up with (a session that falls
    // more than its queue behind the container is dropped too).
    let flood = data(FLOOD);
    phase("flood data made");
    let started = Instant::now();
    let mut echoed = vec![0u8; FLOOD];
    for (i, (sent, back)) in flood.chunks(STEP).zip(echoed.chunks_mut(STEP)).enumerate() {
        // Progress, so a slow run shows where its time goes.
        if i % 16 == 0 {
            eprintln!(
                "attach flood: {} MiB echoed after {:?}",
                (i * STEP) >> 20,
                started.elapsed()
            );
        }
        // Writing is bounded too: a stalled pipeline stops the write first.
        let step = async {
            a_in.write_all(sent).await?;
            a_out.read_exact(back).await
        };
        tokio::time::timeout(Duration::from_secs(60), step)
            .await
            .expect("a step echoed in time")
            .expect("the session goes on");
    }
    assert_eq!(hex(&Sha256::digest(&echoed)), hex(&Sha256::digest(&flood)));
    eprintln!(
        "{} MiB echoed through attach in {:?}",
        FLOOD >> 20,
        started.elapsed()
    );
    assert!(
        vesseld.log().contains("does not keep up"),
        "the slow attach session was not dropped"
    );
    // The client stops waiting for its own reader; its session is over.
    drop(never_read);
    let slow_end = tokio::time::timeout(Duration::from_secs(60), slow)
        .await
        .expect("the slow session ended")
        .unwrap();
    eprintln!("slow attach session ended: {:?}", slow_end.map(|s| s.code));
    a_in.write_all(b"third line\n").await.unwrap();
    read_until(&mut a_out, "third line").await;

    phase("Port-forward to httpd in the pod");
    // Port-forward to httpd in the pod.
    let url = cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .expect("PortForward")
        .into_inner()
        .url;
    let forwarder = PortForwarder::connect(&url)
        .await
        .expect("port-forward session");
    for _ in 0..2 {
        let (local, mut far) = tokio::io::duplex(1 << 20);
        let browse = tokio::spawn(async move {
            far.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")
                .await
                .unwrap();
            let mut page = Vec::new();
            far.read_to_end(&mut page).await.unwrap();
            text(&page)
        });
        tokio::time::timeout(Duration::from_secs(60), forwarder.forward(8080, local))
            .await
            .expect("forward in time")
            .expect("forward");
        let page = browse.await.unwrap();
        assert!(
            page.starts_with("HTTP/1.") && page.contains("hello from httpd"),
            "{page}"
        );
    }
    // A closed port fails on the error stream; the session goes on.
    let (local, _far) = tokio::io::duplex(1024);
    let closed = forwarder.forward(8081, local).await;
    assert!(
        matches!(closed, Err(client::ClientError::Failure(_))),
        "{closed:?}"
    );
    drop(forwarder);

    phase("The vessel CLI over the same client");
    // The vessel CLI over the same client: exec -i and port-forward.
    let (socket, web_id, pod_id) = (vesseld.socket.clone(), web.clone(), pod.clone());
    let cli = tokio::task::spawn_blocking(move || vessel_cli(&socket, &web_id, &pod_id));
    let (exec_out, exec_code, page) = cli.await.unwrap();
    assert_eq!((exec_out.as_str(), exec_code), ("via the CLI\n", Some(4)));
    assert!(page.contains("hello from httpd"), "{page}");

    phase("A client that stalls");
    // A client that stalls: it opens an exec of endless output and never
    // reads. Its session is dropped and its process killed; meanwhile other
    // sessions and the container go on.
    let url = exec_url(
        &mut cri,
        &web,
        &["sh", "-c", "echo $$ > /tmp/stalled.pid; exec cat /dev/zero"],
        false,
        false,
    )
    .await;
    let upgraded = client::upgrade(&url, &["v4.channel.k8s.io"])
        .await
        .expect("upgrade");
    let stalled = SpdyConnection::new(upgraded.tcp).expect("SPDY");
    let _error = stalled
        .open(&[("streamType", "error")])
        .await
        .expect("error stream");
    let _stdout = stalled
        .open(&[("streamType", "stdout")])
        .await
        .expect("stdout stream");
    let _stderr = stalled
        .open(&[("streamType", "stderr")])
        .await
        .expect("stderr stream");
    let stalling = Instant::now();
    let deadline = stalling + Duration::from_secs(WRITE_STALL_SECS + 60);
    let mut seen_alive = false;
    loop {
        let ran = exec(&mut cri, &web, &["echo", "still serving"], None).await;
        assert_eq!(text(&ran.stdout), "still serving\n");
        let live = alive(&mut cri, &web, "/tmp/stalled.pid").await;
        seen_alive |= live;
        if seen_alive && !live {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled session's process still runs after {:?}\n{}",
            stalling.elapsed(),
            vesseld.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "the stalled client's process was killed after {:?}",
        stalling.elapsed()
    );
    drop((stalled, _error, _stdout, _stderr));
    a_in.write_all(b"after the stall\n").await.unwrap();
    read_until(&mut a_out, "after the stall").await;

    phase("log check");
    // The container's log got everything the attach sessions saw.
    let echo_status = status_of(&mut cri, &echo).await;
    assert_eq!(echo_status.state, ContainerState::ContainerRunning as i32);
    // The flood made it binary: not UTF-8.
    let log = text(&std::fs::read(&echo_status.log_path).unwrap_or_default());
    for line in [
        "first line",
        "line from b",
        "second line",
        "after the stall",
    ] {
        assert!(
            log.contains(&format!("stdout F {line}\n")),
            "{line:?} not in the log"
        );
    }
    // The flood's last bytes have no newline: this line ends the flood's last one.
    assert!(
        log.contains("third line\n"),
        "\"third line\" not in the log"
    );
    a.abort();

    phase("The pod goes; nothing is left");
    // The pod goes; nothing is left.
    remove_pod(&mut cri, &vesseld, &pod).await;
    nothing_left(&mut cri, &vesseld, &pod).await;
    let status = vesseld.terminate();
    assert!(
        status.success(),
        "vesseld exited with {status}\n{}",
        vesseld.log()
    );
}
