//! vesseld as a CRI runtime, driven through its socket as the kubelet
//! drives it, with real parts: `vesseld serve`, a registry on 127.0.0.1
//! (Debian's docker-registry) holding a busybox image, the node's CNI chain
//! (Debian's bridge, host-local, portmap), pod VMs booted by vessel-vmm.
//!
//! One test host boots a few pods, so the lifecycle, bad requests, logs,
//! ExecSync, networking and the leak checks share one test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use tonic::Code;
use vessel_e2e::cri::{
    code, container_config, no_pod_leftovers, nothing_left, ping, pod_config, pull, remove_pod,
    start_container, status_of, wait_exited, Vesseld, POD_GATEWAY,
};
use vessel_e2e::registry::{push_busybox, scratch, Registry};
use vessel_e2e::running_vmms;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_through_the_cri_and_leaves_nothing() {
    let dir = scratch("cri-pod");
    let registry = Registry::start(&dir.join("registry"));
    let image = push_busybox(&registry.host()).await;
    // A handler whose kernel is not one: its pods fail after the netns,
    // CNI ADD, tap, virtiofsd and cgroup are made, and must roll them back.
    let not_a_kernel = dir.join("not-a-kernel");
    std::fs::write(&not_a_kernel, "not a kernel\n").unwrap();
    let broken = format!(
        "[runtime_handlers.broken]\nkernel = \"{}\"\ninitramfs = \"{}\"\nvmm = \"{}\"\nvirtiofsd = \"{}\"\n",
        not_a_kernel.display(),
        vessel_e2e::env_path("VESSEL_INITRAMFS").display(),
        vessel_e2e::env_path("VESSEL_VMM").display(),
        vessel_e2e::env_path("VESSEL_VIRTIOFSD").display(),
    );
    let mut vesseld = Vesseld::start_with(&dir.join("vessel"), &registry.host(), &broken);
    let mut cri = vesseld.connect().await;
    let logs = dir.join("pod-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log_dir = logs.display().to_string();

    // Version and Status.
    let v = cri
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("vessel", "v1")
    );
    let st = cri
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = st.status.unwrap().conditions;
    for c in &conditions {
        assert!(
            c.status,
            "condition {} is false: {} {}",
            c.r#type, c.reason, c.message
        );
    }

    // The image, pulled from the registry.
    let pulled = pull(&mut cri, &image).await;
    assert!(pulled.starts_with("sha256:"), "{pulled}");

    // Bad requests get the right codes and name what is wrong.
    let mut bad = pod_config("bad", &log_dir);
    bad.metadata.as_mut().unwrap().name.clear();
    let (c, m) = code(
        cri.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(bad),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("metadata.name"), "{m}");
    let (c, m) = code(
        cri.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config("bad", &log_dir)),
                runtime_handler: "kata".into(),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("kata"), "{m}");
    let mut host_net = pod_config("bad", &log_dir);
    host_net.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (c, m) = code(
        cri.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(host_net),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("hostNetwork"), "{m}");
    let (c, _) = code(
        cri.runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: "ffffffff".into(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    let (c, _) = code(
        cri.runtime
            .start_container(StartContainerRequest {
                container_id: "ffffffff".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert_eq!(
        running_vmms(),
        Vec::<u32>::new(),
        "a refused pod left a VMM"
    );
    // A pod that fails half-way (its VM cannot boot) leaves nothing behind.
    let failed = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("broken", &log_dir)),
            runtime_handler: "broken".into(),
        })
        .await
        .expect_err("a pod whose kernel is not one");
    eprintln!("RunPodSandbox with the broken handler: {failed}");
    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "a failed pod is listed: {listed:?}");
    no_pod_leftovers(&vesseld);
    // The error says why, although the VMM's log went with the rollback.
    assert!(failed.message().contains("not an ELF vmlinux"), "{failed}");

    // A pod.
    let config = pod_config("web", &log_dir);
    let pod_id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", vesseld.log()))
        .into_inner()
        .pod_sandbox_id;
    let (c, m) = code(
        cri.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await,
    );
    assert_eq!(c, Code::AlreadyExists, "{m}");
    assert!(m.contains(&pod_id), "{m}");
    let status = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id[..12].into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus by id prefix")
        .into_inner();
    let s = status.status.unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    let pod_ip = s.network.unwrap().ip;
    assert!(pod_ip.starts_with("10.99.0."), "pod IP {pod_ip}");
    assert!(
        status.info["info"].contains("\"vcpus\""),
        "{:?}",
        status.info
    );
    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([("app".into(), "web".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed.len(), 1);

    // A container that writes to both streams and exits 3.
    let mut hostpath = dir.join("hostpath");
    std::fs::create_dir_all(&hostpath).unwrap();
    std::fs::write(hostpath.join("from-host"), "host data\n").unwrap();
    let mut short = container_config(
        "short",
        &image,
        &["sh", "-c", "echo $GREETING from $(pwd); echo oops >&2; cat /data/from-host; echo written > /rw/from-guest; touch /data/from-guest 2>/dev/null && echo ro-mount-written || echo ro-mount-refused; hostname; cat /etc/resolv.conf; exit 3"],
    );
    short.mounts = vec![
        Mount {
            container_path: "/data".into(),
            host_path: hostpath.display().to_string(),
            readonly: true,
            ..Default::default()
        },
        Mount {
            container_path: "/rw".into(),
            host_path: dir.join("rw").display().to_string(),
            readonly: false,
            ..Default::default()
        },
    ];
    let (c, m) = code(
        cri.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(ContainerConfig {
                    log_path: "../escape.log".into(),
                    ..short.clone()
                }),
                sandbox_config: Some(config.clone()),
            })
            .await,
    );
    assert_eq!(c, Code::InvalidArgument, "{m}");
    assert!(m.contains("log_path"), "{m}");
    let short_id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(short.clone()),
            sandbox_config: Some(config.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", vesseld.log()))
        .into_inner()
        .container_id;
    let (c, m) = code(
        cri.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(short.clone()),
                sandbox_config: Some(config.clone()),
            })
            .await,
    );
    assert_eq!(c, Code::AlreadyExists, "{m}");
    assert!(m.contains(&short_id), "{m}");
    // A container that fails half-way (its rootfs and first mount made, the
    // second mount's host path under a file) leaves no mount, record or
    // name behind.
    let mounts_before = our_mounts(&vesseld);
    let mut half = container_config("half", &image, &["true"]);
    half.mounts = vec![
        Mount {
            container_path: "/ok".into(),
            host_path: dir.join("rw").display().to_string(),
            ..Default::default()
        },
        Mount {
            container_path: "/bad".into(),
            host_path: "/etc/hostname/below-a-file".into(),
            ..Default::default()
        },
    ];
    let create_half = |container: ContainerConfig| CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container),
        sandbox_config: Some(config.clone()),
    };
    let (c, m) = code(
        cri.runtime
            .create_container(create_half(half.clone()))
            .await,
    );
    assert_ne!(c, Code::Ok, "{m}");
    assert!(m.contains("below-a-file"), "{m}");
    assert_eq!(
        our_mounts(&vesseld),
        mounts_before,
        "a failed container left mounts"
    );
    half.mounts.truncate(1);
    let half_id = cri
        .runtime
        .create_container(create_half(half))
        .await
        .expect("the failed container's name is free again")
        .into_inner()
        .container_id;
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: half_id,
        })
        .await
        .expect("RemoveContainer half");
    assert_eq!(
        our_mounts(&vesseld),
        mounts_before,
        "a removed container left mounts"
    );
    assert_eq!(
        status_of(&mut cri, &short_id).await.state,
        ContainerState::ContainerCreated as i32
    );
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: short_id.clone(),
        })
        .await
        .expect("StartContainer");
    let exited = wait_exited(&mut cri, &short_id).await;
    assert_eq!(
        (exited.exit_code, exited.reason.as_str()),
        (3, "Error"),
        "{exited:?}"
    );
    assert!(exited.started_at > 0 && exited.finished_at >= exited.started_at);
    hostpath = std::path::PathBuf::from(&exited.log_path);
    // Logs in the kubelet's format.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&hostpath).unwrap_or_default();
        if log.contains("nameserver") || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("container log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.ends_with(" stdout F hello from CRI from /tmp")),
        "{log}"
    );
    assert!(log.lines().any(|l| l.ends_with(" stderr F oops")), "{log}");
    assert!(log.contains("stdout F host data"), "{log}");
    assert!(log.contains("stdout F ro-mount-refused"), "{log}");
    assert!(!dir.join("hostpath/from-guest").exists());
    assert!(log.contains("stdout F web"), "hostname: {log}");
    assert!(log.contains("stdout F nameserver 10.99.0.53"), "{log}");
    assert!(log.contains("search e2e.svc.cluster.local"), "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.join("rw/from-guest")).unwrap(),
        "written\n"
    );
    // Written by the container's root: on the node it belongs to the base
    // of the pod's [pod_ids] slot (the default block), not to root.
    let written = std::fs::metadata(dir.join("rw/from-guest")).unwrap();
    let uid = std::os::unix::fs::MetadataExt::uid(&written);
    let gid = std::os::unix::fs::MetadataExt::gid(&written);
    assert!(
        uid >= 0x7000_0000 && (uid - 0x7000_0000).is_multiple_of(65_536) && gid == uid,
        "the guest's file on the hostPath is owned by {uid}:{gid}"
    );

    // A long-running container: ExecSync, StopContainer.
    let long_id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("long", &image, &["sleep", "1000"])),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("CreateContainer long")
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: long_id.clone(),
        })
        .await
        .expect("StartContainer long");
    // The pod's IP answers from the node, and the node from the pod.
    if !ping(&pod_ip) {
        let inside = cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: long_id.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "ip addr; ip route; ip neigh; ping -c 1 -W 3 10.99.0.1".into(),
                ],
                timeout: 20,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&r.stdout),
                    String::from_utf8_lossy(&r.stderr)
                )
            });
        let ns = format!("vessel-{}", &pod_id[..16]);
        let sh = |c: &str| {
            String::from_utf8_lossy(
                &std::process::Command::new("sh")
                    .args(["-c", c])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .into_owned()
        };
        panic!(
            "pod IP {pod_ip} does not answer ping from the node\nin the pod: {inside:?}\nnetns: {}\n{}\nnode: {}\nvesseld:\n{}",
            sh(&format!("ip -n {ns} -s link; ip -n {ns} addr")),
            sh(&format!("tc -n {ns} -s filter show dev eth0 ingress; tc -n {ns} -s filter show dev tap0 ingress")),
            sh("ip -s link show vsl0; ip addr show vsl0; ip neigh"),
            vesseld.log()
        );
    }
    let exec = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: long_id[..12].into(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo out $GREETING; echo err >&2; exit 7".into(),
            ],
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(exec.exit_code, 7);
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "out hello from CRI\n"
    );
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");
    let (c, m) = code(
        cri.runtime
            .exec_sync(ExecSyncRequest {
                container_id: long_id.clone(),
                cmd: vec!["sleep".into(), "100".into()],
                timeout: 2,
            })
            .await,
    );
    assert_eq!(c, Code::DeadlineExceeded, "{m}");
    // Output past the kubelet's 16 MiB per stream is cut there; the
    // command still runs to its end and its exit code comes back.
    let big = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: long_id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "head -c 17825792 /dev/zero; echo done >&2; exit 4".into(),
            ],
            timeout: 120,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync of 17 MiB: {e}\n{}", vesseld.log()))
        .into_inner();
    assert_eq!(
        (big.stdout.len(), big.stderr.as_slice(), big.exit_code),
        (16 << 20, b"done\n".as_slice(), 4)
    );
    assert!(big.stdout.iter().all(|&b| b == 0));

    // Stats from the pod's agent.
    let cs = cri
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: long_id.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    assert!(
        cs.memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .is_some_and(|w| w.value > 0),
        "{cs:?}"
    );
    assert!(
        cs.cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .is_some(),
        "{cs:?}"
    );
    let ps = cri
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    assert_eq!(ps.len(), 1, "{ps:?}");
    let linux = ps[0].linux.as_ref().unwrap();
    assert!(
        linux
            .network
            .as_ref()
            .and_then(|n| n.default_interface.as_ref())
            .is_some_and(|i| i.rx_bytes.as_ref().is_some_and(|b| b.value > 0)),
        "{linux:?}"
    );
    assert_eq!(linux.containers.len(), 1, "{linux:?}");
    // The pod's memory is its host cgroup's: the VMM with the guest RAM it
    // touched, and virtiofsd.
    let pod_memory = linux
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |w| w.value);
    assert!(
        pod_memory > 32 << 20,
        "pod working set {pod_memory}: {linux:?}"
    );
    assert!(
        linux
            .cpu
            .as_ref()
            .is_some_and(|c| c.usage_core_nano_seconds.is_some()),
        "{linux:?}"
    );

    // kill -9 of vesseld: the pod keeps running; a container that exits and
    // writes while vesseld is down is found exited, its output in its log.
    let late_id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(
                "late",
                &image,
                &[
                    "sh",
                    "-c",
                    "sleep 4; echo written while vesseld was down; exit 5",
                ],
            )),
            sandbox_config: Some(config.clone()),
        })
        .await
        .expect("CreateContainer late")
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: late_id.clone(),
        })
        .await
        .expect("StartContainer late");
    let vmms = running_vmms();
    let killed_at = now_nanos();
    vesseld.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(running_vmms(), vmms, "the pod VM did not outlive vesseld");
    let respawned_at = now_nanos();
    vesseld.spawn();
    let mut cri = vesseld.connect().await;
    let s = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        s.state,
        PodSandboxState::SandboxReady as i32,
        "after a restart:\n{}",
        vesseld.log()
    );
    // CHECK ran on the adopted pod's network. Its outcome is logged, not
    // asserted: Debian's bridge plugin fails it now and then when udev has
    // given the host veth a new MAC after ADD (docs/architecture.md).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !vesseld
        .log()
        .contains("CNI CHECK of the adopted pod's network")
    {
        assert!(
            Instant::now() < deadline,
            "no CNI CHECK after the restart:\n{}",
            vesseld.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = wait_exited(&mut cri, &late_id).await;
    assert_eq!(late.exit_code, 5, "{late:?}");
    // Its finish time is when it exited (about 4 s after vesseld was
    // killed, by the guest's clock, which may lag the host's by a second or
    // two in the nested test host), not when vesseld came back (8 s).
    assert!(
        late.finished_at > killed_at - 3_000_000_000
            && late.finished_at < respawned_at - 1_000_000_000,
        "finished at {} (vesseld killed at {killed_at}, back at {respawned_at})",
        late.finished_at
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&late.log_path)
        .unwrap_or_default()
        .contains("written while vesseld was down")
    {
        assert!(
            Instant::now() < deadline,
            "the output made while vesseld was down is not in the log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_of(&mut cri, &long_id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let exec = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: long_id.clone(),
            cmd: vec!["echo".into(), "still here".into()],
            timeout: 30,
        })
        .await
        .expect("ExecSync after a restart")
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "still here\n");
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: late_id.clone(),
        })
        .await
        .expect("RemoveContainer late");

    let containers = cri
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    if containers.iter().map(|c| c.id.as_str()).collect::<Vec<_>>() != [long_id.as_str()] {
        panic!(
            "running containers {containers:?}; long: {:?}\n{}",
            status_of(&mut cri, &long_id).await,
            vesseld.log()
        );
    }
    let stopping = Instant::now();
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: long_id.clone(),
            timeout: 2,
        })
        .await
        .expect("StopContainer");
    let stopped = status_of(&mut cri, &long_id).await;
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32);
    // The image's StopSignal (SIGTERM) ended it before the timeout.
    assert_eq!(stopped.exit_code, 143, "{stopped:?}");
    eprintln!("StopContainer took {:?}", stopping.elapsed());
    // A container that ignores SIGTERM: SIGKILL once the timeout is over.
    let stubborn = start_container(
        &mut cri,
        &vesseld,
        &pod_id,
        &config,
        container_config(
            "stubborn",
            &image,
            &[
                "sh",
                "-c",
                "trap '' TERM; echo ignoring TERM; while :; do sleep 1; done",
            ],
        ),
    )
    .await;
    // Stopped only once its trap is set (a signal before would end it).
    let log_path = status_of(&mut cri, &stubborn).await.log_path;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("ignoring TERM")
    {
        assert!(
            Instant::now() < deadline,
            "the stubborn container never set its trap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopping = Instant::now();
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: stubborn.clone(),
            timeout: 2,
        })
        .await
        .expect("StopContainer stubborn");
    let took = stopping.elapsed();
    let stopped = status_of(&mut cri, &stubborn).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (ContainerState::ContainerExited as i32, 137),
        "{stopped:?}"
    );
    assert!(
        took >= Duration::from_secs(2),
        "killed before the timeout: {took:?}"
    );
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: stubborn,
        })
        .await
        .expect("RemoveContainer stubborn");
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: short_id.clone(),
        })
        .await
        .expect("RemoveContainer");
    let (c, _) = code(
        cri.runtime
            .container_status(ContainerStatusRequest {
                container_id: short_id.clone(),
                verbose: false,
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);

    // Stop and remove the pod; twice each (idempotent).
    for _ in 0..2 {
        cri.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", vesseld.log()));
    }
    let s = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
    assert!(!ping(&pod_ip), "the stopped pod's IP still answers");
    for _ in 0..2 {
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", vesseld.log()));
    }

    nothing_left(&mut cri, &vesseld, &pod_id).await;

    // A pod whose VMM dies: NotReady, its container exited saying why;
    // Stop and Remove still clean everything up.
    let victim_config = pod_config("victim", &log_dir);
    let victim = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(victim_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox victim")
        .into_inner()
        .pod_sandbox_id;
    let doomed = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: victim.clone(),
            config: Some(container_config("doomed", &image, &["sleep", "1000"])),
            sandbox_config: Some(victim_config.clone()),
        })
        .await
        .expect("CreateContainer doomed")
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: doomed.clone(),
        })
        .await
        .expect("StartContainer doomed");
    let vmms = running_vmms();
    assert_eq!(vmms.len(), 1, "{vmms:?}");
    // SAFETY: kill(2) of the pod's VMM, found by its executable.
    assert_eq!(unsafe { libc::kill(vmms[0] as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = cri
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: victim.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if s.state == PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sandbox of a killed VMM stays ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = wait_exited(&mut cri, &doomed).await;
    assert!(gone.message.contains("pod VM"), "{gone:?}");
    assert_eq!(gone.reason, "PodVMExited", "{gone:?}");
    assert_ne!(gone.exit_code, 0, "{gone:?}");
    remove_pod(&mut cri, &vesseld, &victim).await;
    nothing_left(&mut cri, &vesseld, &victim).await;
    let _ = POD_GATEWAY;

    // SIGTERM stops the daemon cleanly and removes its socket.
    let status = vesseld.terminate();
    assert!(
        status.success(),
        "vesseld exited with {status}\n{}",
        vesseld.log()
    );
    assert!(!vesseld.socket.exists(), "the CRI socket is left");
}

/// The mounts under vesseld's scratch root, sorted.
fn our_mounts(vesseld: &Vesseld) -> Vec<String> {
    let root = vesseld.dir.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).filter(|p| p.contains(&root)))
        .map(str::to_string)
        .collect();
    mounts.sort();
    mounts
}

/// Now, in Unix nanoseconds (the CRI's timestamps).
fn now_nanos() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_nanos() as i64)
}
