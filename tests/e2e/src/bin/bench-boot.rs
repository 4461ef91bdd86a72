//! Boot benchmark: vessel-vmm against QEMU microvm, same guest, same run.
//!
//! Each round boots one VM with each VMM, interleaved so that drift in the
//! (noisy, nested) host hits both alike. "Agent ready" is the time from
//! spawning the VMM process to the first `Health.Check` that answers SERVING
//! over vsock: the hybrid vsock socket for vessel-vmm, AF_VSOCK through
//! vhost-vsock for QEMU. RSS excludes guest RAM and is read right after the
//! agent is ready. Prints a Markdown table; run it through tests/kvm-host
//! (tests/bench/boot.sh does that).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vessel_e2e::qemu::{QemuConfig, QemuVm};
use vessel_e2e::rss::rss_excluding_guest_kib;
use vessel_e2e::stats::stats;
use vessel_e2e::{vm_config, within, BOOT_TIMEOUT, SHUTDOWN_TIMEOUT};
use vessel_host_runtime::vm::{VmExit, VmProcess};

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
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name} is not set: run tests/bench/boot.sh"))
}

async fn boot_vessel(round: usize) -> Sample {
    let config = vm_config(&format!("bench-vessel-{round}"), 1, MEMORY_MIB);
    let state_dir = config.state_dir.clone();
    phase(format!("round {round}: vessel-vmm boot"));
    let mut vm = VmProcess::spawn(config).expect("vessel-vmm starts");
    let channel = vm.connect_agent(BOOT_TIMEOUT).await.expect("agent ready");
    phase(format!("round {round}: vessel-vmm shutdown"));
    let ready = vm.started().elapsed();
    let rss_kib = rss_excluding_guest_kib(vm.pid().expect("pid"), u64::from(MEMORY_MIB) << 20)
        .expect("smaps of vessel-vmm");
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
    phase(format!("round {round}: after vessel-vmm"));
    Sample { ready, rss_kib }
}

async fn boot_qemu(round: usize) -> Sample {
    let console = env_path("VESSEL_SCRATCH").join(format!("qemu-console-{round}.log"));
    phase(format!("round {round}: qemu boot"));
    let mut vm = QemuVm::spawn(QemuConfig {
        cid: 100 + round as u32,
        memory_mib: MEMORY_MIB,
        console,
        ..QemuConfig::default()
    });
    let (_channel, ready) = vm.wait_agent(BOOT_TIMEOUT).await;
    let rss_kib =
        rss_excluding_guest_kib(vm.pid(), u64::from(MEMORY_MIB) << 20).expect("smaps of qemu");
    phase(format!("round {round}: qemu kill"));
    drop(vm);
    Sample { ready, rss_kib }
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("VESSEL_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .max(1);
    // VESSEL_BENCH_RAW=1: one `raw VMM READY_MS RSS_KIB` (or `raw VMM
    // failed`) line per boot on stdout and no table, for tests/bench/boot.sh
    // to merge rounds run in several test hosts.
    let raw = std::env::var_os("VESSEL_BENCH_RAW").is_some_and(|v| v == "1");
    let (mut vessel, mut qemu) = (Vec::new(), Vec::new());
    let (mut vessel_failed, mut qemu_failed) = (0, 0);
    for round in 0..runs {
        // Alternate which goes first, so neither always runs on a warmer host.
        let (v, q) = if round % 2 == 0 {
            let v = guarded(boot_vessel(round)).await;
            (v, guarded(boot_qemu(round)).await)
        } else {
            let q = guarded(boot_qemu(round)).await;
            (guarded(boot_vessel(round)).await, q)
        };
        eprintln!(
            "round {round}: ready vessel-vmm {} ms, qemu {} ms; RSS excluding guest RAM vessel-vmm {} KiB, qemu {} KiB",
            shown(&v, |s| s.ready.as_millis()),
            shown(&q, |s| s.ready.as_millis()),
            shown(&v, |s| s.rss_kib.into()),
            shown(&q, |s| s.rss_kib.into()),
        );
        if raw {
            for (vmm, sample) in [("vessel-vmm", &v), ("qemu", &q)] {
                match sample {
                    Some(s) => println!("raw {vmm} {} {}", s.ready.as_millis(), s.rss_kib),
                    None => println!("raw {vmm} failed"),
                }
            }
        }
        match v {
            Some(v) => vessel.push(v),
            None => vessel_failed += 1,
        }
        match q {
            Some(q) => qemu.push(q),
            None => qemu_failed += 1,
        }
    }
    if raw {
        return;
    }
    if vessel.is_empty() || qemu.is_empty() {
        eprintln!("bench: no successful boot of one of the VMMs; no table");
        std::process::exit(1);
    }
    println!(
        "failed boots (left out of the table): vessel-vmm {vessel_failed} of {runs}, QEMU {qemu_failed} of {runs}"
    );
    let ms = |s: &[Sample]| stats(s.iter().map(|x| x.ready.as_secs_f64() * 1e3).collect());
    let kib = |s: &[Sample]| stats(s.iter().map(|x| x.rss_kib as f64).collect());
    let (vb, qb, vr, qr) = (ms(&vessel), ms(&qemu), kib(&vessel), kib(&qemu));
    println!("| metric ({runs} runs, 1 vCPU, {MEMORY_MIB} MiB) | vessel-vmm median (min–max) | QEMU microvm median (min–max) | ratio vessel/QEMU |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| boot to agent-ready (ms) | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} |",
        vb.median,
        vb.min,
        vb.max,
        qb.median,
        qb.min,
        qb.max,
        vb.median / qb.median
    );
    println!(
        "| VMM RSS excluding guest RAM (KiB) | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} |",
        vr.median,
        vr.min,
        vr.max,
        qr.median,
        qr.min,
        qr.max,
        vr.median / qr.median
    );
}
