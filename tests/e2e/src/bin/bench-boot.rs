//! Boot benchmark: vessel-vmm against QEMU microvm, same guest, same run.
//!
//! Each round boots one VM with each VMM, interleaved so that drift in the
//! (noisy, nested) host hits both alike. "Agent ready" is the time from
//! spawning the VMM process to the first `Health.Check` that answers SERVING
//! over vsock: the hybrid vsock socket for vessel-vmm, AF_VSOCK through
//! vhost-vsock for QEMU. RSS excludes guest RAM and is read right after the
//! agent is ready, vessel-vmm's boot timeline (its own phases and the guest
//! agent's boot marks) from its control API. In one test host: a warm-up
//! boot of each VMM, then VESSEL_BENCH_RUNS pairs. Prints raw lines
//! (`raw VMM KIND ROUND READY_MS RSS_KIB`, `phase VMM KIND ROUND NAME MS`);
//! tests/bench/boot.sh runs it in several fresh test hosts through
//! tests/kvm-host and makes the tables.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vessel_e2e::qemu::{QemuConfig, QemuVm};
use vessel_e2e::rss::{anon_huge_excluding_guest_kib, rss_excluding_guest_kib};
use vessel_e2e::{vm_config, within, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmExit, VmProcess};
use vessel_vmm_api::{ApiClient, Request};

const MEMORY_MIB: u32 = 256;

/// What the benchmark is doing now, for the watchdog's message.
static PHASE: Mutex<String> = Mutex::new(String::new());

/// How long one boot of either VMM may take, all phases included.
const ROUND_LIMIT: Duration = Duration::from_secs(240);

fn phase(what: String) {
    *PHASE.lock().unwrap_or_else(PoisonError::into_inner) = what;
}

/// Ends the process if one boot takes longer than [`ROUND_LIMIT`]. A thread,
/// not a tokio timeout: a stall inside a blocking call would starve a timer
/// on the runtime too.
fn watchdog(done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) {
            if start.elapsed() > ROUND_LIMIT {
                let what = PHASE.lock().unwrap_or_else(PoisonError::into_inner).clone();
                eprintln!("bench: stalled for {ROUND_LIMIT:?} in: {what}");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Runs one boot under the watchdog. A boot that fails (its guest never
/// became ready, or it did not shut down cleanly) gives `None`: the panic
/// message is printed, the VM is killed when its handle drops, and the
/// benchmark goes on and counts it, because a peer's failed boot is data too.
async fn guarded<F>(fut: F) -> Option<Sample>
where
    F: std::future::Future<Output = Sample> + Send + 'static,
{
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone());
    let sample = tokio::spawn(fut).await.ok();
    done.store(true, Ordering::Relaxed);
    sample
}

/// A round's figure for the log line.
fn shown(s: &Option<Sample>, f: impl Fn(&Sample) -> u128) -> String {
    s.as_ref().map_or("FAILED".into(), |s| f(s).to_string())
}

struct Sample {
    ready: Duration,
    rss_kib: u64,
    /// vessel-vmm's boot timeline (phase, ms from the VMM's start); the
    /// host's first answer is `host_ready` (from the spawn).
    timeline: Vec<(String, f64)>,
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run tests/bench/boot.sh"))
}

/// A vessel-vmm guest set up otherwise, to measure a change on and off in
/// the same hosts: `VESSEL_BENCH_B_INITRAMFS` (another initramfs, e.g.
/// compressed otherwise), `VESSEL_BENCH_B_CMDLINE` (kernel arguments
/// added) and `VESSEL_BENCH_B_CONSOLE=none` (no serial console). With any
/// set, the variant takes QEMU's place as the peer.
#[derive(Debug, Clone, Default)]
struct Variant {
    initramfs: Option<PathBuf>,
    cmdline: Option<String>,
    no_console: bool,
}

impl Variant {
    fn from_env() -> Option<Self> {
        let v = Self {
            initramfs: std::env::var_os("VESSEL_BENCH_B_INITRAMFS").map(PathBuf::from),
            cmdline: std::env::var("VESSEL_BENCH_B_CMDLINE").ok(),
            no_console: match std::env::var("VESSEL_BENCH_B_CONSOLE").as_deref() {
                Ok("none") => true,
                Ok(other) => panic!("VESSEL_BENCH_B_CONSOLE must be none, not {other:?}"),
                Err(_) => false,
            },
        };
        (v.initramfs.is_some() || v.cmdline.is_some() || v.no_console).then_some(v)
    }
}

async fn boot_vessel(kind: &'static str, round: usize, variant: Option<Variant>) -> Sample {
    let who = if variant.is_some() {
        "variant"
    } else {
        "vessel"
    };
    let mut config = vm_config(&format!("bench-{who}-{kind}-{round}"), 1, MEMORY_MIB);
    if let Some(v) = variant {
        config.initramfs = v.initramfs.unwrap_or(config.initramfs);
        config.extra_cmdline = v.cmdline;
        config.serial_console = !v.no_console;
    }
    let state_dir = config.state_dir.clone();
    phase(format!("{kind} {round}: vessel-vmm boot"));
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let channel = vm.connect_agent(BOOT_TIMEOUT).await.expect("agent ready");
    phase(format!("{kind} {round}: vessel-vmm shutdown"));
    let ready = vm.started().elapsed();
    let pid = vm.pid().expect("pid");
    let rss_kib =
        rss_excluding_guest_kib(pid, u64::from(MEMORY_MIB) << 20).expect("smaps of vessel-vmm");
    let huge_kib = anon_huge_excluding_guest_kib(pid, u64::from(MEMORY_MIB) << 20)
        .expect("smaps of vessel-vmm");
    let info = ApiClient::new(vm.config().api_path(), Duration::from_secs(10))
        .call(Request::Info)
        .expect("control API info");
    let mut timeline: Vec<(String, f64)> = info["timeline"]
        .as_object()
        .expect("a timeline in info")
        .iter()
        .filter_map(|(phase, at)| Some((phase.clone(), at.as_f64()?)))
        .collect();
    timeline.push(("host_ready".into(), ms(ready)));
    eprintln!("vessel-vmm: {rss_kib} KiB RSS outside guest RAM, {huge_kib} KiB of it on anonymous huge pages");
    within(
        "Agent.Shutdown",
        vessel_agent_api::proto::agent_client::AgentClient::new(channel)
            .shutdown(vessel_agent_api::proto::ShutdownRequest {}),
    )
    .await
    .expect("Shutdown");
    assert_eq!(
        vm.wait_exit(SHUTDOWN_TIMEOUT).await.expect("exit"),
        VmExit::Code(0)
    );
    let _ = std::fs::remove_dir_all(state_dir);
    phase(format!("{kind} {round}: after vessel-vmm"));
    Sample {
        ready,
        rss_kib,
        timeline,
    }
}

async fn boot_qemu(kind: &'static str, round: usize) -> Sample {
    let console = env_path("VESSEL_SCRATCH").join(format!("qemu-console-{kind}-{round}.log"));
    phase(format!("{kind} {round}: qemu boot"));
    let mut vm = QemuVm::spawn(QemuConfig {
        cid: 100 + round as u32 + if kind == "warmup" { 50 } else { 0 },
        memory_mib: MEMORY_MIB,
        console,
        ..QemuConfig::default()
    });
    let (_channel, ready) = vm.wait_agent(BOOT_TIMEOUT).await;
    let rss_kib =
        rss_excluding_guest_kib(vm.pid(), u64::from(MEMORY_MIB) << 20).expect("smaps of qemu");
    phase(format!("{kind} {round}: qemu kill"));
    drop(vm);
    Sample {
        ready,
        rss_kib,
        timeline: Vec::new(),
    }
}

#[tokio::main]
async fn main() {
    let pairs: usize = std::env::var("VESSEL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .max(1);
    // First a warm-up boot of each VMM: the first boots of a fresh host read
    // everything cold (over 9p) and are reported apart, never paired.
    let variant = Variant::from_env();
    let peer_name = if variant.is_some() { "variant" } else { "qemu" };
    let peer = |kind: &'static str, round: usize| {
        let variant = variant.clone();
        async move {
            match variant {
                Some(v) => guarded(boot_vessel(kind, round, Some(v))).await,
                None => guarded(boot_qemu(kind, round)).await,
            }
        }
    };
    for (kind, round) in std::iter::once(("warmup", 0)).chain((0..pairs).map(|r| ("pair", r))) {
        // Alternate which goes first, so neither always runs on a warmer host.
        let (v, q) = if round % 2 == 0 {
            let v = guarded(boot_vessel(kind, round, None)).await;
            (v, peer(kind, round).await)
        } else {
            let q = peer(kind, round).await;
            (guarded(boot_vessel(kind, round, None)).await, q)
        };
        eprintln!(
            "{kind} {round}: ready vessel-vmm {} ms, {peer_name} {} ms; RSS excluding guest RAM vessel-vmm {} KiB, {peer_name} {} KiB",
            shown(&v, |s| s.ready.as_millis()),
            shown(&q, |s| s.ready.as_millis()),
            shown(&v, |s| s.rss_kib.into()),
            shown(&q, |s| s.rss_kib.into()),
        );
        for (vmm, sample) in [("vessel-vmm", &v), (peer_name, &q)] {
            match sample {
                Some(s) => {
                    println!("raw {vmm} {kind} {round} {:.1} {}", ms(s.ready), s.rss_kib);
                    for (phase, at) in &s.timeline {
                        println!("phase {vmm} {kind} {round} {phase} {at:.1}");
                    }
                }
                None => println!("raw {vmm} {kind} {round} failed"),
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
