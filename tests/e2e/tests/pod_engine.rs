//! The container engine's guarded parts inside a real pod VM, on the guest
//! kernel pods run on (the agent's host-process tests run on the host's
//! kernel): a memory limit ends in an OOM kill that `Wait` and the `Events`
//! stream report, a pids limit stops forks, a seccomp profile denies a
//! syscall, vesseld's containerd-shaped spec holds from inside, kubelet-shaped limits apply (the CPU quota throttles) and
//! `Stats` move while a container burns CPU, an exec gets a sized
//! terminal, `Signal` ends a container with 128+signal, and a port forward
//! reaches a busybox `nc` listener. Then `Shutdown` leaves nothing behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};
use vessel_agent_api::client::stdio::collect_output;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::event::Kind;
use vessel_agent_api::proto::events_client::EventsClient;
use vessel_agent_api::proto::port_forward_client::PortForwardClient;
use vessel_agent_api::proto::port_forward_request::Message;
use vessel_agent_api::proto::processes_client::ProcessesClient;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::stats_client::StatsClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, Event, ExecProcessRequest, GetStatsRequest,
    GetStatsResponse, PortForwardRequest, PortForwardTarget, SandboxInfo, SetupSandboxRequest,
    ShutdownRequest, SignalContainerRequest, StartContainerRequest, StdioStream, StreamStdio,
    SubscribeEventsRequest, TerminalSize, WaitContainerRequest, WaitContainerResponse,
    WaitProcessRequest,
};
use vessel_e2e::pod::{boot, pod_share, read, share_busybox_rootfs, spec, SHARED};
use vessel_e2e::{console_tail, running_vmms, vm_config, within, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmConfig, VmExit, VmProcess};

/// How long a container may take to finish, or an event or a stats change
/// to show, in the slow nested test host.
const PATIENCE: Duration = Duration::from_secs(60);

/// The agent of a booted pod VM whose share holds the busybox rootfs.
struct Pod {
    vm: VmProcess,
    channel: Channel,
    /// The share's directory on the host.
    shared: PathBuf,
    /// What `Sandbox.Setup` applied (vesseld's container spec uses it).
    sandbox: SandboxInfo,
}

impl Pod {
    /// Panics with what failed and the guest's console.
    fn fail(&self, what: &str, detail: impl std::fmt::Debug) -> ! {
        panic!("{what}: {detail:?}\n{}", console_tail(&self.vm))
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    /// Creates and starts container `id`; stdout and stderr go to files in
    /// the share.
    async fn start(&self, id: &str, spec: &Value) {
        let req = CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec.to_string(),
            rootfs: format!("{SHARED}/rootfs"),
            stdout_path: format!("{SHARED}/{id}.out"),
            stderr_path: format!("{SHARED}/{id}.err"),
            ..CreateContainerRequest::default()
        };
        if let Err(s) = within("Containers.Create", self.containers().create(req)).await {
            self.fail(&format!("create {id}"), s);
        }
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        if let Err(s) = within("Containers.Start", self.containers().start(req)).await {
            self.fail(&format!("start {id}"), s);
        }
    }

    /// Waits for container `id` to exit.
    async fn wait(&self, id: &str) -> WaitContainerResponse {
        let req = WaitContainerRequest {
            container_id: id.into(),
        };
        match tokio::time::timeout(PATIENCE, self.containers().wait(req)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(s)) => self.fail(&format!("wait {id}"), s),
            Err(_) => self.fail(&format!("wait {id}"), "no exit in time"),
        }
    }

    /// Starts container `id`, waits for it, and returns its exit, stdout
    /// and stderr; the container is deleted.
    async fn run(&self, id: &str, spec: &Value) -> (WaitContainerResponse, String, String) {
        self.start(id, spec).await;
        let exit = self.wait(id).await;
        self.delete(id).await;
        let (out, err) = (self.output(id, "out"), self.output(id, "err"));
        (exit, out, err)
    }

    fn output(&self, id: &str, which: &str) -> String {
        read(&self.shared.join(format!("{id}.{which}")))
    }

    async fn delete(&self, id: &str) {
        let req = DeleteContainerRequest {
            container_id: id.into(),
        };
        if let Err(s) = within("Containers.Delete", self.containers().delete(req)).await {
            self.fail(&format!("delete {id}"), s);
        }
    }

    async fn subscribe(&self) -> Streaming<Event> {
        let mut client = EventsClient::new(self.channel.clone());
        match within(
            "Events.Subscribe",
            client.subscribe(SubscribeEventsRequest {}),
        )
        .await
        {
            Ok(reply) => reply.into_inner(),
            Err(s) => self.fail("subscribe", s),
        }
    }

    /// The next event that `matches` (others are skipped).
    async fn next_event(
        &self,
        events: &mut Streaming<Event>,
        what: &str,
        matches: impl Fn(&Kind) -> bool,
    ) -> Kind {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, events.message()).await {
                Ok(Ok(Some(Event {
                    kind: Some(kind), ..
                }))) if matches(&kind) => return kind,
                Ok(Ok(Some(_))) => {}
                other => self.fail(&format!("no {what} event"), other),
            }
        }
    }

    async fn stats(&self, id: &str) -> GetStatsResponse {
        let req = GetStatsRequest {
            container_ids: vec![id.into()],
        };
        match within("Stats.Get", StatsClient::new(self.channel.clone()).get(req)).await {
            Ok(reply) => reply.into_inner(),
            Err(s) => self.fail("stats", s),
        }
    }
}

/// A container's CPU time in `stats`, microseconds.
fn cpu_usec(stats: &GetStatsResponse) -> u64 {
    stats
        .containers
        .first()
        .and_then(|c| c.cgroup.as_ref())
        .and_then(|c| c.cpu.as_ref())
        .map_or(0, |c| c.usage_usec)
}

/// Boots the pod: a VM with the `pod` share from a real virtiofsd, a busybox
/// rootfs on it, and the sandbox set up.
async fn pod(mut config: VmConfig) -> (Pod, vessel_e2e::virtiofsd::Virtiofsd) {
    let (shared, virtiofsd) = share_busybox_rootfs(&mut config).await;
    let (vm, _, channel) = boot(config).await;
    let mut pod = Pod {
        vm,
        channel,
        shared,
        sandbox: SandboxInfo::default(),
    };
    let setup = SetupSandboxRequest {
        sandbox_id: "pod-engine".into(),
        hostname: "pod-engine".into(),
        mounts: vec![pod_share()],
        ..SetupSandboxRequest::default()
    };
    let mut sandbox = SandboxClient::new(pod.channel.clone());
    match within("Sandbox.Setup", sandbox.setup(setup)).await {
        Ok(reply) => pod.sandbox = reply.into_inner().sandbox.unwrap_or_default(),
        Err(s) => pod.fail("Sandbox.Setup", s),
    }
    (pod, virtiofsd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_seccomp_stats_exec_and_port_forward_work_in_the_guest() {
    let config = vm_config("pod-engine", 1, 256);
    let state_dir = config.state_dir.clone();
    let (pod, mut virtiofsd) = pod(config).await;
    let pid = pod.vm.pid().expect("pid");
    let mut events = pod.subscribe().await;

    // A memory limit: dd's 64 MiB buffer cannot fit under 32 MiB (no swap).
    let mut s = spec(&pod.sandbox, "dd if=/dev/zero of=/dev/null bs=64M count=1");
    s["linux"]["resources"] = json!({ "memory": { "limit": 33554432, "swap": 33554432 } });
    let (exit, _, err) = pod.run("oom", &s).await;
    assert!(exit.oom_killed && exit.signal == 9, "{exit:?} {err}");
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    let oom = pod
        .next_event(
            &mut events,
            "OOM kill",
            |k| matches!(k, Kind::OomKilled(o) if o.container_id == "oom"),
        )
        .await;
    assert!(matches!(oom, Kind::OomKilled(o) if o.oom_kills >= 1));
    let exited = pod
        .next_event(
            &mut events,
            "exit",
            |k| matches!(k, Kind::Exited(e) if e.container_id == "oom"),
        )
        .await;
    assert!(matches!(exited, Kind::Exited(e) if e.exit.is_some_and(|x| x.oom_killed)));

    // A pids limit: the 5th task cannot fork.
    let script = "i=0; while [ $i -lt 20 ]; do sleep 987021 & i=$((i+1)); done; echo all forked";
    let mut s = spec(&pod.sandbox, script);
    s["linux"]["resources"] = json!({ "pids": { "limit": 5 } });
    let (exit, out, err) = pod.run("pids", &s).await;
    assert!(
        err.contains("fork"),
        "{exit:?} stdout {out:?} stderr {err:?}"
    );
    assert!(!out.contains("all forked"), "{out}");

    // A seccomp profile: mkdir is denied with EPERM, the rest allowed.
    let mut s = spec(
        &pod.sandbox,
        "grep '^Seccomp:' /proc/self/status; mkdir /tmp/x || echo denied",
    );
    s["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
    });
    let (exit, out, err) = pod.run("seccomp", &s).await;
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out, "Seccomp:\t2\ndenied\n", "stderr {err}");
    assert!(err.contains("Operation not permitted"), "{err}");

    // vesseld's container spec (every container here has it), shaped like
    // containerd's default (cgroup namespace with a read-only cgroup2 mount,
    // mqueue, a read-only sysfs, masked and read-only paths), plus an
    // RLIMIT_NOFILE, checked from inside.
    let script = "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; \
                  ulimit -n; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
                  (echo x > /proc/sys/kernel/domainname) 2>/dev/null || echo proc-sys-ro; \
                  grep -q ' /dev/mqueue mqueue ' /proc/mounts && echo mqueue; \
                  grep -q ' /sys/fs/cgroup cgroup2 ro,' /proc/mounts && echo cgroup-ro";
    let mut s = spec(&pod.sandbox, script);
    s["process"]["rlimits"] = json!([{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }]);
    s["linux"]["resources"] = json!({
        "memory": { "limit": 50331648, "swap": 50331648 }, "pids": { "limit": 32 }
    });
    let (exit, out, err) = pod.run("defaults", &s).await;
    assert_eq!(exit.exit_code, 0, "stdout {out:?} stderr {err:?}");
    assert_eq!(
        out, "0::/\n50331648\n32\n1024\n0\n0\nproc-sys-ro\nmqueue\ncgroup-ro\n",
        "stderr {err:?}"
    );

    // Resources shaped as the kubelet sends them for a pod with limits
    // (swap = limit: no swap; a 0 limit for every hugepage size the host
    // has, 1GB included), on a container that burns CPU: the quota
    // throttles it, and its stats move.
    let mut s = spec(&pod.sandbox, "while :; do :; done");
    s["linux"]["resources"] = json!({
        "cpu": { "shares": 102, "quota": 50000, "period": 100000 },
        "memory": { "limit": 67108864, "swap": 67108864 },
        "pids": { "limit": 64 },
        "hugepageLimits": [
            { "pageSize": "2MB", "limit": 0 }, { "pageSize": "1GB", "limit": 0 }
        ]
    });
    pod.start("burn", &s).await;
    let before = cpu_usec(&pod.stats("burn").await);
    let deadline = Instant::now() + PATIENCE;
    let throttled = |s: &GetStatsResponse| {
        let cpu = s
            .containers
            .first()
            .and_then(|c| c.cgroup.as_ref()?.cpu.as_ref());
        cpu.is_some_and(|c| c.nr_throttled > 0)
    };
    let stats = loop {
        let stats = pod.stats("burn").await;
        if cpu_usec(&stats) >= before + 200_000 && throttled(&stats) {
            break stats;
        }
        if Instant::now() > deadline {
            pod.fail("200 ms of CPU time, throttled, never showed", stats);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pod_cpu = stats.pod.as_ref().and_then(|p| p.cpu.as_ref());
    assert!(
        pod_cpu.is_some_and(|c| c.usage_usec >= cpu_usec(&stats)),
        "{stats:?}"
    );
    let memory = stats.containers[0]
        .cgroup
        .as_ref()
        .and_then(|c| c.memory.as_ref());
    assert!(memory.is_some_and(|m| m.usage_bytes > 0), "{stats:?}");

    // An exec in it with a terminal, sized before it runs.
    let process = json!({
        "user": { "uid": 0, "gid": 0 }, "args": ["sh", "-c", "tty; stty size"],
        "env": ["PATH=/bin"], "cwd": "/", "terminal": true
    });
    let req = ExecProcessRequest {
        container_id: "burn".into(),
        exec_id: "tty".into(),
        process_json: process.to_string(),
        streams: Some(StreamStdio {
            stdin: false,
            terminal_size: Some(TerminalSize { rows: 24, cols: 80 }),
        }),
        ..ExecProcessRequest::default()
    };
    let mut processes = ProcessesClient::new(pod.channel.clone());
    if let Err(s) = within("Processes.Exec", processes.exec(req)).await {
        pod.fail("exec", s);
    }
    let out = collect_output(
        pod.channel.clone(),
        "burn",
        "tty",
        StdioStream::Stdout,
        4096,
    );
    let out = match tokio::time::timeout(PATIENCE, out).await {
        Ok(Ok(out)) => String::from_utf8_lossy(&out).replace('\r', ""),
        other => pod.fail("exec output", other),
    };
    assert!(out.starts_with("/dev/pts/"), "{out}");
    assert!(out.ends_with("\n24 80\n"), "{out}");
    let req = WaitProcessRequest {
        container_id: "burn".into(),
        exec_id: "tty".into(),
    };
    let exit = within("Processes.Wait", processes.wait(req)).await;
    assert_eq!(exit.map(|r| r.into_inner().exit_code).ok(), Some(0));

    // Signal: SIGKILL ends it as a shell would report it.
    let req = SignalContainerRequest {
        container_id: "burn".into(),
        signal: 9,
    };
    if let Err(s) = within("Containers.Signal", pod.containers().signal(req)).await {
        pod.fail("signal", s);
    }
    let exit = pod.wait("burn").await;
    assert_eq!((exit.exit_code, exit.signal), (137, 9), "{exit:?}");
    pod.delete("burn").await;

    // A port forward to a busybox nc listener in the pod.
    pod.start(
        "listener",
        &spec(
            &pod.sandbox,
            r#"exec nc -l -p 7001 -e sh -c 'read l; echo "got $l"'"#,
        ),
    )
    .await;
    let deadline = Instant::now() + PATIENCE;
    let (tx, mut rx) = loop {
        let (tx, rx) = mpsc::channel(4);
        let target = PortForwardRequest {
            message: Some(Message::Target(PortForwardTarget {
                port: 7001,
                address: String::new(),
            })),
        };
        tx.send(target).await.expect("queue the target");
        let mut client = PortForwardClient::new(pod.channel.clone());
        match within(
            "PortForward.Forward",
            client.forward(ReceiverStream::new(rx)),
        )
        .await
        {
            Ok(reply) => break (tx, reply.into_inner()),
            // Not listening yet.
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => pod.fail("forward", s),
        }
    };
    let data = PortForwardRequest {
        message: Some(Message::Data(b"one\n".to_vec())),
    };
    tx.send(data).await.expect("send");
    let mut got = Vec::new();
    while let Ok(Ok(Some(msg))) = tokio::time::timeout(PATIENCE, rx.message()).await {
        got.extend_from_slice(&msg.data);
    }
    assert_eq!(String::from_utf8_lossy(&got), "got one\n");
    assert_eq!(pod.wait("listener").await.exit_code, 0);
    pod.delete("listener").await;

    // Shutdown: the VMM exits 0 and nothing of the pod is left.
    let mut agent = AgentClient::new(pod.channel.clone());
    within("Agent.Shutdown", agent.shutdown(ShutdownRequest {}))
        .await
        .expect("Shutdown");
    let mut vm = pod.vm;
    let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
    assert_eq!(exit, VmExit::Code(0), "{}", console_tail(&vm));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(running_vmms(), Vec::<u32>::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut running = || virtiofsd.running().expect("wait for virtiofsd");
    while running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!running(), "virtiofsd outlived its VM");
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
}
