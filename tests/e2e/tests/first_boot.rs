//! First boot: vessel-vmm boots the guest kernel and initramfs, the agent
//! answers over the hybrid vsock socket, and `Shutdown` ends the VMM cleanly.

use std::time::Instant;

use vessel_agent_api::proto::health_client::HealthClient;
use vessel_agent_api::proto::{agent_client::AgentClient, check_response::ServingStatus};
use vessel_agent_api::proto::{CheckRequest, ShutdownRequest, VersionRequest};
use vessel_e2e::{console_tail, running_vmms, vm_config, within, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmExit, VmProcess};

/// Boots one VM, checks the agent, shuts it down, and checks that nothing is
/// left: no VMM process, no socket, and the state directory removable.
async fn boot_check_shutdown(name: &str, cpus: u32) {
    let config = vm_config(name, cpus, 256);
    let state_dir = config.state_dir.clone();
    let vsock = config.vsock_path();
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("tracked pid");

    let channel = match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => panic!("{name}: agent not reachable: {e}\n{}", console_tail(&vm)),
    };
    let ready_ms = vm.started().elapsed().as_millis();

    let health = within(
        "Health.Check",
        HealthClient::new(channel.clone()).check(CheckRequest {}),
    )
    .await
    .expect("Health.Check answers")
    .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);

    let version = within(
        "Agent.Version",
        AgentClient::new(channel.clone()).version(VersionRequest {}),
    )
    .await
    .expect("Agent.Version answers")
    .into_inner();
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    assert!(version.api_version >= 1);
    assert!(version.pid1, "the agent must run as PID 1 in the guest");
    assert!(
        version.kernel_release.starts_with("6.1"),
        "guest kernel: {}",
        version.kernel_release
    );
    assert_eq!(version.online_cpus, cpus, "vCPUs online in the guest");
    // The agent left the initramfs's root mount, so containers can pivot_root.
    assert!(
        version.root_has_parent,
        "the agent still runs on the initramfs's root mount ({})",
        version.root_fs_type
    );

    let asked = Instant::now();
    within(
        "Agent.Shutdown",
        AgentClient::new(channel).shutdown(ShutdownRequest {}),
    )
    .await
    .expect("Agent.Shutdown answers");
    let exit = match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{name}: {e}\n{}", console_tail(&vm)),
    };
    assert_eq!(exit, VmExit::Code(0), "{name}: {}", console_tail(&vm));
    eprintln!(
        "{name}: {cpus} vCPU(s), agent ready in {ready_ms} ms, VMM exited {} ms after Shutdown",
        asked.elapsed().as_millis()
    );

    // Nothing left behind.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "vessel-vmm pid {pid} still exists"
    );
    assert!(
        !vsock.exists(),
        "the VMM left its vsock socket {}",
        vsock.display()
    );
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
    assert_eq!(
        running_vmms(),
        Vec::<u32>::new(),
        "stray vessel-vmm processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_fresh_vms_in_a_row() {
    for i in 0..5 {
        boot_check_shutdown(&format!("vm{i}"), 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_vcpus_come_online() {
    boot_check_shutdown("smp4", 4).await;
}
