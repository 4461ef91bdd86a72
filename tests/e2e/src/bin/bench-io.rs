//! I/O benchmark: vsock and virtio-net throughput of vessel-vmm against QEMU
//! microvm (vhost-vsock; virtio-net on a tap, userspace backend like ours),
//! same guest, same run.
//!
//! One VM of each boots with the agent's throughput probe on
//! (`vessel.diag=1`, see vessel-agent's `diag` module) and a NIC on a tap in a
//! network namespace of its own, configured through `Sandbox.Setup`; then
//! rounds alternate between them so that drift in the (noisy, nested) host
//! hits both alike. Each round moves `VESSEL_BENCH_MIB` MiB (default 64) in
//! 64 KiB writes, host→guest and guest→host, over vsock and over TCP through
//! the tap. Then, in both guests, a busybox container (rootfs on a virtio-fs
//! share; QEMU's guest gets its own virtiofsd) writes
//! `VESSEL_BENCH_STREAM_MIB` MiB (default 256) to its stdout with `dd`,
//! streamed to the host through `Stdio.Output` over vsock (up to three
//! rounds; a guest whose stream breaks or stalls is reported, stopped and
//! not asked again). `VESSEL_BENCH_MEM_MIB` sets the
//! guests' memory (256) and `VESSEL_BENCH_CMDLINE` adds kernel arguments to
//! both. Prints Markdown tables; tests/bench/io.sh runs it through
//! tests/kvm-host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use tokio_vsock::{VsockAddr, VsockStream};
use vessel_agent_api::client::Channel;
use vessel_agent_api::client::HybridVsock;
use vessel_agent_api::proto::sandbox_client::SandboxClient;
use vessel_agent_api::proto::{Interface, SetupSandboxRequest};
use vessel_agent_api::DIAG_VSOCK_PORT;
use vessel_e2e::diag::{mb_per_s, receive, send};
use vessel_e2e::netns::{connect_in_netns, NetnsTap};
use vessel_e2e::pod::{dd_to_stdout, pod_share, share_busybox_rootfs};
use vessel_e2e::qemu::{QemuConfig, QemuVm};
use vessel_e2e::stats::stats;
use vessel_e2e::{vm_config, BOOT_TIMEOUT};
use vessel_host_runtime::vm::{NetDevice, VmProcess};

const MEMORY_MIB_DEFAULT: u32 = 256;

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
    HybridVsock::new(vm.config().vsock_path(), DIAG_VSOCK_PORT)
        .with_handshake_timeout(Duration::from_secs(10))
        .connect_stream()
        .await
        .expect("vessel-vmm: diag port")
}

async fn qemu_stream(vm: &QemuVm) -> VsockStream {
    VsockStream::connect(VsockAddr::new(vm.cid(), DIAG_VSOCK_PORT))
        .await
        .expect("qemu: diag port")
}

/// Gives the guest its address on the tap's subnet (and the share, if any).
async fn setup_network(channel: Channel, net: &NetnsTap, share: bool) {
    let mounts = share.then(pod_share).into_iter().collect();
    let req = SetupSandboxRequest {
        sandbox_id: "bench-io".into(),
        hostname: "bench-io".into(),
        interfaces: vec![Interface {
            mac: net.guest_mac.clone(),
            addresses: vec![format!("{}/{}", net.guest_ip, net.prefix)],
            ..Interface::default()
        }],
        mounts,
        ..SetupSandboxRequest::default()
    };
    SandboxClient::new(channel)
        .setup(req)
        .await
        .expect("Sandbox.Setup of the bench guest");
}

/// A TCP connection to the guest's probe, made from inside the tap's netns.
fn tcp_stream(net: &NetnsTap) -> TcpStream {
    let addr: SocketAddr = format!("{}:{DIAG_VSOCK_PORT}", net.guest_ip)
        .parse()
        .expect("guest address");
    let std = connect_in_netns(&net.path(), addr);
    std.set_nonblocking(true).expect("non-blocking");
    TcpStream::from_std(std).expect("tokio stream")
}

/// Block size of the streaming container's writes. A block copy, so the
/// figure is the agent's stream and not the producer: busybox `head -c`
/// copies byte by byte through stdio and made about 2 MB/s in the nested
/// host on its own, which kept the guests busy for minutes per stream.
const DD_BLOCK: u64 = 64 << 10;

/// Streams `bytes` (a multiple of [`DD_BLOCK`]) of a container's stdout to
/// the host; returns MB/s, or how the stream broke (the guest is then gone
/// or unusable).
async fn stream_from_container(
    vm: Option<&VmProcess>,
    channel: Channel,
    round: usize,
    bytes: u64,
    progress: &AtomicU64,
) -> Result<f64, String> {
    let id = format!("stream{round}");
    let started = std::time::Instant::now();
    // Progress every 32 MiB: a stream that fails or stalls shows how far it got.
    let who = if vm.is_some() { "vessel" } else { "qemu" };
    let count = |chunk: &[u8]| {
        let before = progress.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let seen = before + chunk.len() as u64;
        if seen >> 25 != before >> 25 {
            eprintln!(
                "bench-io: {who} {id}: {} MiB after {:.1} s",
                seen >> 20,
                started.elapsed().as_secs_f64()
            );
        }
    };
    if let Err(e) = dd_to_stdout(channel, &id, bytes, DD_BLOCK, count).await {
        let msg = format!(
            "round {round}: {who} container stdout stream broke after {} MiB: {e}",
            progress.load(Ordering::Relaxed) >> 20
        );
        eprintln!(
            "bench-io: WARNING: {msg}\n{}",
            vm.map(vessel_e2e::console_tail).unwrap_or_default()
        );
        return Err(msg);
    }
    Ok(mb_per_s(bytes, started.elapsed()))
}

/// A transfer that must finish (or, for streams, move) within [`STALL_LIMIT`]: in the nested host
/// one takes seconds, so a limit of minutes only catches a stall, which is
/// then reported (with vessel-vmm's counters) and left out of the medians
/// instead of hanging the benchmark. QEMU's guest→host TCP stalled this way
/// in session 4.
struct Stall {
    what: &'static str,
    who: &'static str,
    round: usize,
    /// The vessel VMM's control API socket, for its counters.
    api: Option<std::path::PathBuf>,
}

/// See [`Stall`].
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// Least progress per [`STALL_LIMIT`] of a stream that is not stalled.
const STALL_MIN_BYTES: u64 = 1 << 20;

impl Stall {
    /// The transfer's result, or what stalled (the transfer is abandoned;
    /// the next one opens its own connection).
    async fn run<T>(self, transfer: impl std::future::Future<Output = T>) -> Result<T, String> {
        tokio::time::timeout(STALL_LIMIT, transfer)
            .await
            .map_err(|_| self.stalled("made no end within"))
    }

    /// Like [`Stall::run`], for a transfer that counts its bytes in
    /// `progress`: only [`STALL_LIMIT`] with less than [`STALL_MIN_BYTES`]
    /// is a stall (a slow stream that moves is measured, not abandoned; a
    /// guest that crawls along, as a nested guest spinning on page faults
    /// does, is not).
    async fn run_progressing<T>(
        self,
        progress: &AtomicU64,
        transfer: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        tokio::pin!(transfer);
        let mut last = progress.load(Ordering::Relaxed);
        loop {
            if let Ok(done) = tokio::time::timeout(STALL_LIMIT, &mut transfer).await {
                return Ok(done);
            }
            let now = progress.load(Ordering::Relaxed);
            if now - last < STALL_MIN_BYTES {
                return Err(self.stalled("moved less than 1 MiB in"));
            }
            last = now;
        }
    }

    /// Reports the stall (with vessel-vmm's counters) and says what it was:
    /// `how` the transfer failed within [`STALL_LIMIT`].
    fn stalled(&self, how: &str) -> String {
        let counters = match self.api.as_deref() {
            Some(api) => format!("; vessel-vmm counters: {}", vmm_counters(api).trim()),
            None => String::new(),
        };
        let msg = format!(
            "round {}: {} {} {how} {STALL_LIMIT:?}{counters}",
            self.round, self.who, self.what
        );
        eprintln!("bench-io: WARNING: {msg}");
        msg
    }
}

/// Sends `bytes` to the guest's probe, then receives as many, each over a
/// fresh connection from `connect` and bounded by a `Stall` named `what`.
async fn both_ways<S, C, F>(
    guard: &impl Fn(&'static str) -> Stall,
    what: [&'static str; 2],
    connect: C,
    bytes: u64,
) -> [Result<Duration, String>; 2]
where
    C: Fn() -> F,
    F: std::future::Future<Output = S>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    [
        guard(what[0])
            .run(async { send(connect().await, bytes).await })
            .await,
        guard(what[1])
            .run(async { receive(connect().await, bytes).await })
            .await,
    ]
}

/// The VMM's `counters` answer (or why there is none).
fn vmm_counters(api: &std::path::Path) -> String {
    vessel_vmm_api::ApiClient::new(api, Duration::from_secs(5))
        .call(vessel_vmm_api::Request::Counters)
        .map(|v| v.to_string())
        .unwrap_or_else(|e| format!("(control API: {e})"))
}

fn row(what: &str, s: &Samples) {
    if s.vessel.is_empty() || s.qemu.is_empty() {
        let one = |v: &[f64]| match v {
            [] => "no sample".to_owned(),
            v => format!("{:.0}", stats(v.to_vec()).median),
        };
        println!(
            "| {what} (MB/s) | {} | {} | – |",
            one(&s.vessel),
            one(&s.qemu)
        );
        return;
    }
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
    let memory_mib = env_num("VESSEL_BENCH_MEM_MIB", u64::from(MEMORY_MIB_DEFAULT)) as u32;

    let vessel_net = NetnsTap::create("bench-vessel", 11);
    let qemu_net = NetnsTap::create("bench-qemu", 12);
    let mut config = vm_config("bench-io-vessel", 1, memory_mib);
    config.api_socket = true;
    // Extra guest kernel arguments for both VMMs' guests, for experiments.
    let cmdline = format!(
        "vessel.diag=1 {}",
        std::env::var("VESSEL_BENCH_CMDLINE").unwrap_or_default()
    );
    config.extra_cmdline = Some(cmdline.clone());
    let (shared, virtiofsd) = share_busybox_rootfs(&mut config).await;
    config.nets.push(NetDevice {
        tap: vessel_net.tap.clone(),
        netns: Some(vessel_net.path()),
        mac: vessel_net.guest_mac.clone(),
    });
    let mut vessel = VmProcess::spawn(config).expect("vessel-vmm starts");
    let vessel_channel = vessel
        .connect_agent(BOOT_TIMEOUT)
        .await
        .expect("vessel agent ready");
    setup_network(vessel_channel.clone(), &vessel_net, true).await;
    let console = vessel_e2e::fresh_state_dir("bench-io-qemu");
    std::fs::create_dir_all(&console).expect("qemu state dir");
    // The same rootfs through a virtiofsd of its own (QEMU's guest RAM must
    // be a shared memfd for it, as ours is).
    let qemu_virtiofsd = vessel_e2e::virtiofsd::start(&shared, &console.join("virtiofsd")).await;
    let mut qemu = QemuVm::spawn(QemuConfig {
        cid: 90,
        cpus: 1,
        memory_mib,
        extra_cmdline: cmdline,
        console: console.join("console.log"),
        netns: Some(qemu_net.name.clone()),
        extra_args: vec![
            "-netdev".into(),
            format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                qemu_net.tap
            ),
            "-device".into(),
            format!("virtio-net-device,netdev=n0,mac={}", qemu_net.guest_mac),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={memory_mib}M,share=on"),
            "-M".into(),
            "memory-backend=mem".into(),
            "-chardev".into(),
            format!("socket,id=fs0,path={}", qemu_virtiofsd.socket().display()),
            "-device".into(),
            "vhost-user-fs-device,chardev=fs0,tag=pod".into(),
        ],
    });
    let (qemu_channel, _) = qemu.wait_agent(BOOT_TIMEOUT).await;
    setup_network(qemu_channel.clone(), &qemu_net, true).await;

    let mut all: [Samples; 4] = Default::default();
    let mut stalls: Vec<String> = Vec::new();
    for round in 0..rounds {
        let mut line = [[f64::NAN; 2]; 4];
        // Alternate which goes first, so neither always runs on a warmer host.
        for first_vessel in [round % 2 == 0, round % 2 != 0] {
            let who = if first_vessel { "vessel" } else { "qemu" };
            let guard = |what: &'static str| Stall {
                what,
                who,
                round,
                api: first_vessel.then(|| vessel.config().api_path()),
            };
            let vsock = ["vsock host→guest", "vsock guest→host"];
            let ([vsock_send, vsock_recv], net) = if first_vessel {
                let r = both_ways(&guard, vsock, || vessel_stream(&vessel), bytes).await;
                (r, &vessel_net)
            } else {
                let r = both_ways(&guard, vsock, || qemu_stream(&qemu), bytes).await;
                (r, &qemu_net)
            };
            let tcp = ["net host→guest", "net guest→host"];
            let [tcp_send, tcp_recv] =
                both_ways(&guard, tcp, || async { tcp_stream(net) }, bytes).await;
            let col = usize::from(!first_vessel);
            for (i, took) in [vsock_send, vsock_recv, tcp_send, tcp_recv]
                .into_iter()
                .enumerate()
            {
                match took {
                    Ok(took) => {
                        let v = mb_per_s(bytes, took);
                        line[i][col] = v;
                        if first_vessel {
                            all[i].vessel.push(v)
                        } else {
                            all[i].qemu.push(v)
                        }
                    }
                    Err(stall) => stalls.push(stall),
                }
            }
        }
        eprintln!(
            "round {round} (MB/s, vessel/qemu): vsock host→guest {:.0}/{:.0}, guest→host {:.0}/{:.0}; net host→guest {:.0}/{:.0}, guest→host {:.0}/{:.0}",
            line[0][0], line[0][1], line[1][0], line[1][1],
            line[2][0], line[2][1], line[3][0], line[3][1],
        );
    }
    println!(
        "| metric ({rounds} rounds of {} MiB, 64 KiB writes) | vessel-vmm median (min–max) | QEMU microvm median (min–max) | ratio vessel/QEMU |",
        bytes >> 20
    );
    println!("| --- | --- | --- | --- |");
    row("vsock host→guest", &all[0]);
    row("vsock guest→host", &all[1]);
    row("virtio-net tap→guest, TCP", &all[2]);
    row("virtio-net guest→tap, TCP", &all[3]);
    if !stalls.is_empty() {
        println!();
        println!("Stalled transfers (left out of the medians):");
        for stall in &stalls {
            println!("- {stall}");
        }
    }
    let stream_bytes = env_num("VESSEL_BENCH_STREAM_MIB", 256) << 20;
    let mut streamed = Samples::default();
    // A guest whose stream broke or stalled is not asked again (it may be
    // dead, or still hold the container); the other goes on.
    let mut failed: Vec<String> = Vec::new();
    let mut gone = [false; 2];
    for round in 0..rounds.min(3) {
        // QEMU first in even rounds: the I/O rounds above began with vessel.
        for first_vessel in [round % 2 != 0, round % 2 == 0] {
            let (who, vm, channel) = if first_vessel {
                ("vessel", Some(&vessel), vessel_channel.clone())
            } else {
                ("qemu", None, qemu_channel.clone())
            };
            if gone[usize::from(first_vessel)] {
                continue;
            }
            let guard = Stall {
                what: "container stdout stream",
                who,
                round,
                api: first_vessel.then(|| vessel.config().api_path()),
            };
            let progress = AtomicU64::new(0);
            let stream = stream_from_container(vm, channel, round, stream_bytes, &progress);
            match guard.run_progressing(&progress, stream).await {
                Ok(Ok(v)) if first_vessel => streamed.vessel.push(v),
                Ok(Ok(v)) => streamed.qemu.push(v),
                Ok(Err(why)) | Err(why) => {
                    failed.push(why);
                    gone[usize::from(first_vessel)] = true;
                    // Stop that guest now: in session 5 a dead QEMU guest
                    // left running (spinning on nested page faults) took
                    // the nested test host down with it minutes later.
                    if first_vessel {
                        let _ = vessel.kill().await;
                    } else {
                        qemu.kill();
                    }
                }
            }
        }
    }
    println!();
    println!(
        "| agent streaming ({} MiB of a container's stdout through `Stdio.Output`) | vessel-vmm median (min–max) | QEMU microvm median (min–max) | ratio vessel/QEMU |",
        stream_bytes >> 20
    );
    println!("| --- | --- | --- | --- |");
    row("`Stdio.Output` over vsock", &streamed);
    println!(
        "\nStreams completed: vessel {}, QEMU {}.",
        streamed.vessel.len(),
        streamed.qemu.len()
    );
    if !failed.is_empty() {
        println!("Broken or stalled streams (that guest was not asked again):");
        for why in &failed {
            println!("- {why}");
        }
    }
    let _ = vessel.kill().await;
    drop(virtiofsd);
    drop(qemu);
    drop(qemu_virtiofsd);
    let _ = std::fs::remove_dir_all(vessel.config().state_dir.clone());
    let _ = std::fs::remove_dir_all(console);
}
