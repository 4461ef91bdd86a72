//! Memory that comes back: a pod whose container allocates and touches
//! 200 MiB and then frees it gives that memory back to the host within a
//! bounded time, through the VMM's virtio-balloon free page reporting; and,
//! as the control, a pod whose guest leaves its balloon driver out keeps it.
//!
//! The pod's host memory is the guest RAM the host holds (the allocated
//! size of the VMM's guest-RAM memfd, which virtiofsd maps too) plus the
//! resident memory of the VMM and of virtiofsd outside that mapping.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::containers_client::ContainersClient;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::{
    CreateContainerRequest, DeleteContainerRequest, SandboxInfo, SetupSandboxRequest,
    ShutdownRequest, SignalContainerRequest, StartContainerRequest, WaitContainerRequest,
    WaitContainerResponse,
};
use vessel_e2e::pod::{boot, pod_share, read, share_busybox_rootfs, spec, SHARED};
use vessel_e2e::rss::{guest_ram_held_bytes, rss_excluding_guest_kib};
use vessel_e2e::{console_tail, running_vmms, vm_config, within, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::virtiofsd::Virtiofsd;
use vessel_host_runtime::vm::{VmExit, VmProcess};
use vessel_vmm_api::{ApiClient, Request};

const MIB: u64 = 1 << 20;
/// Guest memory of the pod.
const GUEST_MIB: u32 = 512;
/// What the container allocates and touches.
const SPIKE_MIB: u64 = 200;
/// How close to the idle figure the pod must come back.
const SLACK: u64 = 16 * MIB;
/// How long the memory may take to come back: Linux reports free 2 MiB
/// blocks every 2 s while there are new ones.
const RETURN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the idle figure may take to settle, and the spike to show, in
/// the slow nested test host.
const PATIENCE: Duration = Duration::from_secs(90);
/// How often the memory is sampled.
const SAMPLE: Duration = Duration::from_millis(250);

/// The host memory of the pod, in bytes, by part.
#[derive(Debug, Clone, Copy)]
struct PodMemory {
    guest_ram: u64,
    vmm: u64,
    virtiofsd: u64,
}

impl PodMemory {
    fn total(&self) -> u64 {
        self.guest_ram + self.vmm + self.virtiofsd
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

struct Pod {
    vm: VmProcess,
    vmm_pid: u32,
    virtiofsd_pid: u32,
    channel: vessel_agent_api::client::Channel,
    shared: std::path::PathBuf,
    sandbox: SandboxInfo,
}

impl Pod {
    fn fail(&self, what: &str, detail: impl std::fmt::Debug) -> ! {
        panic!("{what}: {detail:?}\n{}", console_tail(&self.vm))
    }

    fn memory(&self) -> PodMemory {
        let guest_bytes = u64::from(GUEST_MIB) * MIB;
        let guest_ram = guest_ram_held_bytes(self.vmm_pid)
            .unwrap_or_else(|e| self.fail("guest RAM of the VMM", e));
        let vmm = rss_excluding_guest_kib(self.vmm_pid, guest_bytes)
            .unwrap_or_else(|e| self.fail("VMM smaps", e));
        let virtiofsd = rss_excluding_guest_kib(self.virtiofsd_pid, guest_bytes)
            .unwrap_or_else(|e| self.fail("virtiofsd smaps", e));
        PodMemory {
            guest_ram,
            vmm: vmm * 1024,
            virtiofsd: virtiofsd * 1024,
        }
    }

    /// The VMM's balloon counters (control API `counters`):
    /// `(reported_bytes, refused_ranges)`.
    fn balloon_counters(&self) -> (u64, u64) {
        let api = ApiClient::new(self.vm.config().api_path(), Duration::from_secs(30));
        let counters = api
            .call(Request::Counters)
            .unwrap_or_else(|e| self.fail("control API counters", e));
        let b = &counters["devices"]["balloon"];
        match (b["reported_bytes"].as_u64(), b["refused_ranges"].as_u64()) {
            (Some(reported), Some(refused)) => (reported, refused),
            _ => self.fail("no balloon counters", counters),
        }
    }

    fn containers(&self) -> ContainersClient<vessel_agent_api::client::Channel> {
        ContainersClient::new(self.channel.clone())
    }

    async fn start(&self, id: &str, script: &str) {
        let req = CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec(&self.sandbox, script).to_string(),
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

    /// Waits for container `id` to exit, then deletes it.
    async fn wait_and_delete(&self, id: &str) -> WaitContainerResponse {
        let req = WaitContainerRequest {
            container_id: id.into(),
        };
        let exit = match tokio::time::timeout(PATIENCE, self.containers().wait(req)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(s)) => self.fail(&format!("wait {id}"), s),
            Err(_) => self.fail(&format!("wait {id}"), "no exit in time"),
        };
        let req = DeleteContainerRequest {
            container_id: id.into(),
        };
        if let Err(s) = within("Containers.Delete", self.containers().delete(req)).await {
            self.fail(&format!("delete {id}"), s);
        }
        exit
    }

    /// Samples until the last 5 s of samples stay within 1 MiB; returns
    /// the last one.
    async fn settled(&self, what: &str) -> PodMemory {
        let deadline = Instant::now() + PATIENCE;
        let window = (Duration::from_secs(5).as_millis() / SAMPLE.as_millis()) as usize;
        let mut recent: Vec<u64> = Vec::new();
        loop {
            let m = self.memory();
            recent.push(m.total());
            if recent.len() > window {
                recent.remove(0);
                let (lo, hi) = (recent.iter().min(), recent.iter().max());
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if hi - lo <= MIB {
                        return m;
                    }
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!("{what}: memory did not settle"), m);
            }
            tokio::time::sleep(SAMPLE).await;
        }
    }
}

/// Boots a pod (a VM with a busybox share from a real virtiofsd, the
/// sandbox set up) with `cmdline` added to the guest's command line.
async fn pod(name: &str, cmdline: Option<&str>) -> (Pod, Virtiofsd, PathBuf) {
    let mut config = vm_config(name, 1, GUEST_MIB);
    config.extra_cmdline = cmdline.map(String::from);
    let state_dir = config.state_dir.clone();
    let (shared, virtiofsd) = share_busybox_rootfs(&mut config).await;
    let (vm, vmm_pid, channel) = boot(config).await;
    let virtiofsd_pid = virtiofsd.pid().expect("virtiofsd pid");
    let mut pod = Pod {
        vm,
        vmm_pid,
        virtiofsd_pid,
        channel,
        shared,
        sandbox: SandboxInfo::default(),
    };
    let setup = SetupSandboxRequest {
        sandbox_id: name.into(),
        hostname: name.into(),
        mounts: vec![pod_share()],
        ..SetupSandboxRequest::default()
    };
    match within(
        "Sandbox.Setup",
        SandboxClient::new(pod.channel.clone()).setup(setup),
    )
    .await
    {
        Ok(reply) => pod.sandbox = reply.into_inner().sandbox.unwrap_or_default(),
        Err(s) => pod.fail("Sandbox.Setup", s),
    }
    (pod, virtiofsd, state_dir)
}

impl Pod {
    /// Runs a first container, which lists the devices bound to the
    /// guest's balloon driver (its output is returned), so the idle figure
    /// holds what any container leaves behind (busybox in the page cache,
    /// cgroups); then waits for the memory to settle and returns it.
    async fn idle(&self) -> (String, PodMemory) {
        self.start(
            "driver",
            "ls /sys/bus/virtio/drivers/virtio_balloon/ 2>&1; true",
        )
        .await;
        let exit = self.wait_and_delete("driver").await;
        let out = read(&self.shared.join("driver.out"));
        assert_eq!(
            exit.exit_code,
            0,
            "{}",
            read(&self.shared.join("driver.err"))
        );
        (out, self.settled("idle").await)
    }

    /// The spike: dd reads 200 MiB of zeroes into one buffer (touching every
    /// page), then blocks writing it into a pipe nobody reads, holding it
    /// until the container is killed. Returns the highest sample once the
    /// spike showed on the host, after the container is gone.
    async fn spike(&self, idle: PodMemory) -> PodMemory {
        self.start(
            "spike",
            &format!("dd if=/dev/zero bs={SPIKE_MIB}M count=1 | sleep 600"),
        )
        .await;
        let deadline = Instant::now() + PATIENCE;
        let mut peak = self.memory();
        while peak.total() < idle.total() + (SPIKE_MIB - 40) * MIB {
            if Instant::now() > deadline {
                self.fail(
                    "the container's 200 MiB never showed on the host",
                    (idle, peak),
                );
            }
            tokio::time::sleep(SAMPLE).await;
            let m = self.memory();
            if m.total() > peak.total() {
                peak = m;
            }
        }
        // Let dd finish touching its buffer, keeping the highest sample.
        for _ in 0..8 {
            tokio::time::sleep(SAMPLE).await;
            let m = self.memory();
            if m.total() > peak.total() {
                peak = m;
            }
        }
        // Free it: SIGKILL ends the container (its PID 1, so its pid namespace).
        let req = SignalContainerRequest {
            container_id: "spike".into(),
            signal: 9,
        };
        if let Err(s) = within("Containers.Signal", self.containers().signal(req)).await {
            self.fail("signal", s);
        }
        let exit = self.wait_and_delete("spike").await;
        assert_eq!(exit.signal, 9, "{exit:?}");
        peak
    }

    /// Shutdown: the VMM exits 0 and nothing of the pod is left.
    async fn shut_down(self, mut virtiofsd: Virtiofsd, state_dir: PathBuf) {
        within(
            "Agent.Shutdown",
            AgentClient::new(self.channel.clone()).shutdown(ShutdownRequest {}),
        )
        .await
        .expect("Shutdown");
        let mut vm = self.vm;
        let exit = vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("VMM exits");
        assert_eq!(exit, VmExit::Code(0), "{}", console_tail(&vm));
        assert!(!Path::new(&format!("/proc/{}", self.vmm_pid)).exists());
        assert_eq!(running_vmms(), Vec::<u32>::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut running = || virtiofsd.running().expect("wait for virtiofsd");
        while running() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!running(), "virtiofsd outlived its VM");
        std::fs::remove_dir_all(&state_dir).expect("state dir removable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_container_frees_goes_back_to_the_host() {
    let (pod, virtiofsd, state_dir) = pod("balloon", None).await;
    // The guest bound its balloon driver: the device is on by default.
    let (driver, idle) = pod.idle().await;
    assert!(
        driver.lines().any(|l| l.starts_with("virtio")),
        "no device bound to virtio_balloon: {driver:?}"
    );
    let (reported_idle, _) = pod.balloon_counters();
    let peak = pod.spike(idle).await;
    let freed = Instant::now();
    let target = idle.total() + SLACK;
    let after = loop {
        let m = pod.memory();
        if m.total() <= target {
            break m;
        }
        if freed.elapsed() > RETURN_TIMEOUT {
            pod.fail(
                &format!(
                    "pod memory not back within {} MiB of idle in {RETURN_TIMEOUT:?} \
                     (idle {:.1} MiB, peak {:.1} MiB, now {:.1} MiB)",
                    SLACK / MIB,
                    mib(idle.total()),
                    mib(peak.total()),
                    mib(m.total())
                ),
                (idle, peak, m),
            );
        }
        tokio::time::sleep(SAMPLE).await;
    };
    let returned_in = freed.elapsed();
    // It came back through the balloon: the guest reported at least the
    // spike, and a real Linux guest sends nothing the VMM refuses.
    let (reported, refused) = pod.balloon_counters();
    assert!(
        reported.saturating_sub(reported_idle) >= (SPIKE_MIB - 40) * MIB,
        "the balloon reported {} MiB since idle",
        reported.saturating_sub(reported_idle) / MIB
    );
    assert_eq!(refused, 0, "ranges the VMM refused");
    eprintln!(
        "balloon: pod host memory idle {:.1} MiB (guest RAM {:.1}, VMM {:.1}, virtiofsd {:.1}), \
         peak {:.1} MiB (guest RAM {:.1}), after {:.1} MiB (guest RAM {:.1}) \
         {} ms after the container was gone; {:.1} MiB reported since idle",
        mib(idle.total()),
        mib(idle.guest_ram),
        mib(idle.vmm),
        mib(idle.virtiofsd),
        mib(peak.total()),
        mib(peak.guest_ram),
        mib(after.total()),
        mib(after.guest_ram),
        returned_in.as_millis(),
        mib(reported.saturating_sub(reported_idle))
    );
    pod.shut_down(virtiofsd, state_dir).await;
}

/// The control: the same spike in a guest whose balloon driver is left
/// out (its initcall blacklisted) stays on the host, so what the test
/// above sees is the balloon's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_guest_driver_freed_memory_stays_on_the_host() {
    let no_driver = "initcall_blacklist=virtio_balloon_driver_init";
    let (pod, virtiofsd, state_dir) = pod("no-balloon", Some(no_driver)).await;
    let (driver, idle) = pod.idle().await;
    assert!(
        driver.contains("No such file"),
        "the balloon driver is still there: {driver:?}"
    );
    let peak = pod.spike(idle).await;
    // Five reporting periods: long enough for the memory to come back if
    // anything but the balloon gave it back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = pod.memory();
    assert_eq!(pod.balloon_counters(), (0, 0), "reports without a driver");
    eprintln!(
        "no balloon driver: pod host memory idle {:.1} MiB, peak {:.1} MiB, \
         {:.1} MiB 10 s after the container was gone",
        mib(idle.total()),
        mib(peak.total()),
        mib(after.total())
    );
    assert!(
        after.total() >= idle.total() + (SPIKE_MIB - 40) * MIB,
        "memory came back without the balloon: idle {idle:?}, peak {peak:?}, after {after:?}"
    );
    pod.shut_down(virtiofsd, state_dir).await;
}
