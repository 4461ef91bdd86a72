//! The VMM's least privilege with a real guest: jailed as an unprivileged
//! pod uid/gid, with the default seccomp filters (and its RAM on 2 MiB
//! hugepages, which the test reserves in the test host), the guest boots
//! and its agent answers, while from outside the VMM shows that uid and
//! gid, no supplementary groups, no capabilities, no_new_privs, a filter
//! on every thread, its own mount and IPC namespaces with a near-empty
//! root, and bounded open files and file sizes.

use std::collections::BTreeSet;
use std::path::Path;

use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::{ShutdownRequest, VersionRequest};
use vessel_e2e::{console_tail, running_vmms, vm_config, within, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{JailConfig, VmExit, VmProcess};

/// The pod user the VMM runs as (no passwd entry needed).
const POD_ID: u32 = 4_100_007;

/// The value of `field` in /proc/<pid>/status (or a task's).
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in status:\n{status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_vmm_with_seccomp_boots_a_guest_without_privileges() {
    let mut config = vm_config("jailed", 2, 256);
    config.jail = Some(JailConfig {
        uid: Some(POD_ID),
        gid: Some(POD_ID),
        ..JailConfig::default()
    });
    // What vesseld does for a pod: its state dir belongs to the pod's user,
    // who removes the VMM's sockets there on exit.
    std::fs::create_dir_all(&config.state_dir).expect("state dir");
    std::os::unix::fs::chown(&config.state_dir, Some(POD_ID), Some(POD_ID)).expect("chown");
    // 256 MiB of guest RAM on hugepages: reserve them (the test host is ours).
    let nr: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .expect("hugepages sysctl")
        .trim()
        .parse()
        .expect("nr_hugepages");
    std::fs::write("/proc/sys/vm/nr_hugepages", (nr + 128).to_string()).expect("reserve hugepages");
    config.hugepages = true;
    let state_dir = config.state_dir.clone();
    let vsock = config.vsock_path();
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("pid");
    let channel = match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => panic!("jailed guest not reachable: {e}\n{}", console_tail(&vm)),
    };
    let version = within(
        "Agent.Version",
        AgentClient::new(channel.clone()).version(VersionRequest {}),
    )
    .await
    .expect("Version")
    .into_inner();
    assert_eq!(version.online_cpus, 2);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    assert!(
        maps.lines()
            .any(|l| l.starts_with("KernelPageSize:") && l.ends_with(" 2048 kB")),
        "guest RAM is not on 2 MiB pages"
    );

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let ids = format!("{POD_ID}\t{POD_ID}\t{POD_ID}\t{POD_ID}");
    assert_eq!(status_field(&status, "Uid"), ids, "uid");
    assert_eq!(status_field(&status, "Gid"), ids, "gid");
    assert_eq!(status_field(&status, "Groups"), "", "supplementary groups");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, caps), "0000000000000000", "{caps}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    // Every thread (vCPUs, device workers, API, signals, main) is filtered.
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let task = task.expect("task").path();
        let st = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        if st.is_empty() {
            continue; // exited meanwhile
        }
        let name = status_field(&st, "Name");
        assert_eq!(
            status_field(&st, "Seccomp"),
            "2",
            "thread {name} is not filtered"
        );
        threads += 1;
    }
    assert!(threads >= 4, "only {threads} threads seen");

    let ns = |p: &str| std::fs::read_link(p).expect("ns link");
    for kind in ["mnt", "ipc"] {
        assert_ne!(
            ns(&format!("/proc/{pid}/ns/{kind}")),
            ns(&format!("/proc/self/ns/{kind}")),
            "the VMM must have its own {kind} namespace"
        );
    }
    // Its root holds only the top directories of what it kept (kernel,
    // initramfs and the socket directory), nothing like /etc or /dev.
    let root: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .expect("VMM root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for absent in ["etc", "dev", "proc", "usr", "bin"] {
        assert!(
            !root.contains(absent),
            "/{absent} is visible in the jail: {root:?}"
        );
    }
    assert!(root.len() <= 4, "unexpected jail root: {root:?}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no NOFILE limit:\n{limits}"));
    assert!(nofile <= 4096, "NOFILE soft limit {nofile} is not bounded");
    let fsize: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no FSIZE limit:\n{limits}"));
    assert!(fsize <= 64 << 20, "FSIZE soft limit {fsize} is not bounded");

    within(
        "Agent.Shutdown",
        AgentClient::new(channel).shutdown(ShutdownRequest {}),
    )
    .await
    .expect("Shutdown");
    let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
    assert_eq!(exit, VmExit::Code(0), "{}", console_tail(&vm));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!vsock.exists(), "the jailed VMM left its vsock socket");
    // Its own log went to the capped file, written after the id switch.
    let log = std::fs::read_to_string(state_dir.join("vmm.log")).unwrap_or_default();
    assert!(log.len() <= 4 << 20, "vmm.log is over its cap");
    assert_eq!(running_vmms(), Vec::<u32>::new());
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
    let _ = std::fs::write("/proc/sys/vm/nr_hugepages", nr.to_string());
}
