//! CRI benchmark: vessel against containerd 1.6 + runc, in one test host,
//! driven by the same client (`vessel-client`), pulling the same image from
//! the same local registry, each with the same CNI chain on its own bridge.
//!
//! `bench-cri` (inside tests/kvm-host; tests/bench/cri.sh runs it) prints
//! raw records on stdout, progress on stderr:
//! - `VESSEL_BENCH_RUNS` lifecycles of each runtime (RunPodSandbox,
//!   CreateContainer and StartContainer of a `sleep`, StopPodSandbox,
//!   RemovePodSandbox), interleaved, the first of each round alternating;
//!   rounds are numbered from `VESSEL_BENCH_FIRST_ROUND`;
//! - with `VESSEL_BENCH_PODS=N` (N > 0): N running pods of each at once,
//!   their host memory, then `EXEC_CALLS` ExecSync of `true` on one of each;
//! - with `VESSEL_BENCH_STREAMS=N` (N > 0): one pod of each with a `sleep`
//!   and a container serving 64 MiB on port 8080, then N interleaved rounds
//!   of: Exec `true` twice, 64 MiB out through exec, 64 MiB out through
//!   port-forward (`cri_bench::streams`).
//!
//! `VESSEL_BENCH_PAUSE` is the static pause binary for containerd's sandbox
//! image. `bench-cri summarize FILE...` turns raw records into the tables.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1::{ImageSpec, PodSandboxState, PodSandboxStatusRequest, PullImageRequest};
use vessel_client::{call, request, Cri};
use vessel_e2e::containerd::Containerd;
use vessel_e2e::cri::Vesseld;
use vessel_e2e::cri_bench::lifecycle::{exec_true, lifecycle, remove_pod, start_pod, RunningPod};
use vessel_e2e::cri_bench::memory::pod_memory;
use vessel_e2e::cri_bench::record::{ms, Record};
use vessel_e2e::cri_bench::streams::{
    exec_out, exec_true as exec_stream_true, forward_out, start_streamer,
};
use vessel_e2e::cri_bench::tables::tables;
use vessel_e2e::cri_bench::QUICK;
use vessel_e2e::cri_bench::{connect_when_ready, Runtime, LONG};
use vessel_e2e::env_path;
use vessel_e2e::pause::push_pause;
use vessel_e2e::pss::outside_guest_ram;
use vessel_e2e::registry::{push_busybox, scratch, Registry};

/// ExecSync calls per runtime.
const EXEC_CALLS: usize = 20;

/// How long running pods are left before their memory is read (boot-time
/// allocations settle, the guest's free page reporting runs).
const SETTLE: Duration = Duration::from_secs(10);

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The two runtimes' clients.
struct Clients {
    vessel: Cri,
    containerd: Cri,
}

impl Clients {
    fn of(&mut self, rt: Runtime) -> &mut Cri {
        match rt {
            Runtime::Vessel => &mut self.vessel,
            Runtime::Containerd => &mut self.containerd,
        }
    }
}

fn emit(record: Record) {
    println!("{record}");
}

/// Pulls `image` through `cri`.
async fn pull(rt: Runtime, cri: &mut Cri, image: &str) {
    let t = std::time::Instant::now();
    call(
        "PullImage",
        Some(LONG),
        cri.image.pull_image(request(
            PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Some(LONG),
        )),
    )
    .await
    .unwrap_or_else(|e| panic!("{} cannot pull {image}: {e}", rt.name()));
    eprintln!(
        "bench: {} pulled {image} in {} ms",
        rt.name(),
        ms(t.elapsed())
    );
}

/// Rounds `first..first + runs`, each one lifecycle of each runtime.
async fn rounds(clients: &mut Clients, image: &str, logs: &Path, first: usize, runs: usize) {
    for round in first..first + runs {
        // Alternate which goes first, so neither always runs on a warmer host.
        let order = if round % 2 == 0 {
            Runtime::ALL
        } else {
            [Runtime::Containerd, Runtime::Vessel]
        };
        for rt in order {
            let name = format!("{}-{round}", rt.name());
            match lifecycle(clients.of(rt), &name, image, logs).await {
                Ok(steps) => {
                    eprintln!(
                        "bench: round {round} {}: {:?}, whole {} ms",
                        rt.name(),
                        steps.0.map(ms),
                        ms(steps.total())
                    );
                    emit(Record::round(rt, round, &steps));
                }
                Err(e) => {
                    eprintln!("bench: round {round} {} failed: {e}", rt.name());
                    emit(Record::Failed {
                        runtime: rt,
                        round,
                        step: e.step.into(),
                    });
                }
            }
        }
    }
}

/// `pods` running pods of each runtime: their memory, then ExecSync latency.
async fn memory_and_exec(
    clients: &mut Clients,
    daemons: [(Runtime, u32); 2],
    image: &str,
    logs: &Path,
    pods: usize,
) {
    let mut running: Vec<(Runtime, RunningPod)> = Vec::new();
    for i in 0..pods {
        for rt in Runtime::ALL {
            let name = format!("mem-{}-{i}", rt.name());
            match start_pod(clients.of(rt), &name, image, logs).await {
                Ok((pod, _)) => running.push((rt, pod)),
                Err((made, e)) => {
                    eprintln!("bench: pod {name} did not start: {e}");
                    if let Some(id) = made {
                        let _ = remove_pod(clients.of(rt), &id).await;
                    }
                }
            }
        }
    }
    eprintln!("bench: {} pods run; settling for {SETTLE:?}", running.len());
    tokio::time::sleep(SETTLE).await;
    let mut index = std::collections::HashMap::new();
    for (rt, pod) in &running {
        let n = index.entry(*rt).or_insert(0usize);
        match pod_memory(*rt, clients.of(*rt), pod).await {
            Ok(m) => {
                eprintln!("bench: {} pod {n}: {m:?}", rt.name());
                for (part, mem) in m.overhead {
                    emit(Record::Part {
                        runtime: *rt,
                        pod: *n,
                        part: part.into(),
                        mem,
                    });
                }
                if let Some(mem) = m.workload {
                    emit(Record::Part {
                        runtime: *rt,
                        pod: *n,
                        part: "container".into(),
                        mem,
                    });
                }
                if let Some((held_kib, size_mib)) = m.guest_ram {
                    emit(Record::GuestRam {
                        pod: *n,
                        held_kib,
                        size_mib,
                    });
                }
            }
            Err(e) => eprintln!("bench: {} pod {n}: no memory figures: {e}", rt.name()),
        }
        *n += 1;
    }
    for (rt, pid) in daemons {
        match outside_guest_ram(pid) {
            Ok(mem) => emit(Record::Daemon {
                runtime: rt,
                pods: running.iter().filter(|(r, _)| *r == rt).count(),
                mem,
            }),
            Err(e) => eprintln!("bench: {} daemon (pid {pid}): {e}", rt.name()),
        }
    }
    let first = |rt: Runtime| {
        running
            .iter()
            .find(|(r, _)| *r == rt)
            .map(|(_, p)| p.clone())
    };
    for _ in 0..EXEC_CALLS {
        for rt in Runtime::ALL {
            let Some(pod) = first(rt) else { continue };
            match exec_true(clients.of(rt), &pod.container_id).await {
                Ok(took) => emit(Record::Exec {
                    runtime: rt,
                    ms: ms(took),
                }),
                Err(e) => eprintln!("bench: {} exec failed: {e}", rt.name()),
            }
        }
    }
    for (rt, pod) in running {
        if let Err(e) = remove_pod(clients.of(rt), &pod.pod_id).await {
            eprintln!("bench: {} pod {} not removed: {e}", rt.name(), pod.pod_id);
        }
    }
}

/// A pod of `rt` with its `sleep` and its streamer container.
async fn streams_pod(
    clients: &mut Clients,
    rt: Runtime,
    name: &str,
    image: &str,
    logs: &Path,
) -> RunningPod {
    match start_pod(clients.of(rt), name, image, logs).await {
        Ok((pod, _)) => {
            if let Err(e) = start_streamer(clients.of(rt), &pod.pod_id, name, image, logs).await {
                panic!("{}: the streamer container did not start: {e}", rt.name());
            }
            pod
        }
        Err((_, e)) => panic!("{}: pod {name} did not start: {e}", rt.name()),
    }
}

/// `runs` rounds of streaming measurements on one pod of each runtime. A
/// pod that dies (its measurements fail) is reported, removed and replaced
/// by a new one, so that the rounds go on.
async fn streams(clients: &mut Clients, image: &str, logs: &Path, runs: usize) {
    let mut pods = Vec::new();
    let mut replaced = 0;
    for rt in Runtime::ALL {
        let name = format!("streams-{}-0", rt.name());
        pods.push((rt, streams_pod(clients, rt, &name, image, logs).await));
    }
    for round in 0..runs {
        for slot in pods.iter_mut() {
            let (rt, pod) = slot.clone();
            let ready = call(
                "PodSandboxStatus",
                Some(QUICK),
                clients.of(rt).runtime.pod_sandbox_status(request(
                    PodSandboxStatusRequest {
                        pod_sandbox_id: pod.pod_id.clone(),
                        verbose: false,
                    },
                    Some(QUICK),
                )),
            )
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
            if !ready {
                replaced += 1;
                eprintln!(
                    "bench: streams {round}: the {} pod died (see the runtime's log); replacing it ({replaced} so far)",
                    rt.name()
                );
                let _ = remove_pod(clients.of(rt), &pod.pod_id).await;
                let name = format!("streams-{}-{replaced}", rt.name());
                *slot = (rt, streams_pod(clients, rt, &name, image, logs).await);
            }
        }
        let order: Vec<_> = if round % 2 == 0 {
            pods.clone()
        } else {
            pods.iter().rev().cloned().collect()
        };
        for (rt, pod) in order {
            let cri = clients.of(rt);
            // Two round trips a round: the 20 samples in 10 rounds.
            let results = [
                ("exec-true", exec_stream_true(cri, &pod.container_id).await),
                ("exec-true", exec_stream_true(cri, &pod.container_id).await),
                ("exec-64MiB", exec_out(cri, &pod.container_id).await),
                ("forward-64MiB", forward_out(cri, &pod.pod_id).await),
            ];
            for (what, result) in results {
                match result {
                    Ok(took) => {
                        eprintln!(
                            "bench: streams {round} {} {what}: {} ms",
                            rt.name(),
                            ms(took)
                        );
                        emit(Record::Stream {
                            runtime: rt,
                            what: what.into(),
                            ms: ms(took),
                        });
                    }
                    Err(e) => eprintln!("bench: streams {round} {} {what} failed: {e}", rt.name()),
                }
            }
        }
    }
    for (rt, pod) in pods {
        if let Err(e) = remove_pod(clients.of(rt), &pod.pod_id).await {
            eprintln!("bench: {} pod {} not removed: {e}", rt.name(), pod.pod_id);
        }
    }
}

async fn run() {
    let runs = env_number("VESSEL_BENCH_RUNS", 10);
    let first = env_number("VESSEL_BENCH_FIRST_ROUND", 0);
    let pods = env_number("VESSEL_BENCH_PODS", 0);
    let stream_runs = env_number("VESSEL_BENCH_STREAMS", 0);
    let pause_binary = env_path("VESSEL_BENCH_PAUSE");
    let dir = scratch("bench-cri");
    let registry = Registry::start(&dir.join("registry"));
    let image = push_busybox(&registry.host()).await;
    let pause = push_pause(&registry.host(), &pause_binary).await;
    let vesseld = Vesseld::start(&dir.join("vessel"), &registry.host());
    let containerd = Containerd::start(&dir.join("containerd"), &registry.host(), &pause);
    let ready = Duration::from_secs(60);
    let mut clients = Clients {
        vessel: connect_when_ready(&vesseld.socket, ready)
            .await
            .unwrap_or_else(|e| panic!("vesseld's CRI: {e}\n{}", vesseld.log())),
        containerd: connect_when_ready(&containerd.socket, ready)
            .await
            .unwrap_or_else(|e| panic!("containerd's CRI: {e}\n{}", containerd.log())),
    };
    for rt in Runtime::ALL {
        pull(rt, clients.of(rt), &image).await;
    }
    // The kubelet pre-pulls the sandbox image too; RunPodSandbox would otherwise pull it once.
    pull(Runtime::Containerd, &mut clients.containerd, &pause).await;
    let logs = dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("pod log dir");
    rounds(&mut clients, &image, &logs, first, runs).await;
    if pods > 0 {
        let daemons = [
            (Runtime::Vessel, vesseld.pid().expect("vesseld runs")),
            (Runtime::Containerd, containerd.pid()),
        ];
        memory_and_exec(&mut clients, daemons, &image, &logs, pods).await;
    }
    if stream_runs > 0 {
        streams(&mut clients, &image, &logs, stream_runs).await;
    }
    // Where RunPodSandbox's time goes, for whoever reads the log afterwards.
    let log = vesseld.log();
    if let Ok(dest) = std::env::var("VESSEL_BENCH_VESSELD_LOG") {
        if let Err(e) = std::fs::write(&dest, log) {
            eprintln!("bench: cannot save vesseld's log to {dest}: {e}");
        }
    }
}

fn summarize(files: &[String]) {
    let mut records = Vec::new();
    for f in files {
        let file = std::fs::File::open(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        for line in std::io::BufReader::new(file).lines() {
            let line = line.unwrap_or_else(|e| panic!("{f}: {e}"));
            if line.starts_with("raw ") {
                records.push(
                    line.parse::<Record>()
                        .unwrap_or_else(|e| panic!("{f}: {e}")),
                );
            }
        }
    }
    print!("{}", tables(&records));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("summarize") => summarize(&args[1..]),
        None => run().await,
        Some(other) => {
            eprintln!("usage: bench-cri [summarize FILE...] (unknown argument {other:?})");
            std::process::exit(2);
        }
    }
}
