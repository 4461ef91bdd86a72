//! A pod's devices end to end: the guest's NIC on a tap inside a network
//! namespace, and a virtio-fs share from a real virtiofsd. The agent sets the
//! sandbox up (address, route, the share's mount), then a busybox container
//! whose rootfs lives on the share pings the tap's address, reads a file the
//! host wrote and writes one the host reads back. A second test kills
//! virtiofsd under a running VM: the VMM stops it instead of letting the
//! guest hang on the share.

use std::path::Path;

use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, Interface, Route, SetupSandboxRequest,
    ShutdownRequest, StartContainerRequest, WaitContainerRequest,
};
use vessel_e2e::netns::{netns_exists, NetnsTap};
use vessel_e2e::pod::{boot, pod_share, read, share_busybox_rootfs, spec, SHARED};
use vessel_e2e::{console_tail, running_vmms, vm_config, within, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{FsShare, NetDevice, VmExit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_pings_through_its_tap_and_shares_files_with_the_host() {
    let net = NetnsTap::create("vessel-e2e-net", 1);
    let mut config = vm_config("pod-devices", 1, 256);
    let state_dir = config.state_dir.clone();
    let (shared, mut virtiofsd) = share_busybox_rootfs(&mut config).await;
    std::fs::write(shared.join("rootfs/from-host.txt"), "written by the host\n")
        .expect("host file");
    config.nets.push(NetDevice {
        tap: net.tap.clone(),
        netns: Some(net.path()),
        mac: net.guest_mac.clone(),
    });
    let (mut vm, pid, channel) = boot(config).await;

    let setup = SetupSandboxRequest {
        sandbox_id: "pod-devices".into(),
        hostname: "pod-devices".into(),
        interfaces: vec![Interface {
            mac: net.guest_mac.clone(),
            addresses: vec![format!("{}/{}", net.guest_ip, net.prefix)],
            ..Interface::default()
        }],
        routes: vec![Route {
            destination: "default".into(),
            gateway: net.host_ip.clone(),
            ..Route::default()
        }],
        mounts: vec![pod_share()],
        ..SetupSandboxRequest::default()
    };
    let mut sandbox = SandboxClient::new(channel.clone());
    let sandbox = match within("Sandbox.Setup", sandbox.setup(setup)).await {
        Ok(reply) => reply.into_inner().sandbox.unwrap_or_default(),
        Err(status) => panic!("Sandbox.Setup: {status:?}\n{}", console_tail(&vm)),
    };

    let script = format!(
        "ping -c 3 -W 10 {} && cat /from-host.txt && echo written by the guest > /guest.txt && sync \
         && echo oom_score_adj=$(cat /proc/self/oom_score_adj)",
        net.host_ip
    );
    let mut containers = ContainersClient::new(channel.clone());
    let id = "pinger".to_string();
    within(
        "Containers.Create",
        containers.create(CreateContainerRequest {
            container_id: id.clone(),
            oci_spec_json: spec(&sandbox, &script).to_string(),
            rootfs: format!("{SHARED}/rootfs"),
            stdout_path: format!("{SHARED}/pinger.out"),
            stderr_path: format!("{SHARED}/pinger.err"),
            ..CreateContainerRequest::default()
        }),
    )
    .await
    .unwrap_or_else(|s| panic!("Create: {s:?}\n{}", console_tail(&vm)));
    within(
        "Containers.Start",
        containers.start(StartContainerRequest {
            container_id: id.clone(),
        }),
    )
    .await
    .expect("Start");
    let exit = within(
        "Containers.Wait",
        containers.wait(WaitContainerRequest {
            container_id: id.clone(),
        }),
    )
    .await
    .expect("Wait")
    .into_inner();
    let (out, err) = (
        read(&shared.join("pinger.out")),
        read(&shared.join("pinger.err")),
    );
    assert_eq!(
        exit.exit_code,
        0,
        "container failed\nstdout: {out}\nstderr: {err}\n{}",
        console_tail(&vm)
    );
    assert!(
        out.contains("3 packets transmitted, 3 packets received"),
        "{out}"
    );
    assert!(out.contains("written by the host"), "{out}");
    // Its own default, not the -1000 of the agent that started it.
    assert!(out.contains("oom_score_adj=0\n"), "{out}");
    assert_eq!(
        read(&shared.join("rootfs/guest.txt")),
        "written by the guest\n"
    );
    let (rx, tx) = net.tap_packets();
    assert!(rx >= 3 && tx >= 3, "tap counters rx {rx} tx {tx}");
    within(
        "Containers.Delete",
        containers.delete(DeleteContainerRequest { container_id: id }),
    )
    .await
    .expect("Delete");

    within(
        "Agent.Shutdown",
        AgentClient::new(channel).shutdown(ShutdownRequest {}),
    )
    .await
    .expect("Shutdown");
    let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
    assert_eq!(exit, VmExit::Code(0), "{}", console_tail(&vm));

    // Nothing left: no VMM, virtiofsd gone once its frontend is, no netns.
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(running_vmms(), Vec::<u32>::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut running = || virtiofsd.running().expect("wait for virtiofsd");
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !running(),
        "virtiofsd outlived its VM: {}",
        virtiofsd.log_text()
    );
    let ns = net.name.clone();
    drop(net);
    assert!(!netns_exists(&ns), "netns {ns} left behind");
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
}

/// virtiofsd dying under a running pod stops the VM (exit 1, the log names
/// the share) instead of leaving the guest's requests to the share hanging.
#[tokio::test]
async fn virtiofsd_death_stops_the_vm_instead_of_hanging_it() {
    let config = vm_config("fs-death", 1, 256);
    let state_dir = config.state_dir.clone();
    let shared = state_dir.join("shared");
    std::fs::create_dir_all(&shared).expect("shared dir");
    let mut virtiofsd = vessel_e2e::virtiofsd::start(&shared, &state_dir.join("virtiofsd")).await;
    let mut config = config;
    config.shares.push(FsShare {
        tag: "pod".into(),
        socket: virtiofsd.socket().clone(),
    });
    let log = config.vmm_log_path();
    let (mut vm, pid, channel) = boot(config).await;
    let setup = SetupSandboxRequest {
        sandbox_id: "fs-death".into(),
        hostname: "fs-death".into(),
        mounts: vec![pod_share()],
        ..SetupSandboxRequest::default()
    };
    if let Err(status) = within("Sandbox.Setup", SandboxClient::new(channel).setup(setup)).await {
        panic!("Sandbox.Setup: {status:?}\n{}", console_tail(&vm));
    }

    let daemon = virtiofsd.pid().expect("virtiofsd pid");
    // SAFETY: kill(2) on the pid of the virtiofsd this test started.
    assert_eq!(unsafe { libc::kill(daemon as i32, libc::SIGKILL) }, 0);
    let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
    let vmm_log = read(&log);
    assert_eq!(exit, VmExit::Code(1), "{vmm_log}\n{}", console_tail(&vm));
    assert!(
        vmm_log.contains(r#"virtio-fs share "pod": virtiofsd disconnected"#),
        "{vmm_log}"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(running_vmms(), Vec::<u32>::new());
    assert!(!virtiofsd.running().expect("reap virtiofsd"));
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
}
