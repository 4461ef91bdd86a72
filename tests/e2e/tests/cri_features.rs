//! What critest's validation suite checks of a container, against a real
//! `vesseld serve` and pod VMs: users and groups, a read-only rootfs,
//! capabilities, privileged or not, UpdateContainerResources, an OOM kill,
//! GetContainerEvents, `hostPort` through Debian's `portmap` plugin, one pod
//! reaching another, a rootfs write that dies with its container and shows
//! in its writable layer's stats, log
//! rotation (ReopenContainerLog), a frozen guest that blocks no other pod,
//! and a container that plants symlinks to host paths in what vesseld later
//! removes.
//!
//! Two pods in one test host; the leak check after both are removed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use tokio_stream::StreamExt;
use tonic::Code;
use vessel_e2e::cri::{
    code, container_config, nothing_left, pod_config, pull, remove_pod, run_pod, sh,
    start_container, status_of, wait_exited, Cri, Vesseld, POD_GATEWAY,
};
use vessel_e2e::registry::{push_busybox, push_one_file, scratch, Registry};

/// The bytes ContainerStats reports for a container's writable layer.
async fn writable_bytes(cri: &mut Cri, id: &str) -> u64 {
    let stats = cri
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .and_then(|s| s.writable_layer)
        .expect("a writable layer in ContainerStats");
    assert!(
        stats.inodes_used.as_ref().is_some_and(|i| i.value > 0),
        "{stats:?}"
    );
    stats.used_bytes.map_or(0, |b| b.value)
}

/// The VMM pid of a pod, from PodSandboxStatus's verbose info.
async fn vmm_pid(cri: &mut Cri, pod_id: &str) -> i32 {
    let info = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus verbose")
        .into_inner()
        .info;
    let vm: serde_json::Value =
        serde_json::from_str(info.get("info").map_or("", String::as_str)).expect("info JSON");
    vm["vm"]["pid"].as_i64().expect("vm.pid") as i32
}

/// The node port the web pod's `hostPort` maps to its port 80.
const HOST_PORT: i32 = 18080;

/// ExecSync's timeout (s) for the frozen guest: longer than the other
/// pod's calls take, shorter than vesseld's bound on one agent call (30 s).
const FROZEN_EXEC_TIMEOUT: i64 = 15;

/// CapEff of a process with every capability of the test kernel's 41.
const ALL_CAPS: &str = "000001ffffffffff";

fn security(sc: LinuxContainerSecurityContext) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}

/// A sleeping container with this security context.
fn sleeper(name: &str, image: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        linux: security(sc),
        ..container_config(name, image, &["sleep", "100000"])
    }
}

/// The body of `GET /` from `addr` (HTTP/1.0, from the test host), retried
/// for 30 s. By hand: the test host's static busybox wget crashes.
fn fetch(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let get = || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: vessel\r\n\r\n")?;
        let mut reply = String::new();
        s.take(1 << 20).read_to_string(&mut reply)?;
        match reply.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                Ok(body.to_string())
            }
            _ => Err(std::io::Error::other(format!("reply {reply:?}"))),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get() {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn iptables_nat() -> String {
    std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_else(|e| e.to_string())
}

/// Events of GetContainerEvents, collected in the background.
fn collect_events(mut cri: Cri) -> tokio::task::JoinHandle<Vec<(String, ContainerEventType)>> {
    tokio::spawn(async move {
        let mut stream = cri
            .runtime
            .get_container_events(GetEventsRequest::default())
            .await
            .expect("GetContainerEvents")
            .into_inner();
        let mut seen = Vec::new();
        while let Ok(Some(Ok(e))) =
            tokio::time::timeout(Duration::from_secs(600), stream.next()).await
        {
            let kind =
                ContainerEventType::try_from(e.container_event_type).expect("a known event type");
            // What the kubelet's evented PLEG reads instead of asking: the
            // pod's status and its containers' (a deleted one is gone).
            let own = e.containers_statuses.iter().any(|c| c.id == e.container_id);
            assert!(
                e.pod_sandbox_status.is_some()
                    && (own || kind == ContainerEventType::ContainerDeletedEvent),
                "an event without the pod's or the container's status: {e:?}"
            );
            seen.push((e.container_id, kind));
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_behave_as_critest_expects() {
    let dir = scratch("cri-features");
    let registry = Registry::start(&dir.join("registry"));
    let image = push_busybox(&registry.host()).await;
    let vesseld = Vesseld::start(&dir.join("vessel"), &registry.host());
    let mut cri = vesseld.connect().await;
    let events = collect_events(vesseld.connect().await);
    let logs = dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log_dir = logs.display().to_string();
    pull(&mut cri, &image).await;
    // An image no pod here uses: its layer is on the node, in no pod's share.
    let other = push_one_file(
        &registry.host(),
        "other",
        "other-image-file",
        b"not yours\n",
    )
    .await;
    pull(&mut cri, &other).await;

    // The web pod: busybox httpd on port 80, published on the node's HOST_PORT.
    let mut web_pod = pod_config("web", &log_dir);
    // A privileged container needs a privileged sandbox (as with containerd).
    web_pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    web_pod.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let web_id = run_pod(&mut cri, &vesseld, &web_pod).await;
    let web_ip = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: web_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    let httpd = start_container(
        &mut cri,
        &vesseld,
        &web_id,
        &web_pod,
        container_config(
            "httpd",
            &image,
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo served by the web pod > /www/index.html && exec httpd -f -p 80 -h /www",
            ],
        ),
    )
    .await;
    // What the pod's virtiofsd exports (its share, with each container's
    // rootfs mounted in it) holds its images' files and no other image's,
    // although the other image's layer is unpacked on the node.
    let find = |root: &std::path::Path, name: &str| {
        let out = std::process::Command::new("find")
            .arg(root)
            .args(["-name", name])
            .output()
            .expect("find");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shares = vesseld.run_dir().join("pods");
    assert!(
        !find(&shares, "busybox").is_empty(),
        "the pod's share has no busybox"
    );
    assert_eq!(
        find(&shares, "other-image-file"),
        "",
        "a pod sees an image it does not use"
    );
    assert!(
        !find(&vesseld.dir.join("state"), "other-image-file").is_empty(),
        "the other image is not unpacked on the node"
    );

    // The pod's server answers on the pod IP, and on the node's hostPort
    // (portmap's DNAT for local traffic).
    if let Err(e) = fetch(&format!("{web_ip}:80")) {
        let log = std::fs::read_to_string(logs.join("httpd.log")).unwrap_or_default();
        panic!(
            "the pod's httpd does not answer on {web_ip}: {e}\nits log: {log}\n{:?}\n{}",
            status_of(&mut cri, &httpd).await,
            vesseld.log()
        );
    }
    match fetch(&format!("{POD_GATEWAY}:{HOST_PORT}")) {
        Ok(page) => assert_eq!(page, "served by the web pod\n"),
        Err(e) => panic!(
            "hostPort {HOST_PORT} does not reach the pod ({web_ip}): {e}\n{}\n{}",
            iptables_nat(),
            vesseld.log()
        ),
    }

    // Users and groups, a read-only rootfs, dropped capabilities.
    let ids = start_container(
        &mut cri,
        &vesseld,
        &web_id,
        &web_pod,
        sleeper(
            "ids",
            &image,
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 2000 }),
                supplemental_groups: vec![3000],
                readonly_rootfs: true,
                capabilities: Some(Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    let out = sh(&mut cri, &ids, "id -u; id -g; id -G").await;
    assert_eq!(out.stdout, "1000\n2000\n2000 3000\n", "{out:?}");
    let out = sh(&mut cri, &ids, "touch /written").await;
    assert_ne!(out.exit_code, 0, "a read-only rootfs took a write: {out:?}");
    assert!(out.stderr.contains("Read-only file system"), "{out:?}");
    let out = sh(
        &mut cri,
        &ids,
        "touch /tmp/x 2>&1; grep CapEff /proc/self/status",
    )
    .await;
    assert!(out.stdout.contains("CapEff:\t0000000000000000"), "{out:?}");

    // Default capabilities (containerd's list) and an added one; privileged.
    let plain = start_container(
        &mut cri,
        &vesseld,
        &web_id,
        &web_pod,
        sleeper(
            "plain",
            &image,
            LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    let out = sh(
        &mut cri,
        &plain,
        "id -u; grep CapEff /proc/self/status; ip link set lo up && echo net_admin ok; \
         mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted",
    )
    .await;
    // containerd's default set (0xa80425fb) plus NET_ADMIN (bit 12).
    assert!(
        out.stdout.starts_with("0\nCapEff:\t00000000a80435fb\n"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("net_admin ok"),
        "NET_ADMIN was not added: {out:?}"
    );
    assert!(
        !out.stdout.contains("mounted"),
        "an unprivileged container mounted: {out:?}"
    );
    let privileged = start_container(
        &mut cri,
        &vesseld,
        &web_id,
        &web_pod,
        sleeper(
            "privileged",
            &image,
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let out = sh(
        &mut cri,
        &privileged,
        "grep CapEff /proc/self/status; mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted",
    )
    .await;
    assert!(
        out.stdout.contains(&format!("CapEff:\t{ALL_CAPS}")),
        "{out:?}"
    );
    assert!(out.stdout.contains("mounted"), "{out:?}");

    // UpdateContainerResources reaches the container's cgroup in the guest.
    cri.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: plain.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", vesseld.log()));
    let out = sh(
        &mut cri,
        &plain,
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
    )
    .await;
    assert_eq!(
        out.stdout,
        format!("{}\n50000 100000\n", 96 << 20),
        "{out:?}"
    );
    let resources = status_of(&mut cri, &plain).await.resources;
    assert_eq!(
        resources
            .and_then(|r| r.linux)
            .map(|l| l.memory_limit_in_bytes),
        Some(96 << 20)
    );

    // A container past its memory limit is OOM-killed, and says so.
    let hog = start_container(
        &mut cri,
        &vesseld,
        &web_id,
        &web_pod,
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 32 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..container_config(
                "hog",
                &image,
                &["sh", "-c", "x=a; while true; do x=$x$x; done"],
            )
        },
    )
    .await;
    let oom = wait_exited(&mut cri, &hog).await;
    assert_eq!(oom.reason, "OOMKilled", "{oom:?}");
    assert_eq!(oom.exit_code, 137, "{oom:?}");

    // A second pod reaches the first by its IP, and its web server.
    let client_pod = pod_config("client", &log_dir);
    let client_id = run_pod(&mut cri, &vesseld, &client_pod).await;
    let client = start_container(
        &mut cri,
        &vesseld,
        &client_id,
        &client_pod,
        container_config("client", &image, &["sleep", "100000"]),
    )
    .await;
    let out = sh(
        &mut cri,
        &client,
        // nc, not wget: the static busybox's wget crashes (glibc's resolver).
        &format!(
            "ping -c 1 -W 5 {web_ip} >/dev/null && echo reached; \
             printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {web_ip} 80 | grep served"
        ),
    )
    .await;
    assert_eq!(out.stdout, "reached\nserved by the web pod\n", "{out:?}");

    // A container's writes to its rootfs are its own: gone with it, never
    // in the image's shared layer, unseen by the next container.
    let writer = start_container(
        &mut cri,
        &vesseld,
        &client_id,
        &client_pod,
        container_config("writer", &image, &["sleep", "100000"]),
    )
    .await;
    let out = sh(
        &mut cri,
        &writer,
        "echo mine > /bin/written-by-a-container && cat /bin/written-by-a-container",
    )
    .await;
    assert_eq!(out.stdout, "mine\n", "{out:?}");
    // The writable layer's use is in its stats (the kubelet's ephemeral
    // storage accounting), a guest-planted symlink out of it not followed.
    let before = writable_bytes(&mut cri, &writer).await;
    let out = sh(
        &mut cri,
        &writer,
        "dd if=/dev/zero of=/big bs=64k count=64 2>/dev/null && ln -s /etc /etc-link && sync && echo ok",
    )
    .await;
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    let after = writable_bytes(&mut cri, &writer).await;
    assert!(
        after >= before + (4 << 20),
        "writable layer {before} -> {after} bytes after a 4 MiB write"
    );
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: writer.clone(),
            timeout: 0,
        })
        .await
        .expect("StopContainer writer");
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: writer.clone(),
        })
        .await
        .expect("RemoveContainer writer");
    let out = sh(
        &mut cri,
        &client,
        "test -e /bin/written-by-a-container && echo seen || echo unseen",
    )
    .await;
    assert_eq!(out.stdout, "unseen\n", "{out:?}");
    let images = vesseld.dir.join("state").join("images");
    let found = std::process::Command::new("find")
        .arg(&images)
        .args(["-name", "written-by-a-container"])
        .output()
        .expect("find");
    assert!(
        found.stdout.is_empty(),
        "the write is left in the image store: {}",
        String::from_utf8_lossy(&found.stdout)
    );

    // Log rotation as the kubelet does it: rename the file, then
    // ReopenContainerLog; the lines that follow go to a new file.
    let ticker = start_container(
        &mut cri,
        &vesseld,
        &client_id,
        &client_pod,
        container_config(
            "ticker",
            &image,
            &[
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            ],
        ),
    )
    .await;
    let log = logs.join("ticker.log");
    let rotated = logs.join("ticker.log.1");
    let ticks = |path: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                // <RFC3339Nano> stdout F tick N
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                assert_eq!(f.len(), 4, "a CRI log line: {l:?}");
                assert_eq!((f[1], f[2]), ("stdout", "F"), "{l:?}");
                f[3].strip_prefix("tick ")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("a tick line: {l:?}"))
            })
            .collect()
    };
    let wait_for_ticks = |path: std::path::PathBuf| async move {
        for _ in 0..150 {
            if std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() >= 3) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no ticks in {}", path.display());
    };
    wait_for_ticks(log.clone()).await;
    std::fs::rename(&log, &rotated).expect("rotate the log");
    cri.runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    wait_for_ticks(log.clone()).await;
    let (before, after) = (ticks(&rotated), ticks(&log));
    let last = *before.last().expect("ticks before the rotation");
    assert_eq!(
        before,
        (before[0]..=last).collect::<Vec<_>>(),
        "ticks before the rotation are whole and in order"
    );
    assert!(
        after[0] > last,
        "after the rotation: {after:?}, before: {before:?}"
    );
    let (c, m) = code(
        cri.runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: hog.clone(),
            })
            .await,
    );
    assert_eq!(
        c,
        Code::FailedPrecondition,
        "reopening an exited container's log: {m}"
    );

    // A container plants symlinks to host paths in its rootfs and in a
    // read-write hostPath; removing it and its pod follows none of them.
    let canary = dir.join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("keep"), "keep\n").unwrap();
    let rw = dir.join("planted");
    std::fs::create_dir_all(&rw).unwrap();
    let planter = start_container(
        &mut cri,
        &vesseld,
        &client_id,
        &client_pod,
        ContainerConfig {
            mounts: vec![Mount {
                container_path: "/rw".into(),
                host_path: rw.display().to_string(),
                ..Default::default()
            }],
            ..container_config("planter", &image, &["sleep", "100000"])
        },
    )
    .await;
    let c = canary.display();
    let out = sh(
        &mut cri,
        &planter,
        &format!(
            "ln -s {c} /canary && ln -s / /rootlink && ln -s /etc /rw/etc && ln -s {c} /rw/canary \
             && mkdir -p /deep/er && ln -s {c}/keep /deep/er/keep && echo planted"
        ),
    )
    .await;
    assert_eq!(out.stdout, "planted\n", "{out:?}");

    // A guest that never answers (its VMM stopped) blocks nothing else: the
    // other pod's calls and the node-wide lists answer while a call to it
    // waits, and that call ends with DeadlineExceeded, not a hang.
    let frozen_vmm = vmm_pid(&mut cri, &client_id).await;
    // SAFETY: kill(2) of the client pod's VMM, a process this test started.
    assert_eq!(unsafe { libc::kill(frozen_vmm, libc::SIGSTOP) }, 0);
    let mut frozen_cri = vesseld.connect().await;
    let frozen_planter = planter.clone();
    let frozen_call = tokio::spawn(async move {
        let started = Instant::now();
        let r = frozen_cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: frozen_planter,
                cmd: vec!["true".into()],
                timeout: FROZEN_EXEC_TIMEOUT,
            })
            .await;
        (code(r), started.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = sh(&mut cri, &ids, "echo alive").await;
    assert_eq!(out.stdout, "alive\n", "the other pod's ExecSync: {out:?}");
    assert_eq!(
        fetch(&format!("{web_ip}:80")).as_deref(),
        Ok("served by the web pod\n")
    );
    // The node-wide lists wait at most 5 s for the frozen guest, at once.
    let mut other = vesseld.connect().await;
    let (pods, containers) = tokio::join!(
        cri.runtime
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default()),
        other
            .runtime
            .list_container_stats(ListContainerStatsRequest::default()),
    );
    let pods = pods
        .expect("ListPodSandboxStats with a frozen guest")
        .into_inner()
        .stats;
    assert_eq!(pods.len(), 2, "both pods listed: {pods:?}");
    let containers = containers
        .expect("ListContainerStats with a frozen guest")
        .into_inner()
        .stats;
    assert!(
        containers
            .iter()
            .any(|c| c.attributes.as_ref().is_some_and(|a| a.id == ids)),
        "{containers:?}"
    );
    assert!(
        !frozen_call.is_finished(),
        "the frozen pod's ExecSync ended before the other pod's calls"
    );
    let ((c, m), took) = frozen_call.await.expect("the frozen pod's ExecSync task");
    assert_eq!(c, Code::DeadlineExceeded, "ExecSync to a frozen guest: {m}");
    // Its own timeout ends it, not vesseld's 30 s bound on one agent call.
    assert!(took < Duration::from_secs(29), "took {took:?}: {m}");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(frozen_vmm, libc::SIGCONT) }, 0);
    let out = sh(&mut cri, &planter, "echo thawed").await;
    assert_eq!(out.stdout, "thawed\n", "after SIGCONT: {out:?}");

    // Stop and remove everything; every container's lifecycle is in the events.
    let all = [
        &httpd,
        &ids,
        &plain,
        &privileged,
        &hog,
        &client,
        &writer,
        &ticker,
        &planter,
    ];
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: planter.clone(),
        })
        .await
        .expect("RemoveContainer planter");
    remove_pod(&mut cri, &vesseld, &client_id).await;
    remove_pod(&mut cri, &vesseld, &web_id).await;
    assert_eq!(
        std::fs::read_to_string(canary.join("keep")).ok().as_deref(),
        Some("keep\n"),
        "the canary the symlinks point at was touched"
    );
    assert!(std::fs::symlink_metadata(rw.join("etc")).is_ok_and(|m| m.is_symlink()));
    assert!(std::path::Path::new("/etc/passwd").exists());
    nothing_left(&mut cri, &vesseld, &web_id).await;
    nothing_left(&mut cri, &vesseld, &client_id).await;

    drop(vesseld);
    let seen = events.await.expect("the event reader");
    let by_container: HashMap<&str, Vec<ContainerEventType>> =
        seen.iter().fold(HashMap::new(), |mut m, (id, kind)| {
            m.entry(id.as_str()).or_default().push(*kind);
            m
        });
    for id in all {
        assert_eq!(
            by_container.get(id.as_str()).map(Vec::as_slice),
            Some(
                &[
                    ContainerEventType::ContainerCreatedEvent,
                    ContainerEventType::ContainerStartedEvent,
                    ContainerEventType::ContainerStoppedEvent,
                    ContainerEventType::ContainerDeletedEvent,
                ][..]
            ),
            "events of {id}: {seen:?}"
        );
    }
}
