//! The VMM's control API on a real guest: `info` shows the configuration,
//! `pause` silences the agent, `resume` brings it back, `counters` counts,
//! and SIGTERM stops the VMM with exit code 4, leaving no socket behind.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use vessel_agent::proto::health_client::HealthClient;
use vessel_agent::proto::CheckRequest;
use vessel_e2e::{console_tail, running_vmms, vm_config, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmExit, VmProcess};

/// How long a health check may take before we call the agent silent.
const SHORT: Duration = Duration::from_secs(3);

/// One request, one response line, over a fresh connection each time (the
/// API serves several clients; this also exercises that).
fn ask(api: &Path, op: &str) -> Value {
    let stream = UnixStream::connect(api).expect("API socket accepts");
    // Pause/resume answer within their own 5 s bound; the nested host is slow.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    (&stream)
        .write_all(format!("{{\"op\":\"{op}\"}}\n").as_bytes())
        .expect("request sent");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("response read");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{op}: bad response {line:?}: {e}"))
}

async fn healthy(channel: &vessel_agent::client::Channel) -> bool {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(CheckRequest {});
    matches!(tokio::time::timeout(SHORT, check).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_counters_and_sigterm() {
    let mut config = vm_config("api", 2, 256);
    config.api_socket = true;
    let (api, vsock, state_dir) = (
        config.api_path(),
        config.vsock_path(),
        config.state_dir.clone(),
    );
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("tracked pid");
    let channel = match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => panic!("agent not reachable: {e}\n{}", console_tail(&vm)),
    };

    let info = ask(&api, "info");
    assert_eq!(info["config"]["cpus"], 2, "{info}");
    assert_eq!(info["config"]["memory_mib"], 256, "{info}");
    let kernel = vm.config().kernel.display().to_string();
    assert_eq!(info["config"]["kernel"], kernel.as_str(), "{info}");
    assert!(info["config"]["cmdline"]
        .as_str()
        .unwrap_or("")
        .contains("virtio_mmio.device="));
    let types: Vec<&str> = info["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(|d| d["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(types.contains(&"virtio-vsock"), "{info}");
    assert_eq!(info["state"], "running");
    let boot_ms = info["boot_time_ms"]
        .as_f64()
        .expect("boot time once running");
    eprintln!(
        "api: info ok, devices {types:?}, boot (process start → first vCPU entry) {boot_ms} ms"
    );

    assert_eq!(ask(&api, "pause")["state"], "paused");
    assert_eq!(ask(&api, "info")["state"], "paused");
    assert!(
        !healthy(&channel).await,
        "a paused guest answered Health.Check"
    );
    let counters = ask(&api, "counters");
    assert_eq!(ask(&api, "resume")["state"], "running");
    // The check sent while paused was cancelled; the agent answers again.
    let mut answered = false;
    for _ in 0..10 {
        if healthy(&channel).await {
            answered = true;
            break;
        }
    }
    assert!(answered, "agent silent after resume\n{}", console_tail(&vm));
    eprintln!("api: pause silenced the agent, resume brought it back");

    let exits = counters["exits"]["total"].as_u64().unwrap_or(0);
    let mmio = counters["exits"]["mmio_write"].as_u64().unwrap_or(0);
    let to_guest = counters["devices"]["vsock"]["host_to_guest_bytes"]
        .as_u64()
        .unwrap_or(0);
    let from_guest = counters["devices"]["vsock"]["guest_to_host_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(exits > 0 && mmio > 0, "{counters}");
    assert!(to_guest > 0 && from_guest > 0, "{counters}");
    eprintln!("api: counters {counters}");

    // SAFETY: plain syscall on the VMM we started and still track.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let exit = match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{e}\n{}", console_tail(&vm)),
    };
    assert_eq!(
        exit,
        VmExit::Code(4),
        "SIGTERM exit code\n{}",
        console_tail(&vm)
    );
    assert!(!api.exists(), "API socket left behind");
    assert!(!vsock.exists(), "vsock socket left behind");
    std::fs::remove_dir_all(&state_dir).expect("state dir removable");
    assert_eq!(
        running_vmms(),
        Vec::<u32>::new(),
        "stray vessel-vmm processes"
    );
    eprintln!("api: SIGTERM → exit code 4, no sockets left");
}
