//! Boot loop (issue 14; docs/operations.md, "The boot loop"): boots guests
//! one after another in one test host, puts each under load, and names the
//! class of every failure, so the nested test host's own failures can be
//! told from vessel's.
//!
//! Boot `n` of host `h` (counted over all hosts, so variants rotate): with
//! `VESSEL_BOOTLOOP_QEMU=1` (the default) even boots run vessel-vmm and odd
//! ones QEMU microvm with the same kernel, initramfs, vCPUs and vsock load, as
//! the control: a failure class that both VMMs show is the test host's. The
//! vessel-vmm boots cycle 1 and 2 vCPUs and no device, virtio-fs, virtio-net
//! and both; each QEMU boot has the vCPUs and virtio-fs (vhost-user-fs, its
//! own virtiofsd) of the vessel-vmm boot before it, and no NIC. The load, after the agent answers: `VESSEL_BOOTLOOP_MIB` MiB
//! (default 32) each way through the agent's vsock probe; with virtio-fs, as
//! much of a container's stdout in 4 KiB writes through `Stdio.Output` (the
//! CRI exec path, many small chunks); with a NIC, as much over TCP. Then
//! `Shutdown` (vessel-vmm must exit 0) or kill (QEMU).
//!
//! Prints a `bootloop ... start` line before each boot and a `result=`
//! line after it, on stdout and into `$VESSEL_BOOTLOOP_OUT/boots.txt`; a failed boot's
//! console, VMM log and post-mortem go to `$VESSEL_BOOTLOOP_OUT/<boot>/`.
//! Run it through tests/e2e/bootloop.sh, which runs it in fresh test hosts
//! and adds what killed a host.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_vsock::{VsockAddr, VsockStream};
use vessel_agent_api::client::{Channel, HybridVsock};
use vessel_agent_api::proto::agent_client::AgentClient;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::{Interface, SetupSandboxRequest, ShutdownRequest};
use vessel_agent_api::DIAG_VSOCK_PORT;
use vessel_e2e::diag::{try_receive, try_send};
use vessel_e2e::netns::{connect_in_netns, NetnsTap};
use vessel_e2e::pod::{dd_to_stdout, pod_share, share_busybox_rootfs};
use vessel_e2e::qemu::{QemuConfig, QemuVm};
use vessel_e2e::{env_path, vm_config, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{NetDevice, VmExit, VmProcess};

const MEMORY_MIB: u32 = 256;

/// How long one transfer may take: seconds in the nested host, so minutes
/// only catch a stall.
const LOAD_LIMIT: Duration = Duration::from_secs(180);

/// How long a whole boot may take before the watchdog ends the run.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

/// What the loop is doing now, for the watchdog's message.
static PHASE: Mutex<String> = Mutex::new(String::new());

/// Where records go (`$VESSEL_BOOTLOOP_OUT`), set once at start.
static OUT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Notes the phase, also on record: when a test host dies, the last phase
/// line of its boot says in which step.
fn phase(what: String) {
    if let Some(out) = OUT.get() {
        record(out, &format!("bootloop-phase {what}"));
    }
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = what;
}

/// One boot's VMM, vCPUs and devices.
#[derive(Debug, Clone, Copy)]
struct Variant {
    qemu: bool,
    cpus: u32,
    fs: bool,
    net: bool,
}

impl Variant {
    /// The variant of boot `n` (see the module doc).
    fn of(n: usize, with_qemu: bool) -> Self {
        let (qemu, k) = if with_qemu {
            (n % 2 == 1, n / 2)
        } else {
            (false, n)
        };
        // QEMU's boot mirrors the vessel-vmm boot before it, without the NIC.
        let devices = (k / 2) % 4;
        Self {
            qemu,
            cpus: 1 + (k % 2) as u32,
            fs: devices & 1 != 0,
            net: !qemu && devices & 2 != 0,
        }
    }

    fn label(&self) -> String {
        format!(
            "vmm={} cpus={} fs={} net={}",
            if self.qemu { "qemu" } else { "vessel" },
            self.cpus,
            u8::from(self.fs),
            u8::from(self.net)
        )
    }
}

/// Why a boot failed: a class from docs/operations.md's table and the detail.
struct Failure {
    class: &'static str,
    detail: String,
}

fn fail(class: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        class,
        detail: detail.into(),
    }
}

/// A boot that got through: agent-ready and load times.
struct Passed {
    ready: Duration,
    load: Duration,
}

/// Runs a transfer within `limit`; on timeout it is dropped (its
/// connection closed), so nothing of it outlives the boot.
async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Err(_) => Err(format!("no end within {limit:?}")),
        Ok(r) => r,
    }
}

/// The last line of a VMM log, where vessel-vmm says why it exited.
fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// The class of a vessel-vmm that exited on its own (it may be exiting
/// still when the stream it served breaks: given 2 s), from the last line
/// of its log, where it says why.
async fn exited_class(vm: &mut VmProcess) -> Option<Failure> {
    let exit = match vm.try_exit() {
        Ok(Some(exit)) => Some(exit),
        _ => vm.wait_exit(Duration::from_secs(2)).await.ok(),
    };
    let line = last_line(&vm.config().vmm_log_path());
    let class = if line.contains("triple fault") {
        "guest-triple-fault"
    } else if line.contains("guest crashed") {
        "guest-crash"
    } else if exit.is_none() {
        return None;
    } else if exit == Some(VmExit::Code(0)) {
        "guest-reset"
    } else {
        "vmm-exit"
    };
    Some(fail(class, format!("{exit:?}: {line}")))
}

/// The class of a guest whose agent never answered, from its console: no
/// byte at all, the kernel but never the agent, or the agent that never
/// listened.
fn silent_class(console: &str, vmm: &str) -> Failure {
    let class = if console.trim().is_empty() {
        "silent-guest"
    } else if !console.contains("vessel-agent starting") {
        "agent-never-started"
    } else {
        "agent-never-answered"
    };
    let last = console.lines().rev().find(|l| !l.trim().is_empty());
    fail(
        class,
        format!("{vmm}: console ends {:?}", last.unwrap_or("")),
    )
}

async fn vsock_load(vm: &VmProcess, bytes: u64) -> Result<(), String> {
    let probe = HybridVsock::new(vm.config().vsock_path(), DIAG_VSOCK_PORT)
        .with_handshake_timeout(Duration::from_secs(10));
    let s = probe
        .connect_stream()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    bounded(LOAD_LIMIT, try_receive(s, bytes)).await?;
    let s = probe
        .connect_stream()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    bounded(LOAD_LIMIT, try_send(s, bytes)).await?;
    Ok(())
}

/// A container's stdout in 4 KiB writes through `Stdio.Output`: the CRI
/// exec path's many small chunks.
async fn stdout_load(channel: Channel, n: usize, bytes: u64) -> Result<(), String> {
    let id = format!("dd{n}");
    bounded(LOAD_LIMIT, dd_to_stdout(channel, &id, bytes, 4096, |_| ())).await
}

async fn setup(channel: Channel, v: Variant, net: Option<&NetnsTap>) -> Result<(), String> {
    let req = SetupSandboxRequest {
        sandbox_id: "bootloop".into(),
        hostname: "bootloop".into(),
        interfaces: net
            .map(|net| Interface {
                mac: net.guest_mac.clone(),
                addresses: vec![format!("{}/{}", net.guest_ip, net.prefix)],
                ..Interface::default()
            })
            .into_iter()
            .collect(),
        mounts: v.fs.then(pod_share).into_iter().collect(),
        ..SetupSandboxRequest::default()
    };
    let mut client = SandboxClient::new(channel);
    match tokio::time::timeout(Duration::from_secs(60), client.setup(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 60 s".into()),
    }
}

/// One vessel-vmm boot; a failed one's evidence is kept in `out` while its
/// virtiofsd and netns still exist (their loss would show as a second fault).
async fn boot_vessel(n: usize, v: Variant, bytes: u64, out: &Path) -> Result<Passed, Failure> {
    let mut config = vm_config(&format!("loop{n}"), v.cpus, MEMORY_MIB);
    config.extra_cmdline = Some("vessel.diag=1".into());
    let _virtiofsd = if v.fs {
        Some(share_busybox_rootfs(&mut config).await)
    } else {
        None
    };
    let net = v.net.then(|| NetnsTap::create(&format!("loop{n}"), 30));
    if let Some(net) = &net {
        config.nets.push(NetDevice {
            tap: net.tap.clone(),
            netns: Some(net.path()),
            mac: net.guest_mac.clone(),
        });
    }
    match drive_vessel(n, v, bytes, config, net.as_ref()).await {
        Ok(p) => Ok(p),
        Err((why, vm)) => {
            if let Some(vm) = vm {
                keep_evidence(out, vm).await;
            }
            Err(why)
        }
    }
}

/// Boots, loads and shuts down one vessel-vmm guest; on failure, the VM
/// (if it started) for its evidence.
async fn drive_vessel(
    n: usize,
    v: Variant,
    bytes: u64,
    config: vessel_host_runtime::vm::VmConfig,
    net: Option<&NetnsTap>,
) -> Result<Passed, (Failure, Option<VmProcess>)> {
    phase(format!("boot {n}: vessel-vmm boot"));
    let mut vm = VmProcess::spawn(config).map_err(|e| (fail("vmm-spawn", e.to_string()), None))?;
    let channel = match vm.connect_agent(BOOT_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            let why = match exited_class(&mut vm).await {
                Some(why) => why,
                None => {
                    let console =
                        std::fs::read_to_string(vm.config().console_path()).unwrap_or_default();
                    silent_class(&console, &e.to_string())
                }
            };
            return Err((why, Some(vm)));
        }
    };
    let ready = vm.started().elapsed();
    let load_start = Instant::now();
    async fn broke(vm: &mut VmProcess, class: &'static str, why: String) -> Failure {
        exited_class(vm).await.unwrap_or_else(|| fail(class, why))
    }
    if v.fs || v.net {
        phase(format!("boot {n}: Sandbox.Setup"));
        if let Err(why) = setup(channel.clone(), v, net).await {
            return Err((broke(&mut vm, "setup", why).await, Some(vm)));
        }
    }
    phase(format!("boot {n}: vsock load"));
    if let Err(why) = vsock_load(&vm, bytes).await {
        return Err((broke(&mut vm, "vsock-load", why).await, Some(vm)));
    }
    if v.fs {
        phase(format!("boot {n}: container stdout load"));
        let r = stdout_load(channel.clone(), n, bytes).await;
        if let Err(why) = r {
            return Err((broke(&mut vm, "stdout-load", why).await, Some(vm)));
        }
    }
    if let Some(net) = net {
        phase(format!("boot {n}: net load"));
        let addr = format!("{}:{DIAG_VSOCK_PORT}", net.guest_ip);
        let r = match addr.parse() {
            Ok(addr) => {
                let std = connect_in_netns(&net.path(), addr);
                let _ = std.set_nonblocking(true);
                match TcpStream::from_std(std) {
                    Ok(s) => bounded(LOAD_LIMIT, try_receive(s, bytes)).await.map(|_| ()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(format!("{addr}: {e}")),
        };
        if let Err(why) = r {
            return Err((broke(&mut vm, "net-load", why).await, Some(vm)));
        }
    }
    let load = load_start.elapsed();
    phase(format!("boot {n}: vessel-vmm shutdown"));
    let mut agent = AgentClient::new(channel);
    let _ = tokio::time::timeout(Duration::from_secs(20), agent.shutdown(ShutdownRequest {})).await;
    match vm.wait_exit(SHUTDOWN_TIMEOUT).await {
        Ok(VmExit::Code(0)) => {
            let _ = std::fs::remove_dir_all(&vm.config().state_dir);
            Ok(Passed { ready, load })
        }
        Ok(other) => Err((
            fail(
                "shutdown",
                format!("{other:?}: {}", last_line(&vm.config().vmm_log_path())),
            ),
            Some(vm),
        )),
        Err(e) => Err((fail("shutdown", e.to_string()), Some(vm))),
    }
}

async fn boot_qemu(n: usize, v: Variant, bytes: u64, out: &Path) -> Result<Passed, Failure> {
    let console = vessel_e2e::fresh_state_dir(&format!("loop{n}-qemu"));
    std::fs::create_dir_all(&console).map_err(|e| fail("qemu-spawn", e.to_string()))?;
    let console = console.join("console.log");
    phase(format!("boot {n}: qemu boot"));
    let cid = 1000 + n as u32;
    let mut extra_args = vec!["-no-reboot".into()];
    // The same busybox rootfs through a virtiofsd of its own, as bench-io
    // gives QEMU (guest RAM a shared memfd, as vessel-vmm's is).
    let _virtiofsd = if v.fs {
        let dir = console.parent().unwrap_or(Path::new("/")).to_path_buf();
        let shared = dir.join("shared");
        vessel_e2e::busybox::build_rootfs(&shared.join("rootfs"));
        let fsd = vessel_e2e::virtiofsd::start(&shared, &dir.join("virtiofsd")).await;
        extra_args.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on"),
            "-M".into(),
            "memory-backend=mem".into(),
            "-chardev".into(),
            format!("socket,id=fs0,path={}", fsd.socket().display()),
            "-device".into(),
            "vhost-user-fs-device,chardev=fs0,tag=pod".into(),
        ]);
        Some(fsd)
    } else {
        None
    };
    let mut vm = QemuVm::spawn(QemuConfig {
        cid,
        cpus: v.cpus,
        memory_mib: MEMORY_MIB,
        extra_cmdline: "vessel.diag=1".into(),
        // A guest reset (panic=1, or a triple fault) ends QEMU: then it shows.
        extra_args,
        console: console.clone(),
        netns: None,
    });
    let result = async {
        let (channel, ready) = match vm.try_wait_agent(BOOT_TIMEOUT).await {
            Ok(ready) => ready,
            Err(why) => {
                return Err(match qemu_exit(&mut vm).await {
                    Some(status) => fail("guest-reset", format!("qemu {status}")),
                    None => silent_class(&vm.console_text(), &why),
                })
            }
        };
        if v.fs {
            phase(format!("boot {n}: qemu Sandbox.Setup"));
            if let Err(why) = setup(channel.clone(), v, None).await {
                return Err(fail("setup", why));
            }
        }
        let load_start = Instant::now();
        phase(format!("boot {n}: qemu vsock load"));
        let connect = || VsockStream::connect(VsockAddr::new(cid, DIAG_VSOCK_PORT));
        let mut r = match connect().await {
            Ok(s) => bounded(LOAD_LIMIT, try_receive(s, bytes)).await.map(|_| ()),
            Err(e) => Err(format!("connect: {e}")),
        };
        if r.is_ok() {
            r = match connect().await {
                Ok(s) => bounded(LOAD_LIMIT, try_send(s, bytes)).await.map(|_| ()),
                Err(e) => Err(format!("connect: {e}")),
            };
        }
        if let Err(why) = r {
            return Err(match qemu_exit(&mut vm).await {
                Some(status) => fail("guest-reset", format!("qemu {status} during load: {why}")),
                None => fail("vsock-load", why),
            });
        }
        if v.fs {
            phase(format!("boot {n}: qemu container stdout load"));
            if let Err(why) = stdout_load(channel, n, bytes).await {
                return Err(match qemu_exit(&mut vm).await {
                    Some(status) => {
                        fail("guest-reset", format!("qemu {status} during load: {why}"))
                    }
                    None => fail("stdout-load", why),
                });
            }
        }
        Ok(Passed {
            ready,
            load: load_start.elapsed(),
        })
    }
    .await;
    if result.is_err() {
        save(out, "console.log", &console);
    }
    result
}

/// How QEMU exited, given 2 s to do so: a guest that reset (with
/// `-no-reboot`) breaks its streams a moment before QEMU is gone.
async fn qemu_exit(vm: &mut QemuVm) -> Option<std::process::ExitStatus> {
    for _ in 0..20 {
        if let Some(status) = vm.exited() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Copies `from` into `dir/name`, creating `dir`.
fn save(dir: &Path, name: &str, from: &Path) {
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::copy(from, dir.join(name));
}

/// Keeps what explains a failed vessel-vmm boot: its post-mortem (while
/// the VMM lives), console, VMM log; then kills the VM at once (a dead
/// guest left spinning took the test host down in session 5).
async fn keep_evidence(out: &Path, mut vm: VmProcess) {
    // Two post-mortems 3 s apart: whether the vCPUs still move.
    for name in ["postmortem.txt", "postmortem-3s-later.txt"] {
        if let Ok(pm) = vessel_e2e::postmortem::save(&vm) {
            save(out, name, &pm);
        }
        if name == "postmortem.txt" {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let c = vm.config().clone();
    save(out, "console.log", &c.console_path());
    save(out, "vmm.log", &c.vmm_log_path());
    save(out, "vmm.stderr", &c.vmm_stderr_path());
    save(
        out,
        "virtiofsd.log",
        &c.state_dir.join("virtiofsd/virtiofsd.log"),
    );
    let _ = vm.kill().await;
}

/// The test host's L1 shutdown probe (tests/kvm-host/guest-run): the VMCB
/// at every guest shutdown, before the test host's KVM resets the vCPU.
const L1_TRACE: &str = "/sys/kernel/tracing/instances/vessel-l1/trace";

/// Empties the probe's buffer, so that what it holds after a failed boot
/// is that boot's (no probe, as in native mode: nothing to do).
fn clear_l1_trace() {
    let _ = std::fs::write(L1_TRACE, "");
}

/// Keeps the probe's records of a failed boot as `out/l1-shutdown.trace`
/// for tests/e2e/bootloop.sh to match against the L1 signature; read
/// capped, and only if the probe saw a shutdown.
fn save_l1_trace(out: &Path) {
    use std::io::Read;
    let mut text = String::new();
    let read =
        std::fs::File::open(L1_TRACE).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    let records: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    if read.is_ok() && !records.is_empty() {
        let _ = std::fs::create_dir_all(out);
        let _ = std::fs::write(out.join("l1-shutdown.trace"), records.join("\n") + "\n");
    }
}

/// Prints `line` and appends it to `<out>/boots.txt` at once (written
/// through to the machine outside the test host, so a boot that took the
/// host down is still on record).
fn record(out: &Path, line: &str) {
    use std::io::Write;
    println!("{line}");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("boots.txt"));
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{line}");
        let _ = f.sync_data();
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Ends the run if one boot outlives [`BOOT_LIMIT`] (a stall in a blocking
/// call would starve a timer on the runtime too, so a thread).
fn watchdog(
    out_root: PathBuf,
    out: PathBuf,
    label: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if start.elapsed() > BOOT_LIMIT {
                // A guest live-locked in the test host may have shut down
                // since, or not: what the L1 probe saw goes with the stall.
                save_l1_trace(&out);
                let what = PHASE.lock().unwrap_or_else(PoisonError::into_inner).clone();
                record(
                    &out_root,
                    &format!("{label} result=FAIL class=stall detail={what:?}"),
                );
                std::process::exit(4);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

#[tokio::main]
async fn main() {
    let boots = env_num("VESSEL_BOOTLOOP_BOOTS", 20) as usize;
    let host = env_num("VESSEL_BOOTLOOP_HOST", 0) as usize;
    let bytes = env_num("VESSEL_BOOTLOOP_MIB", 32).max(1) << 20;
    let with_qemu = env_num("VESSEL_BOOTLOOP_QEMU", 1) == 1;
    let out_root: PathBuf = env_path("VESSEL_BOOTLOOP_OUT");
    let _ = OUT.set(out_root.clone());
    for i in 0..boots {
        let n = host * boots + i;
        let v = Variant::of(n, with_qemu);
        let label = format!("bootloop host={host} boot={n} in_host={i} {}", v.label());
        let out = out_root.join(format!("boot{n}"));
        record(&out_root, &format!("{label} start"));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watchdog(out_root.clone(), out.clone(), label.clone(), done.clone());
        clear_l1_trace();
        let result = if v.qemu {
            boot_qemu(n, v, bytes, &out).await
        } else {
            boot_vessel(n, v, bytes, &out).await
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        if result.is_err() {
            save_l1_trace(&out);
        }
        let line = match result {
            Ok(p) => format!(
                "{label} result=ok ready_ms={} load_ms={}",
                p.ready.as_millis(),
                p.load.as_millis()
            ),
            Err(f) => format!(
                "{label} result=FAIL class={} detail={:?} evidence={}",
                f.class,
                f.detail,
                out.display()
            ),
        };
        record(&out_root, &line);
    }
}
