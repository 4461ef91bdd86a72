//! Container cgroups end to end: the `vessel-agent` binary as root in its own
//! mount and pid namespaces, with `--cgroup-root` pointing at a fresh cgroup
//! of this machine's cgroup v2 hierarchy, so parallel tests never share one.
//!
//! Everything but the limits runs on any cgroup v2 mount (cgroup.procs,
//! cgroup.kill and cpu.stat need no controller). The limit tests (OOM, pids,
//! cpu.max, memory stats) need the memory, pids and cpu controllers on v2;
//! the development and CI machines bind those to cgroup v1, so there they
//! skip with a note, and the e2e stage runs this binary again inside
//! `tests/kvm-host` (a full v2 hierarchy), where a missing controller fails.
//! The device program needs no controller (a BPF program on any cgroup v2
//! directory), so its test runs in both places and never skips.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::time::Instant;
use tonic::{Code, Streaming};
use vessel_agent::client::Channel;
use vessel_agent::proto::containers_client::ContainersClient;
use vessel_agent::proto::event::Kind;
use vessel_agent::proto::events_client::EventsClient;
use vessel_agent::proto::resources_client::ResourcesClient;
use vessel_agent::proto::stats_client::StatsClient;
use vessel_agent::proto::{
    CreateContainerRequest, DeleteContainerRequest, Event, GetStatsRequest, GetStatsResponse,
    ListProcessesRequest, ProcessInfo, StartContainerRequest, SubscribeEventsRequest,
    UpdateResourcesRequest, WaitContainerRequest, WaitContainerResponse,
};

use common::{add_mount, build_busybox_rootfs, minimal_spec, spawn_agent, BUSYBOX};

const APPLETS: &[&str] = &["sh", "sleep", "cat", "head", "dd", "echo", "true", "mknod"];
/// Deadline for conditions that take a moment (generous: the nested test host is slow).
const PATIENCE: Duration = Duration::from_secs(60);

/// The controllers the limit tests need.
const LIMIT_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Mount point of the cgroup v2 hierarchy here, if any.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// Whether these tests can run here; prints why not. In CI a missing prerequisite fails.
fn supported() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = Path::new(BUSYBOX).exists() && Path::new("/usr/bin/unshare").exists();
    let cgroup2 = cgroup2_mount().is_some();
    if !root || !tools || !cgroup2 {
        let why = format!("needs root, /usr/bin/unshare, {BUSYBOX} and a cgroup2 mount");
        assert!(
            std::env::var_os("CI").is_none(),
            "cgroup tests cannot run in CI: {why}"
        );
        eprintln!("skipped: {why}");
    }
    root && tools && cgroup2
}

/// The agent with its own cgroup subtree and a busybox rootfs.
struct Agent {
    child: Child,
    dir: TempDir,
    /// The cgroup given as `--cgroup-root`.
    cgroup: PathBuf,
    channel: Channel,
}

impl Agent {
    async fn start() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mount = cgroup2_mount().expect("cgroup2 mount");
        // On a full v2 host (the nested test host) the root may not pass the
        // controllers down yet; where they are bound to v1 nothing is changed.
        let offered = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        if offered.split_whitespace().any(|c| c == "memory") {
            for c in ["cpu", "cpuset", "memory", "pids", "hugetlb"] {
                let _ = fs::write(mount.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        let name = format!(
            "vessel-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let cgroup = mount.join(name);
        fs::create_dir(&cgroup).expect("create the test cgroup");
        let dir = tempfile::tempdir().expect("tempdir");
        build_busybox_rootfs(&dir.path().join("rootfs"), APPLETS);
        let (child, channel) = spawn_agent(
            dir.path(),
            &["--mount", "--pid"],
            "",
            &["--cgroup-root".as_ref(), cgroup.as_os_str()],
            PATIENCE,
        )
        .await;
        Self {
            child,
            dir,
            cgroup,
            channel,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The controllers containers get (the pod's subtree_control).
    fn controllers(&self) -> Vec<String> {
        fs::read_to_string(self.cgroup.join("vessel/pod/cgroup.subtree_control"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the limit tests can run; prints why not. Inside tests/kvm-host
    /// (a full cgroup v2 hierarchy) a missing controller is a failure.
    fn has_limit_controllers(&self) -> bool {
        let have = self.controllers();
        let missing: Vec<&str> = LIMIT_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect();
        if missing.is_empty() {
            return true;
        }
        assert!(
            std::env::var_os("VESSEL_KVM_HOST_INSIDE").is_none(),
            "cgroup v2 controllers {missing:?} missing inside the kvm test host"
        );
        eprintln!(
            "skipped: the cgroup v2 controllers {missing:?} are not available here (bound to \
             cgroup v1); the e2e stage runs this test inside tests/kvm-host"
        );
        false
    }

    fn container_cgroup(&self, id: &str) -> PathBuf {
        self.cgroup.join("vessel/pod").join(id)
    }

    fn out(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.out"))
    }

    fn err(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.err"))
    }

    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    async fn create(&self, id: &str, spec: &Value) -> Result<u32, tonic::Status> {
        let req = CreateContainerRequest {
            container_id: id.to_owned(),
            oci_spec_json: spec.to_string(),
            rootfs: self.dir.path().join("rootfs").display().to_string(),
            stdout_path: self.out(id).display().to_string(),
            stderr_path: self.err(id).display().to_string(),
            ..Default::default()
        };
        self.containers()
            .create(req)
            .await
            .map(|r| r.into_inner().pid)
    }

    /// Creates and starts, panicking with the log on failure.
    async fn run(&self, id: &str, spec: &Value) -> u32 {
        let pid = match self.create(id, spec).await {
            Ok(pid) => pid,
            Err(status) => panic!("create {id}: {status:?}\n{}", self.log()),
        };
        let req = StartContainerRequest {
            container_id: id.to_owned(),
        };
        if let Err(status) = self.containers().start(req).await {
            panic!("start {id}: {status:?}\n{}", self.log());
        }
        pid
    }

    async fn wait(&self, id: &str) -> WaitContainerResponse {
        let req = WaitContainerRequest {
            container_id: id.to_owned(),
        };
        match tokio::time::timeout(PATIENCE, self.containers().wait(req)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => panic!("wait {id}: {status:?}\n{}", self.log()),
            Err(_) => panic!("wait {id}: timed out\n{}", self.log()),
        }
    }

    async fn delete(&self, id: &str) {
        let req = DeleteContainerRequest {
            container_id: id.to_owned(),
        };
        if let Err(status) = self.containers().delete(req).await {
            panic!("delete {id}: {status:?}\n{}", self.log());
        }
    }

    async fn processes(&self, id: &str) -> Vec<ProcessInfo> {
        let req = ListProcessesRequest {
            container_id: id.to_owned(),
        };
        ResourcesClient::new(self.channel.clone())
            .list_processes(req)
            .await
            .expect("list processes")
            .into_inner()
            .processes
    }

    async fn stats(&self, ids: &[&str]) -> GetStatsResponse {
        let req = GetStatsRequest {
            container_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        };
        StatsClient::new(self.channel.clone())
            .get(req)
            .await
            .expect("stats")
            .into_inner()
    }

    async fn update(&self, id: &str, resources: &Value) -> Result<(), tonic::Status> {
        let req = UpdateResourcesRequest {
            container_id: id.to_owned(),
            resources_json: resources.to_string(),
        };
        ResourcesClient::new(self.channel.clone())
            .update(req)
            .await
            .map(drop)
    }

    async fn subscribe(&self) -> Streaming<Event> {
        EventsClient::new(self.channel.clone())
            .subscribe(SubscribeEventsRequest {})
            .await
            .expect("subscribe")
            .into_inner()
    }

    /// Waits (up to [`PATIENCE`]) for an event that `matches`; panics otherwise.
    async fn next_event(
        &self,
        stream: &mut Streaming<Event>,
        what: &str,
        matches: impl Fn(&Kind) -> bool,
    ) -> Kind {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Ok(Ok(Some(Event {
                    kind: Some(kind), ..
                }))) if matches(&kind) => return kind,
                Ok(Ok(Some(_))) => {}
                other => panic!("no {what} event: {other:?}\n{}", self.log()),
            }
        }
    }

    /// Polls stats until `ok` holds for the container's stats (up to [`PATIENCE`]).
    async fn stats_until(
        &self,
        id: &str,
        what: &str,
        ok: impl Fn(&GetStatsResponse) -> bool,
    ) -> GetStatsResponse {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let stats = self.stats(&[id]).await;
            if ok(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never happened: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kill whatever is left, then remove the test's cgroups deepest first.
        let _ = fs::write(self.cgroup.join("cgroup.kill"), "1");
        for _ in 0..200 {
            if remove_tree(&self.cgroup) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not remove {}", self.cgroup.display());
    }
}

/// Removes a cgroup and its children; whether it is gone.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    fs::remove_dir(dir).is_ok() || !dir.exists()
}

/// The minimal spec with a /tmp tmpfs.
fn spec(args: &[&str]) -> Value {
    let mut spec = minimal_spec(args);
    add_mount(
        &mut spec,
        json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"] }),
    );
    spec
}

/// Pids of live (non-zombie) processes whose command line contains `marker`, machine-wide.
fn processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|pid: &u32| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(marker)
        })
        .collect()
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
async fn processes_live_in_the_container_cgroup_and_die_with_it() {
    let agent = agent_or_skip!();
    let mut events = agent.subscribe().await;
    let pid = agent
        .run(
            "tree",
            &spec(&["sh", "-c", "sleep 987001 & sleep 987002 & wait"]),
        )
        .await;
    let cgroup = agent.container_cgroup("tree");
    assert!(cgroup.is_dir(), "no cgroup at {}", cgroup.display());
    // The container's init is in its cgroup (as the agent's pid namespace sees it).
    let deadline = Instant::now() + PATIENCE;
    let listed = loop {
        let listed = agent.processes("tree").await;
        // Both children must have exec'd (a fresh fork has an empty command line).
        let both = ["sleep 987001", "sleep 987002"]
            .iter()
            .all(|m| listed.iter().any(|p| p.command == *m));
        if both {
            break listed;
        }
        assert!(
            Instant::now() < deadline,
            "children never listed: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        listed.iter().any(|p| p.pid == pid),
        "{listed:?} lacks init {pid}"
    );
    for marker in ["sleep 987001", "sleep 987002"] {
        assert!(
            listed.iter().any(|p| p.command == marker),
            "{listed:?} lacks {marker}"
        );
    }
    // Stats of the container and the pod.
    let stats = agent.stats(&["tree"]).await;
    let container = stats.containers[0]
        .cgroup
        .as_ref()
        .expect("container stats");
    assert!(container.cpu.is_some());
    assert!(stats.pod.as_ref().and_then(|p| p.cpu.as_ref()).is_some());
    agent.delete("tree").await;
    assert!(!cgroup.exists(), "cgroup left after delete");
    assert!(
        processes_with("98700").is_empty(),
        "left: {:?}",
        processes_with("98700")
    );
    let exited = agent
        .next_event(
            &mut events,
            "exit of tree",
            |k| matches!(k, Kind::Exited(e) if e.container_id == "tree"),
        )
        .await;
    let Kind::Exited(exited) = exited else {
        unreachable!()
    };
    assert_eq!(exited.exit.map(|e| e.signal), Some(9));
    // Asking about a deleted container is NOT_FOUND.
    let req = ListProcessesRequest {
        container_id: "tree".into(),
    };
    let status = ResourcesClient::new(agent.channel.clone())
        .list_processes(req)
        .await
        .expect_err("deleted");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn processes_left_behind_by_init_are_killed_when_it_exits() {
    let agent = agent_or_skip!();
    // Joining the agent's pid namespace, the container's children outlive its
    // init unless the cgroup takes them down.
    let mut s = spec(&["sh", "-c", "sleep 987011 & echo started"]);
    s["linux"]["namespaces"] = json!([
        { "type": "pid", "path": "/proc/1/ns/pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
    ]);
    agent.run("orphans", &s).await;
    let exit = agent.wait("orphans").await;
    assert_eq!((exit.exit_code, exit.oom_killed), (0, false));
    assert_eq!(
        fs::read_to_string(agent.out("orphans")).unwrap_or_default(),
        "started\n"
    );
    // Wait returns after the cgroup was emptied and removed.
    assert!(
        processes_with("sleep 987011").is_empty(),
        "left: {:?}",
        processes_with("sleep 987011")
    );
    assert!(!agent.container_cgroup("orphans").exists());
    assert!(agent.processes("orphans").await.is_empty());
    agent.delete("orphans").await;
}

#[tokio::test]
async fn cpu_time_shows_in_stats() {
    let agent = agent_or_skip!();
    agent
        .run("burn", &spec(&["sh", "-c", "while :; do :; done"]))
        .await;
    let usage = |s: &GetStatsResponse| {
        s.containers[0]
            .cgroup
            .as_ref()
            .and_then(|c| c.cpu.as_ref())
            .map_or(0, |c| c.usage_usec)
    };
    let stats = agent
        .stats_until("burn", "200 ms of CPU time", |s| usage(s) > 200_000)
        .await;
    let pod = stats
        .pod
        .as_ref()
        .and_then(|p| p.cpu.as_ref())
        .map_or(0, |c| c.usage_usec);
    assert!(
        pod >= usage(&stats),
        "pod {pod} < container {}",
        usage(&stats)
    );
    agent.delete("burn").await;
    assert!(!agent.container_cgroup("burn").exists());
}

#[tokio::test]
async fn bad_resources_and_oom_score_adj() {
    let agent = agent_or_skip!();
    let mut s = spec(&["true"]);
    s["linux"]["resources"] = json!({ "cpu": { "shares": 1 } });
    let status = agent.create("bad", &s).await.expect_err("bad shares");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("oci_spec_json.linux.resources.cpu.shares"),
        "{status:?}"
    );
    let mut s = spec(&["true"]);
    s["process"]["oomScoreAdj"] = json!(2000);
    let status = agent.create("bad", &s).await.expect_err("bad oomScoreAdj");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("process.oomScoreAdj"),
        "{status:?}"
    );
    // A positive value needs no privilege (a negative one needs CAP_SYS_RESOURCE).
    let mut s = spec(&["cat", "/proc/self/oom_score_adj"]);
    s["process"]["oomScoreAdj"] = json!(500);
    agent.run("adj", &s).await;
    agent.wait("adj").await;
    assert_eq!(
        fs::read_to_string(agent.out("adj")).unwrap_or_default(),
        "500\n"
    );
    agent.delete("adj").await;
    if !agent.controllers().iter().any(|c| c == "memory") {
        // Where the memory controller is missing, a memory limit is refused clearly.
        let mut s = spec(&["true"]);
        s["linux"]["resources"] = json!({ "memory": { "limit": 33554432 } });
        let status = agent
            .create("nomem", &s)
            .await
            .expect_err("no memory controller");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("memory cgroup controller"),
            "{status:?}"
        );
    }
    // Nothing was left behind by the refused creates.
    let left: Vec<_> = fs::read_dir(agent.cgroup.join("vessel/pod"))
        .expect("pod cgroup")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "leftover cgroups: {left:?}");
}

#[tokio::test]
async fn memory_limit_ends_in_an_oom_kill() {
    let agent = agent_or_skip!();
    if !agent.has_limit_controllers() {
        return;
    }
    let mut events = agent.subscribe().await;
    // dd's 64 MiB buffer cannot fit under a 32 MiB limit without swap.
    let mut s = spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    s["linux"]["resources"] = json!({ "memory": { "limit": 33554432, "swap": 33554432 } });
    agent.run("oom", &s).await;
    assert_eq!(
        fs::read_to_string(agent.container_cgroup("oom").join("memory.max")).unwrap_or_default(),
        "33554432\n"
    );
    let exit = agent.wait("oom").await;
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, 9, "{exit:?}");
    let oom = agent
        .next_event(
            &mut events,
            "OOM kill",
            |k| matches!(k, Kind::OomKilled(o) if o.container_id == "oom"),
        )
        .await;
    let Kind::OomKilled(oom) = oom else {
        unreachable!()
    };
    assert!(oom.oom_kills >= 1);
    let exited = agent
        .next_event(
            &mut events,
            "exit",
            |k| matches!(k, Kind::Exited(e) if e.container_id == "oom"),
        )
        .await;
    let Kind::Exited(exited) = exited else {
        unreachable!()
    };
    assert_eq!(exited.exit.map(|e| e.oom_killed), Some(true));
    agent.delete("oom").await;
}

#[tokio::test]
async fn pids_limit_stops_forks() {
    let agent = agent_or_skip!();
    if !agent.has_limit_controllers() {
        return;
    }
    let script = "i=0; while [ $i -lt 20 ]; do sleep 987021 & i=$((i+1)); done; echo all forked";
    let mut s = spec(&["sh", "-c", script]);
    s["linux"]["resources"] = json!({ "pids": { "limit": 5 } });
    agent.run("pids", &s).await;
    let exit = agent.wait("pids").await;
    let err = fs::read_to_string(agent.err("pids")).unwrap_or_default();
    let out = fs::read_to_string(agent.out("pids")).unwrap_or_default();
    assert!(
        err.contains("fork"),
        "exit {exit:?}, stdout {out:?}, stderr {err:?}"
    );
    assert!(!out.contains("all forked"), "{out}");
    agent.delete("pids").await;
    assert!(processes_with("sleep 987021").is_empty());
}

#[tokio::test]
async fn cpu_limits_and_updates_reach_the_cgroup_files() {
    let agent = agent_or_skip!();
    if !agent.has_limit_controllers() {
        return;
    }
    let mut s = spec(&["sleep", "987031"]);
    s["linux"]["resources"] = json!({ "cpu": { "shares": 512, "quota": 20000, "period": 100000 } });
    agent.run("cpu", &s).await;
    let dir = agent.container_cgroup("cpu");
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert_eq!(read("cpu.max"), "20000 100000\n");
    assert_eq!(read("cpu.weight"), "20\n");
    agent
        .update(
            "cpu",
            &json!({ "cpu": { "quota": 50000 }, "memory": { "limit": 67108864 } }),
        )
        .await
        .expect("update");
    assert_eq!(read("cpu.max"), "50000 100000\n");
    assert_eq!(read("memory.max"), "67108864\n");
    let status = agent
        .update("cpu", &json!({ "cpu": { "shares": 1 } }))
        .await
        .expect_err("bad shares");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("resources_json: linux.resources.cpu.shares"),
        "{status:?}"
    );
    assert_eq!(read("cpu.max"), "50000 100000\n");
    let stats = agent.stats(&["cpu"]).await;
    let memory = stats.containers[0]
        .cgroup
        .as_ref()
        .and_then(|c| c.memory.as_ref())
        .expect("memory stats");
    assert_eq!(memory.limit_bytes, 67_108_864);
    agent.delete("cpu").await;
}

#[tokio::test]
async fn memory_use_shows_in_stats() {
    let agent = agent_or_skip!();
    if !agent.has_limit_controllers() {
        return;
    }
    // 64 MiB on the container's /tmp tmpfs is charged to its cgroup.
    agent
        .run(
            "alloc",
            &spec(&[
                "sh",
                "-c",
                "head -c 67108864 /dev/zero > /tmp/x; echo written; exec sleep 987041",
            ]),
        )
        .await;
    let memory = |s: &GetStatsResponse| s.containers[0].cgroup.as_ref().and_then(|c| c.memory);
    let stats = agent
        .stats_until("alloc", "64 MiB charged", |s| {
            memory(s).is_some_and(|m| m.usage_bytes >= 64 << 20)
        })
        .await;
    let m = memory(&stats).expect("memory");
    assert!(m.working_set_bytes >= 60 << 20, "{m:?}");
    assert!(m.page_faults > 0, "{m:?}");
    let pids = stats.containers[0]
        .cgroup
        .as_ref()
        .and_then(|c| c.pids.as_ref())
        .map_or(0, |p| p.current);
    assert!(pids >= 1);
    let pod = stats
        .pod
        .as_ref()
        .and_then(|p| p.memory.as_ref())
        .map_or(0, |m| m.usage_bytes);
    assert!(pod >= 64 << 20, "pod usage {pod}");
    agent.delete("alloc").await;
}

#[tokio::test]
async fn the_device_program_allows_only_the_specs_and_the_default_devices() {
    let agent = agent_or_skip!();
    // Root with CAP_MKNOD on a /dev without nodev: only the device program
    // stands between the container and a disk (8:0) or serial port (4:64).
    let script = "mknod /dev/disk b 8 0; echo disk=$?; \
        mknod /dev/serial c 4 64; echo serial=$?; \
        mknod /dev/null2 c 1 3 && echo x > /dev/null2 && echo null2=ok; \
        head -c 3 /dev/zero > /dev/null && echo null=ok; \
        head -c 8 /dev/urandom > /tmp/r && echo urandom=ok; \
        mknod /dev/tun c 10 200; echo tun-mknod=$?; \
        cat /dev/tun; echo tun-open=$?; cat /proc/mounts";
    let mut s = spec(&["sh", "-c", script]);
    // vesseld's read-only sysfs and cgroup2, made with fsopen/fsmount like every mount.
    add_mount(
        &mut s,
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"] }),
    );
    add_mount(
        &mut s,
        json!({ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }),
    );
    let caps = json!(["CAP_MKNOD", "CAP_DAC_OVERRIDE"]);
    s["process"]["capabilities"] =
        json!({ "bounding": caps, "effective": caps, "permitted": caps });
    // containerd's deny-all, then one spec rule: mknod (only) of 10:200.
    s["linux"]["resources"] = json!({ "devices": [
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "major": 10, "minor": 200, "access": "m" }
    ]});
    agent.run("devices", &s).await;
    let exit = agent.wait("devices").await;
    let out = fs::read_to_string(agent.out("devices")).unwrap_or_default();
    let err = fs::read_to_string(agent.err("devices")).unwrap_or_default();
    assert_eq!(exit.exit_code, 0, "{out}{err}");
    for line in [
        "disk=1",
        "serial=1",
        "null2=ok",
        "null=ok",
        "urandom=ok",
        "tun-mknod=0",
        "tun-open=1",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line} missing:\n{out}{err}"
        );
    }
    for mount in [
        "sysfs /sys sysfs ro,nosuid,nodev,noexec",
        "cgroup /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec,relatime",
        "tmpfs /dev tmpfs rw,nosuid,noexec",
    ] {
        assert!(out.contains(mount), "{mount:?} not mounted:\n{out}");
    }
    for denied in [
        "mknod: /dev/disk: Operation not permitted",
        "mknod: /dev/serial: Operation not permitted",
        "can't open '/dev/tun': Operation not permitted",
    ] {
        assert!(err.contains(denied), "no {denied:?}:\n{err}");
    }
    agent.delete("devices").await;
}

#[tokio::test]
async fn bad_device_rules_name_their_field_and_leave_no_cgroup() {
    let agent = agent_or_skip!();
    let mut s = spec(&["true"]);
    s["linux"]["resources"] = json!({ "devices": [
        { "allow": true, "type": "b", "major": 8, "minor": 0, "access": "rwx" }
    ]});
    let status = agent.create("baddev", &s).await.expect_err("bad access");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("linux.resources.devices[0].access"),
        "{status:?}"
    );
    assert!(!agent.container_cgroup("baddev").exists());
}

#[tokio::test]
async fn an_update_replaces_the_device_program() {
    let agent = agent_or_skip!();
    // mknod of 10:200 before and after the update; /flag in the rootfs says when.
    let script = "mknod /dev/a c 10 200; echo before=$?; \
        until cat /flag >/dev/null 2>&1; do sleep 0.05; done; \
        mknod /dev/b c 10 200; echo after=$?; \
        mknod /dev/c c 1 3; echo null=$?";
    let mut s = spec(&["sh", "-c", script]);
    let caps = json!(["CAP_MKNOD"]);
    s["process"]["capabilities"] =
        json!({ "bounding": caps, "effective": caps, "permitted": caps });
    s["linux"]["resources"] = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    agent.run("devupdate", &s).await;
    let out = || fs::read_to_string(agent.out("devupdate")).unwrap_or_default();
    let deadline = Instant::now() + PATIENCE;
    while !out().contains("before=") {
        assert!(Instant::now() < deadline, "never ran: {}", agent.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A bad rule changes nothing.
    let bad = json!({ "devices": [{ "allow": true, "type": "c", "major": -5 }] });
    let status = agent
        .update("devupdate", &bad)
        .await
        .expect_err("bad major");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("linux.resources.devices[0].major"),
        "{status:?}"
    );
    let allow = json!({ "devices": [
        { "allow": false, "access": "rwm" },
        { "allow": true, "type": "c", "major": 10, "minor": 200, "access": "m" }
    ]});
    if let Err(status) = agent.update("devupdate", &allow).await {
        panic!("update: {status:?}\n{}", agent.log());
    }
    fs::write(agent.dir.path().join("rootfs/flag"), "go").expect("flag");
    let exit = agent.wait("devupdate").await;
    let err = fs::read_to_string(agent.err("devupdate")).unwrap_or_default();
    assert_eq!(exit.exit_code, 0, "{err}");
    assert_eq!(out(), "before=1\nafter=0\nnull=0\n", "{err}");
    agent.delete("devupdate").await;
}
