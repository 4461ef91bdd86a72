//! I/O benchmark: vsock throughput of vessel-vmm against QEMU microvm
//! (vhost-vsock), same guest, same run.
//!
//! One VM of each boots with the agent's throughput probe on
//! (`vessel.diag=1`, see `vessel_agent::diag`); then rounds alternate between
//! them so that drift in the (noisy, nested) host hits both alike. Each round
//! moves `VESSEL_BENCH_MIB` MiB (default 64) in 64 KiB writes, host→guest and
//! guest→host. Prints a Markdown table; tests/bench/io.sh runs it through
//! tests/kvm-host.

use std::time::Duration;

use tokio_vsock::{VsockAddr, VsockStream};
use vessel_agent::client::HybridVsock;
use vessel_agent::diag::DIAG_PORT;
use vessel_e2e::diag::{mb_per_s, receive, send};
use vessel_e2e::qemu::{QemuConfig, QemuVm};
use vessel_e2e::stats::stats;
use vessel_e2e::{vm_config, BOOT_TIMEOUT};
use vessel_host_runtime::vm::VmProcess;

const MEMORY_MIB: u32 = 256;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// One direction's samples in MB/s, per VMM.
#[derive(Default)]
struct Samples {
    vessel: Vec<f64>,
    qemu: Vec<f64>,
}

async fn vessel_stream(vm: &VmProcess) -> tokio::net::UnixStream {
    HybridVsock::new(vm.config().vsock_path(), DIAG_PORT)
        .with_handshake_timeout(Duration::from_secs(10))
        .connect_stream()
        .await
        .expect("vessel-vmm: diag port")
}

async fn qemu_stream(vm: &QemuVm) -> VsockStream {
    VsockStream::connect(VsockAddr::new(vm.cid(), DIAG_PORT))
        .await
        .expect("qemu: diag port")
}

fn row(what: &str, s: &Samples) {
    let (v, q) = (stats(s.vessel.clone()), stats(s.qemu.clone()));
    println!(
        "| {what} (MB/s) | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:.2} |",
        v.median,
        v.min,
        v.max,
        q.median,
        q.min,
        q.max,
        v.median / q.median
    );
}

#[tokio::main]
async fn main() {
    let rounds = env_num("VESSEL_BENCH_RUNS", 5) as usize;
    let bytes = env_num("VESSEL_BENCH_MIB", 64) << 20;

    let mut config = vm_config("bench-io-vessel", 1, MEMORY_MIB);
    config.extra_cmdline = Some("vessel.diag=1".into());
    let mut vessel = VmProcess::spawn(config).expect("vessel-vmm starts");
    vessel
        .connect_agent(BOOT_TIMEOUT)
        .await
        .expect("vessel agent ready");
    let console = vessel_e2e::fresh_state_dir("bench-io-qemu");
    std::fs::create_dir_all(&console).expect("qemu state dir");
    let mut qemu = QemuVm::spawn(QemuConfig {
        cid: 90,
        memory_mib: MEMORY_MIB,
        extra_cmdline: "vessel.diag=1".into(),
        console: console.join("console.log"),
        ..QemuConfig::default()
    });
    qemu.wait_agent(BOOT_TIMEOUT).await;

    let (mut to_guest, mut from_guest) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        // Alternate which goes first, so neither always runs on a warmer host.
        for first_vessel in [round % 2 == 0, round % 2 != 0] {
            if first_vessel {
                to_guest.vessel.push(mb_per_s(
                    bytes,
                    send(vessel_stream(&vessel).await, bytes).await,
                ));
                from_guest.vessel.push(mb_per_s(
                    bytes,
                    receive(vessel_stream(&vessel).await, bytes).await,
                ));
            } else {
                to_guest
                    .qemu
                    .push(mb_per_s(bytes, send(qemu_stream(&qemu).await, bytes).await));
                from_guest.qemu.push(mb_per_s(
                    bytes,
                    receive(qemu_stream(&qemu).await, bytes).await,
                ));
            }
        }
        eprintln!(
            "round {round}: host→guest vessel {:.0} MB/s, qemu {:.0} MB/s; guest→host vessel {:.0} MB/s, qemu {:.0} MB/s",
            to_guest.vessel[round], to_guest.qemu[round], from_guest.vessel[round], from_guest.qemu[round]
        );
    }
    println!(
        "| metric ({rounds} rounds of {} MiB, 64 KiB writes) | vessel-vmm median (min–max) | QEMU microvm median (min–max) | ratio vessel/QEMU |",
        bytes >> 20
    );
    println!("| --- | --- | --- | --- |");
    row("vsock host→guest", &to_guest);
    row("vsock guest→host", &from_guest);
    let _ = vessel.kill();
    drop(qemu);
    let _ = std::fs::remove_dir_all(vessel.config().state_dir.clone());
    let _ = std::fs::remove_dir_all(console);
}
