//! The VMM's control API and stop paths on a real guest: `info` shows the
//! configuration, `pause` silences the agent, `resume` brings it back,
//! `counters` counts; `shutdown` and SIGTERM make the guest shut down in
//! order (ctrl-alt-del → SIGINT to the agent → reset, exit code 0), and a
//! guest that cannot answer (paused) is stopped hard after the grace (exit
//! code 4), leaving no socket behind; `postmortem` and SIGUSR1 describe a
//! running Linux guest; a guest booted without a console writes nothing and
//! still serves.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vessel_agent_api::client::Channel;
use vessel_agent_api::proto::health_client::HealthClient;
use vessel_agent_api::proto::CheckRequest;
use vessel_e2e::{console_tail, running_vmms, vm_config, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmConfig, VmExit, VmProcess};
use vessel_vmm_api::{ApiClient, Request};

/// How long a health check may take before we call the agent silent.
const SHORT: Duration = Duration::from_secs(3);
/// The VMM's shutdown grace in the hard-stop test (shorter than the default
/// 5 s to keep the suite quick).
const GRACE_MS: u64 = 3000;
/// What the agent logs when the kernel's ctrl-alt-del reaches it.
const AGENT_GOT_SIGINT: &str = "SIGINT received";
/// What the agent logs when it routes ctrl-alt-del to itself.
const AGENT_CAD_OFF: &str = "ctrl-alt-del now sends SIGINT to the agent";

fn console(vm: &VmProcess) -> String {
    std::fs::read_to_string(vm.config().console_path()).unwrap_or_default()
}

/// Boots a 1-vCPU VM with the API socket and waits for its agent.
async fn boot(name: &str) -> VmProcess {
    let mut config = vm_config(name, 1, 256);
    config.api_socket = true;
    boot_with(config).await.0
}

/// Boots `config` and waits for its agent; the VM and a channel to the agent.
async fn boot_with(config: VmConfig) -> (VmProcess, Channel) {
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(channel) => (vm, channel),
        Err(e) => panic!("agent not reachable: {e}\n{}", console_tail(&vm)),
    }
}

/// The VM is gone, with its sockets and state directory.
fn assert_cleaned_up(vm: &VmProcess) {
    let config = vm.config();
    assert!(!config.api_path().exists(), "API socket left behind");
    assert!(!config.vsock_path().exists(), "vsock socket left behind");
    std::fs::remove_dir_all(&config.state_dir).expect("state dir removable");
    assert_eq!(
        running_vmms(),
        Vec::<u32>::new(),
        "stray vessel-vmm processes"
    );
}

/// Checks that the guest shut down through the agent: ctrl-alt-del became
/// SIGINT to PID 1, which tore down and rebooted.
fn assert_agent_shut_down(vm: &VmProcess, how: &str) {
    let log = console(vm);
    assert!(
        log.contains(AGENT_CAD_OFF),
        "{how}: the agent did not route ctrl-alt-del\n{}",
        console_tail(vm)
    );
    assert!(
        log.contains(AGENT_GOT_SIGINT) && log.contains("rebooting guest"),
        "{how}: the agent did not shut down through SIGINT\n{}",
        console_tail(vm)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_op_shuts_the_guest_down_in_order() {
    let mut vm = boot("api-shutdown").await;
    let api = vm.config().api_path();
    let asked = Instant::now();
    let answer = ask(&api, Request::Shutdown);
    assert_eq!(answer["state"], "shutting_down", "{answer}");
    let exit = match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{e}\n{}", console_tail(&vm)),
    };
    let took = asked.elapsed();
    assert_eq!(exit, VmExit::Code(0), "shutdown op\n{}", console_tail(&vm));
    assert_agent_shut_down(&vm, "shutdown op");
    assert_cleaned_up(&vm);
    eprintln!(
        "api: shutdown op → agent SIGINT → guest reset, exit code 0 after {} ms",
        took.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_guest_down_in_order() {
    let mut vm = boot("api-sigterm").await;
    let asked = Instant::now();
    // VmProcess::stop: SIGTERM, then the VMM's own grace, then SIGKILL.
    let exit = match vm.stop(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{e}\n{}", console_tail(&vm)),
    };
    let took = asked.elapsed();
    assert_eq!(
        exit,
        Some(VmExit::Code(0)),
        "SIGTERM exit\n{}",
        console_tail(&vm)
    );
    assert_agent_shut_down(&vm, "SIGTERM");
    assert_cleaned_up(&vm);
    eprintln!(
        "api: SIGTERM → agent SIGINT → guest reset, exit code 0 after {} ms",
        took.as_millis()
    );
}

/// One request, one response line, over a fresh connection each time (the
/// API serves several clients; this also exercises that).
fn ask(api: &Path, op: Request) -> Value {
    ApiClient::new(api, Duration::from_secs(30))
        .call(op)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

async fn healthy(channel: &vessel_agent_api::client::Channel) -> bool {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(CheckRequest {});
    matches!(tokio::time::timeout(SHORT, check).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_counters_and_sigterm_hard_stop_when_paused() {
    let mut config = vm_config("api", 2, 256);
    config.api_socket = true;
    config.shutdown_grace_ms = Some(GRACE_MS);
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

    let info = ask(&api, Request::Info);
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

    assert_eq!(ask(&api, Request::Pause)["state"], "paused");
    assert_eq!(ask(&api, Request::Info)["state"], "paused");
    assert!(
        !healthy(&channel).await,
        "a paused guest answered Health.Check"
    );
    let counters = ask(&api, Request::Counters);
    assert_eq!(ask(&api, Request::Resume)["state"], "running");
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

    // A paused guest cannot answer ctrl-alt-del: SIGTERM types it, waits
    // out the grace, and stops the VM hard.
    assert_eq!(ask(&api, Request::Pause)["state"], "paused");
    let asked = Instant::now();
    // SAFETY: plain syscall on the VMM we started and still track.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let exit = match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{e}\n{}", console_tail(&vm)),
    };
    let took = asked.elapsed();
    assert_eq!(
        exit,
        VmExit::Code(4),
        "SIGTERM exit code\n{}",
        console_tail(&vm)
    );
    assert!(
        took >= Duration::from_millis(GRACE_MS),
        "hard stop after {took:?}, before the {GRACE_MS} ms grace"
    );
    assert!(
        !console(&vm).contains(AGENT_GOT_SIGINT),
        "a paused agent saw SIGINT\n{}",
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
    eprintln!(
        "api: SIGTERM on a paused guest → hard stop after {} ms (grace {GRACE_MS} ms), exit code 4, no sockets left",
        took.as_millis()
    );
}

/// Parses a hexadecimal register value of a post-mortem ("0x...").
fn reg(vcpu: &Value, name: &str) -> u64 {
    let s = vcpu["regs"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name}: {vcpu}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmortem_of_a_running_linux_guest_through_the_api_and_sigusr1() {
    let mut config = vm_config("postmortem", 2, 256);
    config.api_socket = true;
    let (api, log_path) = (config.api_path(), config.vmm_log_path());
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let pid = vm.pid().expect("tracked pid");
    if let Err(e) = vm.connect_agent(BOOT_TIMEOUT).await {
        panic!("agent not reachable: {e}\n{}", console_tail(&vm));
    }

    // Guest RAM follows the test host's shmem THP mode (guest-run sets advise).
    let info = ask(&api, Request::Info);
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    let backing = info["config"]["memory_backing"].as_str().unwrap_or("");
    if thp.contains("[advise]") {
        assert!(backing.starts_with("transparent huge pages"), "{info}");
    }
    // The whole boot timeline, the guest agent's marks included, in order.
    let at = |phase: &str| {
        info["timeline"][phase]
            .as_f64()
            .unwrap_or_else(|| panic!("timeline without {phase}: {info}"))
    };
    let order = [
        "first_vcpu_run",
        "guest_init_started",
        "agent_root_ready",
        "agent_setup_done",
        "agent_listening",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) <= at(pair[1]),
            "{} after {}: {info}",
            pair[0],
            pair[1]
        );
    }
    // The guest kernel accepts a connection once the socket listens, which
    // may come a moment before the agent's mark that follows the bind.
    assert!(
        at("agent_setup_done") <= at("first_vsock_connection"),
        "{info}"
    );
    // Reported, not asserted: how much of the RAM the guest touched the
    // host could back with huge pages depends on its free memory.
    let huge_kib = guest_ram_pmd_kib(pid);

    let started = Instant::now();
    let pm = ask(&api, Request::Postmortem);
    let took = started.elapsed();
    let vcpus = pm["vcpus"].as_array().expect("vcpus");
    assert_eq!(vcpus.len(), 2, "{pm}");
    for v in vcpus {
        assert_eq!(v["answered"], true, "{pm}");
        // A running Linux guest: paging on, long mode active.
        assert_ne!(reg(v, "cr0") & 0x8000_0000, 0, "CR0.PG: {v}");
        assert_ne!(reg(v, "efer") & 0x400, 0, "EFER.LMA: {v}");
        assert!(v["mp_state"].is_string(), "{v}");
        assert!(v["exits"]["total"].as_u64().unwrap_or(0) > 0, "{v}");
    }
    let devices = pm["devices"].as_array().expect("devices");
    let vsock = devices
        .iter()
        .find(|d| d["type"] == "virtio-vsock")
        .unwrap_or_else(|| panic!("no vsock device: {pm}"));
    assert_eq!(vsock["activated"], true, "{vsock}");
    let bits: Vec<&str> = vsock["status_bits"]
        .as_array()
        .map(|b| b.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(bits.contains(&"driver_ok"), "{vsock}");
    assert!(vsock["queues"][0]["avail_idx"].is_number(), "{vsock}");
    assert!(
        pm["console"]["bytes_total"].as_u64().unwrap_or(0) > 0,
        "{pm}"
    );
    assert!(
        pm["console"]["tail"]
            .as_str()
            .unwrap_or("")
            .contains("vessel"),
        "{pm}"
    );

    // The e2e helper's saved copy, as a failing test would leave it.
    let saved = vessel_e2e::postmortem::save(&vm).expect("post-mortem saved");
    let text = std::fs::read_to_string(&saved).expect("saved post-mortem");
    assert!(text.contains("\"vcpus\""), "{text}");
    assert!(text.contains("kernel log"), "{text}");
    // In the nested test host, two seconds of KVM's view of the guest: a
    // running guest exits at least for its timer.
    let trace = text
        .split(vessel_e2e::postmortem::TRACE_HEADER)
        .nth(1)
        .unwrap_or_else(|| panic!("no KVM trace section: {text}"));
    if std::env::var("VESSEL_KVM_HOST_ACTIVE_MODE").as_deref() == Ok("nested") {
        assert!(trace.contains("kvm_exit"), "{trace}");
        assert!(trace.contains("kvm_entry"), "{trace}");
    }
    std::fs::remove_file(&saved).expect("remove the saved copy");

    // SIGUSR1: the same dump into the VMM's log, and the guest carries on.
    // SAFETY: plain syscall on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("post-mortem (SIGUSR1): ")
    {
        assert!(
            Instant::now() < deadline,
            "no post-mortem in {}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ask(&api, Request::Info)["state"], "running");

    assert_eq!(ask(&api, Request::Shutdown)["state"], "shutting_down");
    let exit = match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(exit) => exit,
        Err(e) => panic!("{e}\n{}", console_tail(&vm)),
    };
    assert_eq!(exit, VmExit::Code(0), "{}", console_tail(&vm));
    assert_cleaned_up(&vm);
    eprintln!(
        "api: post-mortem of a 2-vCPU Linux guest answered in {} ms ({} bytes); memory: {backing}, \
         {huge_kib} KiB of it mapped with 2 MiB pages; timeline (ms): {}",
        took.as_millis(),
        pm.to_string().len(),
        info["timeline"]
    );
}

/// KiB of the guest RAM memfd that process `pid` maps with 2 MiB pages
/// (`ShmemPmdMapped` in its smaps; hugetlb pages are not counted there);
/// 0 if unreadable.
fn guest_ram_pmd_kib(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut ours = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            ours = line.contains("vessel-guest-ram");
        } else if ours {
            if let Some(v) = line.strip_prefix("ShmemPmdMapped:") {
                kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    kib
}

/// `--console none` (host-runtime's `serial_console: false`): the guest gets
/// no serial port, writes not one byte, and its agent, which then starts
/// without descriptors 0-2, still serves and shuts down in order even when
/// it logs every debug line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_without_a_console_writes_nothing_and_serves() {
    let mut config = vm_config("api-no-console", 1, 256);
    config.api_socket = true;
    config.serial_console = false;
    config.extra_cmdline = Some("VESSEL_AGENT_LOG=debug".into());
    let api = config.api_path();
    let (mut vm, channel) = boot_with(config).await;
    let cmdline = ask(&api, Request::Info)["config"]["cmdline"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(cmdline.contains("8250.nr_uarts=0"), "{cmdline}");
    assert!(!cmdline.contains("console="), "{cmdline}");
    // Several calls, each logged at debug by the agent: a log line that
    // reached one of these connections would break its HTTP/2 stream.
    let mut agent = vessel_agent_api::proto::agent_client::AgentClient::new(channel.clone());
    for _ in 0..3 {
        assert!(healthy(&channel).await, "health check");
        let version = agent
            .version(vessel_agent_api::proto::VersionRequest {})
            .await
            .expect("Agent.Version")
            .into_inner();
        assert!(version.pid1, "{version:?}");
    }
    let pm = ask(&api, Request::Postmortem);
    assert_eq!(pm["console"]["bytes_total"], 0, "{}", pm["console"]);
    assert!(
        !vm.config().console_path().exists(),
        "a console file without a console"
    );
    assert_eq!(ask(&api, Request::Shutdown)["state"], "shutting_down");
    let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
    assert_eq!(exit, VmExit::Code(0), "the guest did not reset in order");
    assert_cleaned_up(&vm);
}
